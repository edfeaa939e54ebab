"""Camera health: which cameras worked the whole season, and what went wrong with the others.

Each rule is one small function over one site's photos; a finding names the rule that made it,
so a reader knows why a camera is flagged (and a test can check that each problem is found by
its own rule and by no other). The clock rules come first: once a camera's clock is found wrong
its times cannot be trusted, so the rules that read times (gap, silent-end, no-night,
outside-deployment) skip that camera and say so. Dates before `earliest` or in the future are
left out of its timeline and of its camera-days; a burst (photos per clock day) is still counted.

Camera-days (the effort behind every rate in the report): the calendar days from the
deployment's start to its end, both counted, for each site: deploymentStart/End from the
deployments CSV when it gives them, else the site's first and last photo with a plausible date.
"""
from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from ..record import EMPTY
from .season import Photo, Season, Site

CLOCK_RULES = ("clock-early", "clock-future", "clock-backwards")
TIME_RULES = ("gap", "silent-end", "no-night", "outside-deployment")  # skipped when the clock is wrong


@dataclass(frozen=True)
class Rules:
    earliest: date = date(2010, 1, 1)  # a camera's clock reset goes back to its factory date (2000, 2010...)
    gap_days: int = 14  # no photo for this many days: a gap (mid-deployment) or a silence (at its end)
    burst_photos: int = 300  # photos in one day: vegetation or sun setting the camera off
    night_min_photos: int = 50  # photos with an animal before "none at night" means anything
    night: tuple[int, int] = (20, 6)  # night from 20:00 to 05:59 on the camera clock
    future_slack: timedelta = timedelta(days=1)  # camera clocks run in local time, the run's in UTC

    def is_night(self, t: datetime) -> bool:
        start, end = self.night
        return t.hour >= start or t.hour < end

    def describe(self) -> list[tuple[str, str]]:
        """(rule id, what it flags), for the page and its CSV."""
        a, b = self.night
        return [
            ("clock-early", f"photos dated before {self.earliest}: the clock was reset (a new battery sets many "
                            "cameras to 2000-01-01) or never set"),
            ("clock-future", "photos dated after the run (more than a day after it finished): the clock was set wrong"),
            ("clock-backwards", "time goes back between consecutive file names in one folder: the clock was reset "
                                "or changed mid-deployment"),
            ("gap", f"no photo for {self.gap_days}+ days between two photos (or after the deployment's start): "
                    "the camera stopped, then started again"),
            ("silent-end", f"the last photo is {self.gap_days}+ days before the deployment's end (without a "
                           "deployments CSV: before the season's end, the median last photo of the sites): "
                           "battery or card"),
            ("burst", f"days with {self.burst_photos}+ photos: vegetation, sun or a sensor set too sensitive"),
            ("no-night", f"none of {self.night_min_photos}+ photos with an animal was taken at night "
                         f"({a:02d}:00-{b:02d}:00): check the infrared flash and night mode"),
            ("outside-deployment", "photos dated before deploymentStart or after deploymentEnd of the deployments "
                                   "CSV: check the camera clock or the dates"),
        ]


@dataclass
class Finding:
    site: str
    rule: str
    summary: str
    start: date | None = None
    end: date | None = None
    photos: int = 0


@dataclass
class SiteHealth:
    site: Site
    plausible: list[Photo]  # timed photos with a believable date, by time
    per_day: Counter  # plausible photos per calendar day
    effort_start: date | None
    effort_end: date | None
    effort_from: str  # "deployments CSV", "photos", "deployments CSV and photos" or ""
    findings: list[Finding] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # time rules not judged (wrong clock)

    @property
    def camera_days(self) -> int:
        if self.effort_start is None or self.effort_end is None:
            return 0
        return (self.effort_end - self.effort_start).days + 1

    @property
    def clock_ok(self) -> bool:
        return not any(f.rule in CLOCK_RULES for f in self.findings)

    def in_effort(self, t: datetime | None) -> bool:
        """A time inside the camera-days (for rates: events counted against effort)."""
        return t is not None and self.camera_days > 0 and self.effort_start <= t.date() <= self.effort_end


