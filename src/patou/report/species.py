"""What was seen where: events and MaxN per species and site, events per 100 camera-days
(relative abundance index, RAI), naive occupancy and the sites of each species.

- An event counts once for each species seen in it (season.Observation).
- MaxN: the most animals of the species in one photo of the event (count.animals_in); per site
  and over the season, the largest MaxN of its events.
- RAI = 100 x events / camera-days (health.py defines camera-days), counting only the events
  that fall inside the camera-days, so a photo with a wrong date adds to neither side.
- Naive occupancy: the share of sites (every site with a readable photo) where the species was
  seen at least once; no correction for detection probability.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from .health import Health
from .season import Season


@dataclass
class Tally:
    species: str
    site: str | None  # None: the whole season
    events: int = 0
    max_n: int = 0
    events_in_effort: int = 0
    camera_days: int = 0
    sites: list[str] = field(default_factory=list)

    @property
    def rai(self) -> float | None:
        return 100.0 * self.events_in_effort / self.camera_days if self.camera_days else None


def tabulate(season: Season, health: Health) -> tuple[list[Tally], list[Tally]]:
    """(per species over the season, most events first; per species and site)."""
    by_site_health = {h.site.id: h for h in health.sites}
    cells: dict[tuple[str, str], Tally] = {}
    for o in season.observations:
        if not o.is_species:
            continue
        h = by_site_health[o.site]
        t = cells.setdefault((o.label, o.site), Tally(o.label, o.site, camera_days=h.camera_days))
        t.events += 1
        t.max_n = max(t.max_n, o.max_n)
        t.events_in_effort += h.in_effort(o.start)
    totals: dict[str, Tally] = defaultdict(lambda: Tally("", None, camera_days=health.camera_days))
    for (species, site), c in sorted(cells.items()):
        t = totals[species]
        t.species = species
        t.events += c.events
        t.max_n = max(t.max_n, c.max_n)
        t.events_in_effort += c.events_in_effort
        t.sites.append(site)
    overall = sorted(totals.values(), key=lambda t: (-t.events, t.species))
    rank = {t.species: i for i, t in enumerate(overall)}
    return overall, sorted(cells.values(), key=lambda c: (rank[c.species], c.site))


def occupancy(t: Tally, n_sites: int) -> float | None:
    return len(t.sites) / n_sites if n_sites else None
