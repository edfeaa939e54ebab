"""When a rule may fire: active hours of the day, and night only (sunset to sunrise at the site).

Times are the images' clocks (EXIF, or the arrival / capture time), which carry no zone: they are
read in the site's `timezone` (the computer's local zone when none is given), the zone the camera
clock is assumed to be set to. Sunrise and sunset come from astral (the NOAA solar equations)
for the site's latitude and longitude on that date; where the sun neither rises nor sets that day
(polar summer or winter) it is night while the sun is below the horizon.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time as dtime, timedelta, timezone, tzinfo
from functools import lru_cache

_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True)
class Location:
    latitude: float
    longitude: float
    timezone: str | None = None  # IANA name, e.g. Europe/Paris; None = this computer's zone

    def zone(self) -> tzinfo | None:
        return zone_of(self.timezone)

    def describe(self) -> str:
        ns, ew = ("N" if self.latitude >= 0 else "S"), ("E" if self.longitude >= 0 else "W")
        return (f"{abs(self.latitude):.3f} {ns}, {abs(self.longitude):.3f} {ew}, "
                f"{self.timezone or 'local time of this computer'}")


def zone_of(name: str | None) -> tzinfo | None:
    """The zone of that name (a ValueError when unknown); None = this computer's local zone."""
    if name is None:
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as Europe/Paris)") from None


def aware(clock: datetime, zone: tzinfo | None) -> datetime:
    """A naive image clock read in `zone` (local time when None)."""
    if clock.tzinfo is not None:
        return clock
    return clock.replace(tzinfo=zone) if zone is not None else clock.astimezone()


def parse_window(text: str) -> tuple[int, int]:
    """'20:00-06:30' -> (1200, 390) minutes of the day; a window may span midnight."""
    m = _WINDOW.match(text)
    if not m:
        raise ValueError(f"active hours {text!r}: expected HH:MM-HH:MM, e.g. 20:00-06:30")
    h1, m1, h2, m2 = map(int, m.groups())
    if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2):
        raise ValueError(f"active hours {text!r}: not a time of day")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end:
        raise ValueError(f"active hours {text!r}: starts when it ends (use 00:00-24:00 for all day)")
    return start, end


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@lru_cache(maxsize=64)
def _sun_times(lat: float, lon: float, day: date, zone_name: str | None) -> tuple[datetime, datetime] | str:
    """(sunrise, sunset) of that local day, or 'day' / 'night' when the sun neither rises nor sets."""
    from astral import Observer
    from astral.sun import elevation, sunrise, sunset

    obs = Observer(latitude=lat, longitude=lon)
    zone = zone_of(zone_name) or datetime.combine(day, dtime(12)).astimezone().tzinfo  # that day's local offset
    try:
        return sunrise(obs, day, tzinfo=zone), sunset(obs, day, tzinfo=zone)
    except ValueError:  # polar day or night
        noon = datetime.combine(day, dtime(12), tzinfo=zone)
        return "day" if elevation(obs, noon) > -0.833 else "night"


def is_night(clock: datetime, where: Location) -> bool:
    """Between sunset and the next sunrise at `where` (astral's sunrise/sunset: upper limb at the horizon)."""
    t = aware(clock, where.zone())
    s = _sun_times(where.latitude, where.longitude, t.date(), where.timezone)
    if isinstance(s, str):
        from astral import Observer
        from astral.sun import elevation

        return elevation(Observer(where.latitude, where.longitude), t.astimezone(timezone.utc)) <= -0.833
    rise, set_ = s
    return t < rise or t >= set_


def sun_times(day: date, where: Location) -> str:
    """'sunset 21:39, sunrise 06:19' for the words of --check-rules."""
    s = _sun_times(where.latitude, where.longitude, day, where.timezone)
    if isinstance(s, str):
        return "no sunrise or sunset that day (polar " + s + ")"
    nxt = _sun_times(where.latitude, where.longitude, day + timedelta(days=1), where.timezone)
    rise = nxt[0] if not isinstance(nxt, str) else s[0]
    return f"sunset {s[1]:%H:%M}, sunrise {rise:%H:%M}"


@dataclass(frozen=True)
class Schedule:
    windows: tuple[tuple[int, int], ...] = ()  # minutes of the day, [start, end); empty = all day
    night_only: bool = False

    @property
    def always(self) -> bool:
        return not self.windows and not self.night_only

    def active(self, clock: datetime | None, where: Location | None) -> bool:
        """Whether a rule with this schedule may fire at `clock`. An image without a time (a
        replayed file with no EXIF) counts as in schedule: the guard itself always has a time."""
        if clock is None or self.always:
            return True
        if self.windows:
            local = aware(clock, where.zone() if where else None)
            minute = local.hour * 60 + local.minute
            if not any(s <= minute < e if s < e else (minute >= s or minute < e) for s, e in self.windows):
                return False
        if self.night_only:
            if where is None:  # rules.py refuses this; a Schedule used alone says so clearly
                raise ValueError("night_only needs the site's latitude and longitude ([location])")
            return is_night(clock, where)
        return True

    def describe(self, where: Location | None, today: date | None = None) -> str:
        if self.always:
            return "at any hour"
        parts = []
        if self.windows:
            parts.append("between " + " or ".join(f"{_hhmm(s)} and {_hhmm(e)}" for s, e in self.windows))
        if self.night_only and where is not None:
            parts.append(f"only at night (sunset to sunrise at {where.describe()}; "
                         f"on {(today or date.today()).isoformat()}: {sun_times(today or date.today(), where)})")
        return ", and ".join(parts)
