"""When animals come: events per hour of the camera clock per species, and the night share.

An event's hour is its first photo's. Events at sites whose clock is wrong (health.py) and
events without a time are left out; species with fewer than `min_events` timed events get a
row in the CSV but no plot (a histogram of five events says nothing).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .health import Health, Rules
from .season import Season

MIN_EVENTS = 10


@dataclass
class Activity:
    species: str
    hours: list[int] = field(default_factory=lambda: [0] * 24)  # events starting in each hour
    night: int = 0

    @property
    def events(self) -> int:
        return sum(self.hours)

    @property
    def night_share(self) -> float | None:
        return self.night / self.events if self.events else None


def activity(season: Season, health: Health) -> list[Activity]:
    """Per species with at least one timed event, most events first."""
    rules: Rules = health.rules
    trusted = {h.site.id for h in health.sites if h.clock_ok}
    out: dict[str, Activity] = {}
    for o in season.observations:
        t = o.start
        if not o.is_species or t is None or o.site not in trusted:
            continue
        a = out.setdefault(o.label, Activity(o.label))
        a.hours[t.hour] += 1
        a.night += rules.is_night(t)
    return sorted(out.values(), key=lambda a: (-a.events, a.species))