@dataclass
class Health:
    sites: list[SiteHealth]
    rules: Rules
    season_end: date | None  # the median last photo of the sites whose clock is right
    now: datetime  # "the future" starts a day after this (the run's end, UTC)

    @property
    def findings(self) -> list[Finding]:
        return [f for s in self.sites for f in s.findings]

    @property
    def camera_days(self) -> int:
        return sum(s.camera_days for s in self.sites)


def check(season: Season, rules: Rules = Rules()) -> Health:
    now = _run_end(season.run.info)
    bounds = (datetime.combine(rules.earliest, datetime.min.time()), now + rules.future_slack)
    sites = []
    for site in season.sites:
        timed = sorted((p for p in site.photos if p.time), key=lambda p: (p.time, p.record.rel))
        findings = _clock(site, timed, bounds)
        plausible = [p for p in timed if _plausible_time(p.time, bounds)]
        start, end, source = _effort(site, plausible)
        sh = SiteHealth(site, plausible, Counter(p.time.date() for p in plausible), start, end, source, findings)
        sh.findings += _bursts(site, timed, rules)
        sites.append(sh)

    lasts = [max(s.per_day) for s in sites if s.clock_ok and s.per_day]
    season_end = statistics.median_low(lasts) if lasts else None
    for sh in sites:
        if not sh.clock_ok:
            sh.skipped = list(TIME_RULES if (sh.site.start or sh.site.end) else TIME_RULES[:3])
            continue
        sh.findings += _gaps(sh, rules) + _silent_end(sh, rules, season_end) + _no_night(sh, rules)
        sh.findings += _outside_deployment(sh)
    return Health(sites, rules, season_end, now)


def _run_end(info: dict) -> datetime:
    try:
        t = datetime.fromisoformat(info.get("finished") or "")
    except ValueError:
        t = datetime.now(timezone.utc)
    return (t.astimezone(timezone.utc) if t.tzinfo else t).replace(tzinfo=None)


def _plausible_time(t: datetime, bounds: tuple) -> bool:
    return bounds[0] <= t <= bounds[1]


def _effort(site: Site, plausible: list[Photo]) -> tuple[date | None, date | None, str]:
    first = plausible[0].time.date() if plausible else None
    last = plausible[-1].time.date() if plausible else None
    start = site.start.date() if site.start else first
    end = site.end.date() if site.end else last
    if start is None or end is None:
        return None, None, ""
    given = (site.start is not None) + (site.end is not None)
    return start, end, {0: "photos", 1: "deployments CSV and photos", 2: "deployments CSV"}[given]


def _span(photos: list[Photo]) -> tuple[date, date]:
    times = [p.time for p in photos]
    return min(times).date(), max(times).date()


def _clock(site: Site, timed: list[Photo], bounds: tuple) -> list[Finding]:
    out = []
    early = [p for p in timed if p.time < bounds[0]]
    if early:
        a, b = _span(early)
        out.append(Finding(site.id, "clock-early", f"{len(early)} photo(s) dated {a} .. {b}, before "
                           f"{bounds[0].date()}", a, b, len(early)))
    future = [p for p in timed if p.time > bounds[1]]
    if future:
        a, b = _span(future)
        out.append(Finding(site.id, "clock-future", f"{len(future)} photo(s) dated {a} .. {b}, after the run "
                           f"({(bounds[1] - timedelta(days=1)).date()})", a, b, len(future)))
    jumps = []
    by_folder: dict[str, list[Photo]] = defaultdict(list)
    for p in timed:
        by_folder[p.record.rel.rpartition("/")[0]].append(p)
    for photos in by_folder.values():
        photos.sort(key=lambda p: _natural(p.record.path.name))
        jumps += [(a, b) for a, b in zip(photos, photos[1:]) if b.time < a.time]
    if jumps:
        a, b = jumps[0]
        out.append(Finding(site.id, "clock-backwards",
                           f"time goes back {len(jumps)} time(s) between consecutive files, first "
                           f"{a.record.rel} ({a.time:%Y-%m-%d %H:%M}) -> {b.record.path.name} ({b.time:%Y-%m-%d %H:%M})",
                           b.time.date(), a.time.date(), len(jumps)))
    return out


