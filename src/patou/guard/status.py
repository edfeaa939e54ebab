"""`patou guard --status`: what the guard's log says (readable while the guard runs: WAL).

The counts, the latency, the cameras (streams, silent sites), the last events and the last
firings and notifications with their photo and each action's outcome, the last failures.
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from .journal import Journal


def _when(t: float | None) -> str:
    return datetime.fromtimestamp(t).isoformat(sep=" ", timespec="seconds") if t else "-"


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def status(db: str | Path, last: int = 10) -> str:
    if not Path(db).is_file():
        raise ValueError(f"{db}: no guard log here (give the --db the guard writes)")
    j = Journal(db)
    try:
        q = j.query
        (n_files, n_failed, first, latest), = q("SELECT COUNT(*), SUM(status='failed'), MIN(processed), MAX(processed) FROM files")
        (n_frames,), = q("SELECT COUNT(*) FROM frames")
        (n_events,), = q("SELECT COUNT(*) FROM events")
        outcomes = dict(q("SELECT outcome, COUNT(*) FROM triggers GROUP BY outcome"))
        (n_att, n_ok), = q("SELECT COUNT(*), SUM(ok=1) FROM attempts")
        lines = [f"guard log {db}",
                 f"{n_files} images processed ({n_failed or 0} unreadable) from {_when(first)} to {_when(latest)}; "
                 f"{n_frames} stream frames with something in them; "
                 f"{n_events} events; triggers: " + (", ".join(f"{v} {k}" for k, v in sorted(outcomes.items())) or "none")
                 + f"; action attempts: {n_ok or 0} ok of {n_att}"]
        lat = [x for (x,) in q("SELECT latency_s FROM attempts WHERE latency_s IS NOT NULL")]
        if lat:
            lines.append(f"latency from file written (frame received) to action start: p50 {_pct(lat, .5):.2f} s, "
                         f"p95 {_pct(lat, .95):.2f} s, max {max(lat):.2f} s over {len(lat)} attempts")
        lines += _cameras(q)
        lines.append(f"\nlast {last} events:")
        for eid, site, rule, first_t, last_t, n, mx, fires in q(
                "SELECT id, site, rule, first, last, n, max_target, fires FROM events ORDER BY id DESC LIMIT ?", (last,)):
            lines.append(f"  event {eid} site {site}{f' rule {rule}' if rule else ''}: {n} image(s) {first_t} .. {last_t}, "
                         f"max score {mx:.2f}, fired {fires}x")
        lines.append(f"\nlast {last} firings, notifications and alarms held (cooldowns are only counted above):")
        for tid, at, site, rule, path, score, reason, outcome, photo, payload in q(
                "SELECT id, at, site, rule, path, target_score, reason, outcome, photo, payload FROM triggers "
                "WHERE outcome != 'cooldown' ORDER BY id DESC LIMIT ?", (last,)):
            p = json.loads(payload or "{}")
            if p.get("kind") == "heartbeat":
                lines.append(f"  #{tid} {_when(at)} {outcome} site {site}: {p.get('text', '')}")
            else:
                held = f"; held: {p['held_by']}" if p.get("held_by") else ""
                choice = f"; {p['choice']}" if p.get("choice") else ""
                lines.append(f"  #{tid} {_when(at)} {outcome}{f' rule {rule}' if rule else ''} site {site} "
                             f"{Path(path or '-').name} score {score or 0:.2f} ({reason}){held}{choice}")
            if photo:
                lines.append(f"      photo: {photo}")
            for action, role, ok, started, lat_s, dur, detail in q(
                    "SELECT action, role, ok, started, latency_s, duration_s, detail FROM attempts WHERE trigger_id=? "
                    "ORDER BY id", (tid,)):
                state = ("planned, not started" if started is None and ok is None else "running" if ok is None
                         else "ok" if ok else "FAILED")
                lat_txt = f"{lat_s:.2f}" if lat_s is not None else "-"
                dur_txt = f", took {dur:.2f} s" if dur is not None else ""
                lines.append(f"      {state}: {f'{role} ' if role else ''}{action} (started {lat_txt} s after the "
                             f"image{dur_txt}) {detail or ''}")
        lines.append(f"\nlast {last} failures:")
        rows = q("SELECT at, path, stage, message FROM failures ORDER BY id DESC LIMIT ?", (last,))
        lines += [f"  {_when(at)} {stage}: {path}: {msg}" for at, path, stage, msg in rows] or ["  none"]
        return "\n".join(lines)
    finally:
        j.close()


def _cameras(q) -> list[str]:
    streams = q("SELECT site, source, connected, since, last_frame, frames, checked, analysed, reconnects, error "
                "FROM streams ORDER BY site")
    silent = [(k.split(":", 1)[1], json.loads(v)) for k, v in q("SELECT key, value FROM state WHERE key LIKE 'heartbeat:%'")]
    if not streams and not silent:
        return []
    lines = ["\ncameras:"]
    for site, source, up, since, last_frame, frames, checked, analysed, reconnects, error in streams:
        state = f"connected since {_when(since)}" if up else f"DISCONNECTED ({error or '?'})"
        lines.append(f"  stream {site} ({source}): {state}; last frame {_when(last_frame)}; {frames} frames received, "
                     f"{checked} through the motion gate, {analysed} analysed, {reconnects} reconnection(s)")
    for site, info in silent:
        lines.append(f"  SILENT: site {site}, nothing since {_when(info.get('since'))} (alerted {_when(info.get('alerted'))})")
    return lines
