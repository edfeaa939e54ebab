"""A run as the report reads it: the readable photos with the label that stands (a person's
correction from the review app over the model's), grouped by site, and the run's events as
observations, one per species seen in an event.

Sites are the Camtrap DP deployments of the run (`camtrap_dp_deployments.site_deployments`: the
site folder, prefixed by its input folder's name when two inputs share one), so a deployments CSV
written for `patou export-camtrap-dp` is matched here the same way, and can give each site its
deployment dates.

An event a person corrected follows the Camtrap DP export's rule: one observation per distinct
label people gave its photos (an `empty` photo does not make an animal's visit blank); the other
events keep the model's event label.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from ..events import events_of
from ..options import Thresholds
from ..formats.camtrap_dp_deployments import attach_user_values, read_deployments_csv, site_deployments
from ..corrections import load_corrections
from ..record import EMPTY, UNDEFINED, ImageRecord
from ..results import Run, load_run
from .count import animals_in

NOT_SPECIES = (EMPTY, UNDEFINED)


@dataclass
class Photo:
    record: ImageRecord
    site: str
    label: str  # what stands: a person's label when there is one, else the model's
    human: bool
    count: int | None = None  # the animals a person counted, when they did

    @property
    def time(self) -> datetime | None:
        return self.record.timestamp


@dataclass
class Site:
    id: str  # the deployment id: the site folder ('.' -> the input folder's name)
    root: str
    folder: str
    photos: list[Photo] = field(default_factory=list)
    start: datetime | None = None  # deploymentStart / End from the deployments CSV, camera clock
    end: datetime | None = None


@dataclass
class Observation:
    """One label seen in one event."""

    event_id: str
    site: str
    label: str  # a species, `empty` or `undefined`
    human: bool  # the label is a person's
    photos: list[Photo]
    max_n: int  # the most animals in one of its photos (count.animals_in)
    score: float | None  # the model's event score (None for a person's label)
    guess: str | None = None  # `undefined`: the model's best class, below the threshold

    @property
    def start(self) -> datetime | None:
        times = [p.time for p in self.photos if p.time]
        return min(times) if times else None

    @property
    def end(self) -> datetime | None:
        times = [p.time for p in self.photos if p.time]
        return max(times) if times else None

    @property
    def is_species(self) -> bool:
        return self.label not in NOT_SPECIES


@dataclass
class Season:
    run: Run
    sites: list[Site]
    photos: list[Photo]  # readable ones
    failures: int
    observations: list[Observation]
    detection_threshold: float
    threshold: float
    deployments_csv: Path | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def human_photos(self) -> int:
        return sum(p.human for p in self.photos)

    @property
    def human_events(self) -> int:
        return len({o.event_id for o in self.observations if o.human})

    @property
    def events(self) -> int:
        return len({o.event_id for o in self.observations})


def load_season(results_dir: str | Path | Run, deployments: str | Path | None = None) -> Season:
    """RESULTS_DIR read back (load_run, or a Run already loaded, + its corrections.json), with the
    deployments CSV's dates."""
    run = results_dir if isinstance(results_dir, Run) else load_run(results_dir)
    corrections = load_corrections(run.out)
    det_t = float(run.options.get("detection_threshold") or 0.2)
    thr = Thresholds.from_options(run.options).default  # per-class thresholds: the default is the bar shown
    readable = [r for r in run.records if r.failure is None]
    deps = site_deployments(readable)
    warnings: list[str] = []
    dates: dict[str, tuple] = {}
    if deployments:
        warnings, dates = _deployment_dates(deps, Path(deployments))

    sites, by_record = [], {}
    for d in deps:
        start, end = dates.get(d.id, (None, None))
        site = Site(d.id, d.root, d.site, start=start, end=end)
        for r in d.records:
            c = corrections.get((str(r.root), r.rel))
            photo = Photo(r, d.id, c["label"] if c else r.label, c is not None, c.get("count") if c else None)
            site.photos.append(photo)
            by_record[id(r)] = photo
        sites.append(site)

    observations = []
    for event in events_of(readable):
        observations += _observations([by_record[id(r)] for r in event], det_t)
    return Season(run, sites, [p for s in sites for p in s.photos], len(run.records) - len(readable),
                  observations, det_t, thr, Path(deployments) if deployments else None, warnings)


def _observations(photos: list[Photo], det_t: float) -> list[Observation]:
    first = photos[0]
    eid, site = first.record.event_id, first.site
    checked = [p for p in photos if p.human]
    if checked:
        labels = sorted({p.label for p in checked})
        if len(labels) > 1 and EMPTY in labels:  # an empty frame does not make an animal's visit blank
            labels.remove(EMPTY)
        out = []
        for label in labels:
            mine = [p for p in checked if p.label == label]
            n = max(p.count if p.count is not None else animals_in(p.record, det_t, label) for p in mine)
            out.append(Observation(eid, site, label, True, mine, 0 if label == EMPTY else max(n, 1), None))
        return out
    label = first.record.event_label or UNDEFINED
    if label == EMPTY:
        return [Observation(eid, site, label, False, photos, 0, first.record.event_score)]
    n = max(animals_in(p.record, det_t, None if label == UNDEFINED else label) for p in photos)
    if label != UNDEFINED and first.record.event_count is not None:
        n = first.record.event_count  # the run's own MaxN, as predictions.csv and Camtrap DP give it
    guess = _best_guess(photos) if label == UNDEFINED else None
    return [Observation(eid, site, label, False, photos, n if label == UNDEFINED else max(n, 1),
                        first.record.event_score, guess)]


def _best_guess(photos: list[Photo]) -> str | None:
    """The class the event's mean scores put first (what `undefined` fell short of)."""
    scored = [p.record.scores for p in photos if p.record.scores]
    if not scored:
        return None
    labels = {k for s in scored for k in s}
    return max(sorted(labels), key=lambda k: sum(s.get(k, 0.0) for s in scored))


def _deployment_dates(deps, path: Path) -> tuple[list[str], dict[str, tuple]]:
    """Warnings, and each matched site's (deploymentStart, deploymentEnd) on its camera's own
    clock (naive, like EXIF times); None where the CSV leaves one empty."""
    from ..formats.camtrap_dp_validate import load_table_schema

    fields = [f["name"] for f in load_table_schema("deployments")["fields"]]
    rows, warnings = read_deployments_csv(path, fields)
    warnings += attach_user_values(deps, rows, fields, path, None)
    dates = {}
    for d in deps:
        start, end = (_camera_time(d.values[col], d.tz, f"{path}: {d.id} {col}", end=col == "deploymentEnd")
                      if d.values.get(col) else None for col in ("deploymentStart", "deploymentEnd"))
        if start and end and end < start:
            raise ValueError(f"{path}: {d.id}: deploymentEnd {d.values['deploymentEnd']} is before "
                             f"deploymentStart {d.values['deploymentStart']}")
        dates[d.id] = (start, end)
    return warnings, dates


def _camera_time(text: str, tz, where: str, end: bool) -> datetime:
    """A CSV time as the camera clock reads it; a bare date ends at midnight after it."""
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not a date or date-time like 2024-05-01T09:30:00+02:00") from None
    if len(text.strip()) == 10 and end:  # 2024-06-30: the whole day
        t += timedelta(days=1) - timedelta(microseconds=1)
    if t.tzinfo is not None:  # to the camera's offset when the CSV gives it, else its wall time
        t = (t.astimezone(tz) if tz else t).replace(tzinfo=None)
    return t