def _natural(name: str) -> list:
    """IMG_9.JPG before IMG_10.JPG, as a camera numbers them."""
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", name)]


def _bursts(site: Site, timed: list[Photo], rules: Rules) -> list[Finding]:
    per_day = Counter(p.time.date() for p in timed)
    days = sorted(d for d, n in per_day.items() if n >= rules.burst_photos)
    if not days:
        return []
    top = max(days, key=lambda d: per_day[d])
    n = sum(per_day[d] for d in days)
    return [Finding(site.id, "burst", f"{len(days)} day(s) with {rules.burst_photos}+ photos ({n} photos; most "
                    f"{per_day[top]} on {top}), {days[0]} .. {days[-1]}", days[0], days[-1], n)]


def _gaps(sh: SiteHealth, rules: Rules) -> list[Finding]:
    days = sorted(sh.per_day)
    if not days:
        return []
    out = []
    start = sh.site.start.date() if sh.site.start else None
    if start and (days[0] - start).days >= rules.gap_days:  # the deployment began before the first photo
        n = (days[0] - start).days
        out.append(Finding(sh.site.id, "gap", f"no photo for {n} days after the deployment started, "
                           f"{start} .. {days[0] - timedelta(days=1)}", start, days[0] - timedelta(days=1)))
    for a, b in zip(days, days[1:]):
        n = (b - a).days - 1
        if n >= rules.gap_days:
            out.append(Finding(sh.site.id, "gap", f"no photo for {n} days, {a + timedelta(days=1)} .. "
                               f"{b - timedelta(days=1)}", a + timedelta(days=1), b - timedelta(days=1)))
    return out


def _silent_end(sh: SiteHealth, rules: Rules, season_end: date | None) -> list[Finding]:
    if not sh.per_day:
        return []
    last = max(sh.per_day)
    end, what = (sh.site.end.date(), "the deployment's end") if sh.site.end else (season_end, "the season's end")
    if end is None or (end - last).days < rules.gap_days:
        return []
    return [Finding(sh.site.id, "silent-end", f"last photo on {last}, {(end - last).days} days before {what} "
                    f"({end})", last + timedelta(days=1), end)]


def _no_night(sh: SiteHealth, rules: Rules) -> list[Finding]:
    animals = [p for p in sh.plausible if p.label not in (EMPTY, None)]
    if len(animals) < rules.night_min_photos or any(rules.is_night(p.time) for p in animals):
        return []
    night = sum(rules.is_night(p.time) for p in sh.plausible)
    a, b = rules.night
    return [Finding(sh.site.id, "no-night", f"none of its {len(animals)} photos with an animal was taken at night "
                    f"({a:02d}:00-{b:02d}:00); {night} night photo(s), all empty", *_span(animals), len(animals))]


def _outside_deployment(sh: SiteHealth) -> list[Finding]:
    start, end = sh.site.start, sh.site.end
    if not (start or end):
        return []
    out = [p for p in sh.plausible if (start and p.time < start) or (end and p.time > end)]
    if not out:
        return []
    a, b = _span(out)
    limits = f"{start:%Y-%m-%d %H:%M}" if start else "..", f"{end:%Y-%m-%d %H:%M}" if end else ".."
    return [Finding(sh.site.id, "outside-deployment", f"{len(out)} photo(s) dated {a} .. {b}, outside the "
                    f"deployment {limits[0]} .. {limits[1]}", a, b, len(out))]
