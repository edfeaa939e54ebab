"""`patou guard --replay PHOTOS_DIR`: what the guard would have fired on a folder, offline.

The photos go through the same models and `decide_image` as `patou run`, are grouped into the
same events (`group_events`), then fed to the live guard's Tracker in timestamp order per site, so
the alarms printed are the guard's. With labels (a CSV with `path` and `label_norm` or `label`;
PHOTOS_DIR/LABELS.csv is used when present) it also measures, per event, the target recall and the
false triggers per 100 non-target events, separately for night-infrared events (monochrome frames:
where ImageNet features mistake wild boars for bears) and the others. Any label file `--labels`
reads elsewhere works (Timelapse, COCO Camera Traps, Wildlife Insights, Camtrap DP; see
formats.labels_in), its paths matched to the photos as `--detections` matches them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np

from ..decide import decide_image
from ..events import group_events
from ..media import scan
from ..options import THRESHOLD, GuardOptions
from ..pipeline import Analyser, process
from ..record import ImageRecord
from .state import COOLDOWN, FIRED, Tracker

# mean |R-G| + |G-B| of a 64x64 thumbnail below which a frame is monochrome (infrared at night)
MONO_SPREAD = 3.0
OPTIONS = GuardOptions()  # the defaults of `patou guard`'s options


def is_monochrome(img) -> bool:
    a = np.asarray(img.convert("RGB").resize((64, 64)), dtype=np.float32)
    return float(np.mean(np.abs(a[..., 0] - a[..., 1]) + np.abs(a[..., 1] - a[..., 2]))) < MONO_SPREAD


def score_photos(photos: list[Path], models: Analyser, detection_threshold: float, target: str,
                 site_depth: int | None = None, log: Callable[[str], None] = print) -> tuple[list[ImageRecord], set[str]]:
    """Every photo decided as `patou run` does; also the set of paths whose frame is monochrome."""
    records, problems = scan(photos, site_depth=site_depth)
    for p in problems:
        log(f"warning: {p}")
    spy = _NoteMonochrome(models)
    process(records, spy, detection_threshold)
    for r in records:
        decide_image(r, detection_threshold, THRESHOLD, target)
        if r.failure:
            log(f"failed: {r.path}: {r.failure}")
    return records, spy.mono


class _NoteMonochrome:
    """An Analyser as `process` uses it, noting on the way which decoded frames are monochrome."""

    def __init__(self, models: Analyser):
        self.models, self.mono = models, set()

    def load(self, r: ImageRecord):
        loaded = self.models.load(r)
        if loaded is not None and is_monochrome(loaded[0]):
            self.mono.add(str(r.path))  # set.add is atomic: safe from the prefetch threads
        return loaded

    def analyse_safely(self, *args):
        return self.models.analyse_safely(*args)


def read_labels(path: Path, records: list[ImageRecord], log: Callable[[str], None] = print) -> dict[str, str]:
    """{photo path: its truth}: the label file's own words and, after a space, the patou label
    they mean (so `has_label` finds the target in either: `American Black Bear bear`)."""
    from ..formats.labels_in import match_labels, read_label_file
    from ..formats.taxa import NameIndex, load_table

    found = read_label_file(path)
    truth, problems = match_labels(found, records, NameIndex(load_table()))
    for p in found.notes + problems:
        log(f"warning: {p}")
    return {p: f"{row.name} {label}" for p, (label, row) in truth.items()}


def has_label(label: str, target: str) -> bool:
    return target in re.split(r"[;,\s()]+", label.lower())


@dataclass
class Alarm:
    record: ImageRecord
    event_id: str
    outcome: str
    reason: str
    event_mean: float


@dataclass
class ReplayResult:
    records: list[ImageRecord]
    alarms: list[Alarm]
    events: list[list[ImageRecord]]
    mono: set[str]
    threshold: float
    target: str
    metrics: dict = field(default_factory=dict)
    false_triggers: list[Alarm] = field(default_factory=list)


def simulate(records: list[ImageRecord], mono: set[str], target: str, threshold: float,
             cooldown: float = OPTIONS.cooldown, event_gap: float = OPTIONS.event_gap, labels: dict[str, str] | None = None, labels_root: Path | None = None) -> ReplayResult:
    """Feed decided records to a Tracker in timestamp order per site; score against labels."""
    events = group_events(records, event_gap)
    tracker = Tracker(threshold, cooldown, event_gap)
    ordered = sorted((r for r in records if r.event_id),
                     key=lambda r: (str(r.root), r.site, r.timestamp is None, r.timestamp or datetime.min, r.event_id, r.rel))
    alarms = []
    for r in ordered:
        d = tracker.observe(f"{r.root}|{r.site}", r.timestamp, r.target_score, bool(r.scores), key=r.event_id)
        if d.outcome:
            alarms.append(Alarm(r, r.event_id, d.outcome, d.reason, d.event.mean))
    res = ReplayResult(records, alarms, events, mono, threshold, target)
    if labels is not None:
        _score(res, labels, labels_root)
    return res


def _label_of(r: ImageRecord, labels: dict[str, str], root: Path | None) -> str | None:
    if str(r.path) in labels:
        return labels[str(r.path)]
    if root is not None:
        try:
            return labels.get(Path(r.path).absolute().relative_to(root.absolute()).as_posix())
        except ValueError:
            pass
    return labels.get(r.rel)


def _score(res: ReplayResult, labels: dict[str, str], root: Path | None) -> None:
    alarmed = {a.event_id: a for a in res.alarms}
    fired = {a.event_id: a for a in res.alarms if a.outcome == FIRED}
    m = {"events": len(res.events), "target_events": 0, "target_caught": 0, "missed": [],
         "night_events": 0, "night_false": 0, "day_events": 0, "day_false": 0, "unlabelled_events": 0,
         "night_images": 0, "night_images_alarm": 0}
    for ev in res.events:
        labs = [_label_of(r, labels, root) for r in ev]
        if all(lab is None for lab in labs):
            m["unlabelled_events"] += 1
            continue
        eid = ev[0].event_id
        if any(lab and has_label(lab, res.target) for lab in labs):
            m["target_events"] += 1
            if eid in alarmed:
                m["target_caught"] += 1
            else:
                m["missed"].append(ev[0].rel)
            continue
        night = sum(str(r.path) in res.mono for r in ev) * 2 > len(ev)
        part = "night" if night else "day"
        m[f"{part}_events"] += 1
        if night:
            m["night_images"] += len(ev)
            m["night_images_alarm"] += sum(r.target_score is not None and r.target_score >= res.threshold for r in ev)
        if eid in fired:
            m[f"{part}_false"] += 1
            res.false_triggers.append(fired[eid])
    n_non = m["night_events"] + m["day_events"]
    m["recall"] = m["target_caught"] / m["target_events"] if m["target_events"] else None
    m["false_per_100"] = 100 * (m["night_false"] + m["day_false"]) / n_non if n_non else None
    m["night_false_per_100"] = 100 * m["night_false"] / m["night_events"] if m["night_events"] else None
    m["day_false_per_100"] = 100 * m["day_false"] / m["day_events"] if m["day_events"] else None
    res.metrics = m


def replay(
    photos: str | Path | list,
    *,
    model: str | Path | None = OPTIONS.model,
    target: str = OPTIONS.target,
    threshold: float | None = None,
    detection_threshold: float = OPTIONS.detection_threshold,
    cooldown: float = OPTIONS.cooldown,
    event_gap: float = OPTIONS.event_gap,
    labels: str | Path | None = OPTIONS.labels,
    fast: bool = OPTIONS.fast,
    threads: int | None = OPTIONS.threads,
    flip: bool = OPTIONS.flip,
    site_depth: int | None = OPTIONS.site_depth,
    log: Callable[[str], None] = print,
    models: Analyser | None = None,
) -> ReplayResult:
    """Score the photos, simulate the guard, print what would fire and (with labels) the figures."""
    threshold = OPTIONS.threshold if threshold is None else threshold
    photos = [Path(p) for p in (photos if isinstance(photos, (list, tuple)) else [photos])]
    models = models or Analyser(model, threads=threads, flip=flip, fast=fast)
    if target not in models.classifier.labels:
        raise ValueError(f"--target {target!r} is not a label of the model ({', '.join(models.classifier.labels)})")
    labels_path = Path(labels) if labels else (photos[0] / "LABELS.csv" if photos[0].is_dir() else None)
    if labels and not labels_path.exists():
        raise ValueError(f"--labels {labels}: no such labels file")
    if labels_path is not None and labels_path.exists():
        from ..formats.labels_in import read_label_file

        read_label_file(labels_path)  # a bad file stops here, before minutes of scoring
    else:
        labels_path = None
    records, mono = score_photos(photos, models, detection_threshold, target, site_depth, log)
    table = read_labels(labels_path, records, log) if labels_path else None
    res = simulate(records, mono, target, threshold, cooldown, event_gap, table)
    log(report(res))
    return res


def report(res: ReplayResult) -> str:
    lines = []
    for a in res.alarms:
        r = a.record
        when = r.timestamp.isoformat(sep=" ") if r.timestamp else "no EXIF time"
        word = "FIRE" if a.outcome == FIRED else "(cooldown, no fire)" if a.outcome == COOLDOWN else a.outcome
        night = " night-IR" if str(r.path) in res.mono else ""
        lines.append(f"{word}  {when}  {r.site}/{Path(r.rel).name}  P({res.target}) {r.target_score:.2f}  "
                     f"event {a.event_id} mean {a.event_mean:.2f} ({a.reason}){night}")
    n_fire = sum(a.outcome == FIRED for a in res.alarms)
    lines.append(f"{len(res.records)} images, {len(res.events)} events, {n_fire} would fire "
                 f"(P({res.target}) >= {res.threshold:g})")
    m = res.metrics
    if m:
        def pct(x):
            return "-" if x is None else f"{x:.1f}"
        lines.append(f"{res.target} events caught: {m['target_caught']}/{m['target_events']}"
                     + (f" (recall {m['recall']:.2f})" if m["recall"] is not None else "")
                     + (f"; missed: {', '.join(m['missed'])}" if m["missed"] else ""))
        lines.append(f"false triggers per 100 non-{res.target} events: {pct(m['false_per_100'])} "
                     f"(night-IR {m['night_false']}/{m['night_events']} = {pct(m['night_false_per_100'])}, "
                     f"other {m['day_false']}/{m['day_events']} = {pct(m['day_false_per_100'])})")
        lines.append(f"night-IR non-{res.target} images at or over the threshold: "
                     f"{m['night_images_alarm']}/{m['night_images']}")
        for a in res.false_triggers:
            lines.append(f"  false trigger: {a.record.rel} P({res.target}) {a.record.target_score:.2f}")
        if m["unlabelled_events"]:
            lines.append(f"({m['unlabelled_events']} events had no label and are not counted)")
    return "\n".join(lines)
