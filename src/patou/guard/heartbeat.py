"""A dead camera is noticed: a site with no photo or frame for `after` seconds raises one alert,
and one recovery when it sends again.

A site is watched from its first photo (a watched folder's cameras) or from the start (a stream).
Times are this computer's clock (`now`, injectable for tests), not the images' clocks: a camera
whose clock is wrong is still alive. What was alerted is kept in the journal's state with the
alert itself, so a restart neither alerts twice nor forgets a recovery; the silence is counted
at most from the guard's start (while it was down, nobody could tell).
"""
from __future__ import annotations

import time
from typing import Callable

KEY = "heartbeat:"  # journal state key: heartbeat:<site> -> {"since": last seen, "alerted": when}


class Heartbeat:
    def __init__(self, after: float, last_seen: dict[str, float] | None = None, state: dict | None = None,
                 now: Callable[[], float] = time.time):
        self.after, self.now = after, now
        start = now()
        self.last: dict[str, float] = {site: max(t, start) for site, t in (last_seen or {}).items()}
        self.silent: dict[str, dict] = {k[len(KEY):]: v for k, v in (state or {}).items()
                                        if k.startswith(KEY) and isinstance(v, dict)}
        for site in self.silent:
            self.last.setdefault(site, start)

    def watch(self, site: str) -> None:
        """Watch a site that may never have sent anything (a stream), from now."""
        self.last.setdefault(site, self.now())

    def seen(self, site: str, t: float | None = None) -> dict | None:
        """The site sent a photo or frame at `t` (default now): its recovery, if it was silent."""
        t = self.now() if t is None else t
        if t > self.last.get(site, 0.0):
            self.last[site] = t
        gone = self.silent.pop(site, None)
        if gone is None:
            return None
        return {"site": site, "outcome": "camera-back", "last_seen": gone.get("since"), "back_at": t,
                "silent_h": round((t - (gone.get("since") or t)) / 3600, 3)}

    def due(self) -> list[dict]:
        """Sites that have just passed `after` seconds of silence (each once until it is back)."""
        now = self.now()
        out = []
        for site, last in self.last.items():
            if site not in self.silent and now - last >= self.after:
                self.silent[site] = {"since": last, "alerted": now}
                out.append({"site": site, "outcome": "camera-silent", "last_seen": last,
                            "silent_h": round((now - last) / 3600, 3)})
        return out

    def next_check(self) -> float | None:
        """Seconds until a site may pass the limit (None: nothing to watch)."""
        waiting = [last + self.after for site, last in self.last.items() if site not in self.silent]
        return max(0.0, min(waiting) - self.now()) if waiting else None
