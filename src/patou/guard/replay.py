"""`patou guard --replay PHOTOS_DIR`: what the guard would have fired on a folder, offline.

The photos go through the same models and verdict as `patou run`, are grouped into the same
events (`group_events`), then fed to the live guard's rules (engine.py: per-rule trackers, the
human veto, schedules on the EXIF time) in timestamp order per site, so the alarms printed are
the guard's. `--rules FILE` replays a rules file; without it the one-rule shorthand
(--target/--threshold/--cooldown). With labels (a CSV with `path` and `label_norm` or `label`;
PHOTOS_DIR/LABELS.csv is used when present) it measures, per rule and per event: the recall of
the rule's targets, the false firings per 100 other events (separately for night-infrared events,
monochrome frames, where ImageNet features mistake wild boars for bears, and the others), the
firings with a person labelled in the event, how many alarms the human veto held, and the
latency: which photo of its event fired, and the decision time (decode + models) of that photo.
Any label file `--labels` reads elsewhere works (Timelapse, COCO Camera Traps, Wildlife Insights,
Camtrap DP; see formats.labels_in), its paths matched to the photos as `--detections` matches them.
"""
from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np

from ..events import group_events
from ..media import scan
from ..options import THRESHOLD, GuardOptions
from ..record import ImageRecord
from . import analysis
from .engine import RuleEngine
from .rules import Rule, Rules, check_labels_of, load as load_rules, shorthand
from .state import COOLDOWN, FIRED, OFF_SCHEDULE, VETOED

PEOPLE = ("human", "person")  # labels (LABELS.csv) that mean a person is in the photo

# mean |R-G| + |G-B| of a 64x64 thumbnail below which a frame is monochrome (infrared at night)
MONO_SPREAD = 3.0
OPTIONS = GuardOptions()  # the defaults of `patou guard`'s options


def is_monochrome(img) -> bool:
    a = np.asarray(img.convert("RGB").resize((64, 64)), dtype=np.float32)
    return float(np.mean(np.abs(a[..., 0] - a[..., 1]) + np.abs(a[..., 1] - a[..., 2]))) < MONO_SPREAD


def score_photos(photos: list[Path], models: analysis.Analyser, detection_threshold: float, target: str,
                 site_depth: int | None = None, log: Callable[[str], None] = print,
                 times: dict[str, float] | None = None) -> tuple[list[ImageRecord], set[str]]:
    """Every photo decided as `patou run` does; also the set of paths whose frame is monochrome,
    and in `times` each photo's decision time (decode + models, seconds)."""
    records, problems = scan(photos, site_depth=site_depth)
    for p in problems:
        log(f"warning: {p}")
    spy = _NoteMonochrome(models, {} if times is None else times)
    analysis.process(records, spy, detection_threshold)
    for r in records:
        analysis.decide(r, detection_threshold, THRESHOLD, target)
        if r.failure:
            log(f"failed: {r.path}: {r.failure}")
    return records, spy.mono


class _NoteMonochrome:
    """An Analyser as `process` uses it, noting on the way which decoded frames are monochrome and
    how long each photo took (decoding runs in prefetch threads, the models in one)."""

    def __init__(self, models: analysis.Analyser, times: dict[str, float]):
        self.models, self.mono, self.times = models, set(), times

    def load(self, r: ImageRecord):
        t0 = time.perf_counter()
        loaded = analysis.load_file(self.models, r)
        self.times[str(r.path)] = time.perf_counter() - t0  # one key per thread's own photo: safe
        if loaded is not None and is_monochrome(loaded[0]):
            self.mono.add(str(r.path))  # set.add is atomic: safe from the prefetch threads
        return loaded

    def analyse_safely(self, loaded, r: ImageRecord, threshold: float):
        t0 = time.perf_counter()
        analysis.analyse_loaded(self.models, loaded, r, threshold)
        self.times[str(r.path)] = self.times.get(str(r.path), 0.0) + time.perf_counter() - t0


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
    rule: str = ""
    score: float = 0.0
    nth: int = 1  # the photo of its event (in time order) that raised it


@dataclass
class ReplayResult:
    records: list[ImageRecord]
    alarms: list[Alarm]
    events: list[list[ImageRecord]]
    mono: set[str]
    threshold: float  # the first rule's (the shorthand's)
    target: str
    metrics: dict = field(default_factory=dict)  # the first rule's, as before rules files
    false_triggers: list[Alarm] = field(default_factory=list)
    rules: Rules | None = None
    per_rule: dict[str, dict] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)
    detection_threshold: float = OPTIONS.detection_threshold
    veto: dict = field(default_factory=dict)  # how often the human veto sees a person, with labels


def simulate(records: list[ImageRecord], mono: set[str], target: str = OPTIONS.target,
             threshold: float = OPTIONS.threshold, cooldown: float = OPTIONS.cooldown,
             event_gap: float = OPTIONS.event_gap, labels: dict[str, str] | None = None,
             labels_root: Path | None = None, rules: Rules | None = None,
             detection_threshold: float = OPTIONS.detection_threshold, times: dict[str, float] | None = None,
             seed: int = 0) -> ReplayResult:
    """Feed decided records to the rules in timestamp order per site; score against labels."""
    rules = rules or shorthand(target, threshold, cooldown)
    events = group_events(records, event_gap)
    engine = RuleEngine(rules, event_gap, rng=random.Random(seed))  # the same choices every replay
    ordered = sorted((r for r in records if r.event_id),
                     key=lambda r: (str(r.root), r.site, r.timestamp is None, r.timestamp or datetime.min, r.event_id, r.rel))
    alarms, nth = [], {}
    for r in ordered:
        nth[r.event_id] = nth.get(r.event_id, 0) + 1
        seen = analysis.labels_seen(r, detection_threshold)
        v = engine.observe(r.site, r.timestamp, seen, bool(r.scores), key=r.event_id, track=f"{r.root}|{r.site}")
        for a in v.alarms:
            alarms.append(Alarm(r, r.event_id, a.outcome, a.decision.reason, a.decision.event.mean, a.rule.name,
                                a.score, nth[r.event_id]))
    first = rules.rules[0]
    res = ReplayResult(records, alarms, events, mono, first.threshold, first.targets[0], rules=rules, times=times or {},
                       detection_threshold=detection_threshold)
    if labels is not None:
        for rule in rules.rules:
            res.per_rule[rule.name] = _score(res, rule, labels, labels_root)
        res.metrics = res.per_rule[first.name]
        res.false_triggers = res.metrics["false_triggers"]
        res.veto = _score_veto(res, labels, labels_root)
    return res


def _score_veto(res: ReplayResult, labels: dict[str, str], root: Path | None) -> dict:
    """Events with a person labelled where the veto sees one, and other events where it sees one anyway."""
    m = {"person_events": 0, "person_seen": 0, "other_events": 0, "other_seen": [], "target_events_held": 0}
    targets = {t for r in res.rules.rules if r.deter for t in r.targets}
    for ev in res.events:
        labs = [_label_of(r, labels, root) for r in ev]
        if all(lab is None for lab in labs):
            continue
        seen = any(res.rules.veto.person(analysis.labels_seen(r, res.detection_threshold)) for r in ev)
        if any(lab and any(has_label(lab, p) for p in PEOPLE) for lab in labs):
            m["person_events"] += 1
            m["person_seen"] += seen
        else:
            m["other_events"] += 1
            if seen:
                m["other_seen"].append(ev[0].rel)
                m["target_events_held"] += any(lab and any(has_label(lab, t) for t in targets) for lab in labs)
    return m


def _label_of(r: ImageRecord, labels: dict[str, str], root: Path | None) -> str | None:
    if str(r.path) in labels:
        return labels[str(r.path)]
    if root is not None:
        try:
            return labels.get(Path(r.path).absolute().relative_to(root.absolute()).as_posix())
        except ValueError:
            pass
    return labels.get(r.rel)


def _score(res: ReplayResult, rule: Rule, labels: dict[str, str], root: Path | None) -> dict:
    mine = [a for a in res.alarms if a.rule == rule.name]
    alarmed = {a.event_id: a for a in mine}
    fired = {a.event_id: a for a in mine if a.outcome == FIRED}
    m = {"events": len(res.events), "target_events": 0, "target_caught": 0, "target_fired": 0, "missed": [],
         "night_events": 0, "night_false": 0, "day_events": 0, "day_false": 0, "unlabelled_events": 0,
         "night_images": 0, "night_images_alarm": 0, "person_events": 0, "person_fired": 0,
         "vetoed": sum(a.outcome == VETOED for a in mine), "off_schedule": sum(a.outcome == OFF_SCHEDULE for a in mine),
         "fired": len([a for a in mine if a.outcome == FIRED]), "false_triggers": []}
    first_fire, target_fire = {}, []  # the first firing (or veto) of each event; those of target events
    for a in mine:
        if a.outcome in (FIRED, VETOED) and a.event_id not in first_fire:
            first_fire[a.event_id] = a
    for ev in res.events:
        labs = [_label_of(r, labels, root) for r in ev]
        if all(lab is None for lab in labs):
            m["unlabelled_events"] += 1
            continue
        eid = ev[0].event_id
        if any(lab and any(has_label(lab, p) for p in PEOPLE) for lab in labs):
            m["person_events"] += 1
            m["person_fired"] += eid in fired
        if any(lab and any(has_label(lab, t) for t in rule.targets) for lab in labs):
            m["target_events"] += 1
            if eid in alarmed:
                m["target_caught"] += 1
                m["target_fired"] += eid in first_fire
                if eid in first_fire:
                    target_fire.append(first_fire[eid])
            else:
                m["missed"].append(ev[0].rel)
            continue
        night = sum(str(r.path) in res.mono for r in ev) * 2 > len(ev)
        part = "night" if night else "day"
        m[f"{part}_events"] += 1
        if night:
            m["night_images"] += len(ev)
            m["night_images_alarm"] += sum(_rule_score(r, rule, res.detection_threshold) >= rule.threshold for r in ev)
        if eid in fired:
            m[f"{part}_false"] += 1
            m["false_triggers"].append(fired[eid])
    n_non = m["night_events"] + m["day_events"]
    m["recall"] = m["target_caught"] / m["target_events"] if m["target_events"] else None
    m["false_per_100"] = 100 * (m["night_false"] + m["day_false"]) / n_non if n_non else None
    m["night_false_per_100"] = 100 * m["night_false"] / m["night_events"] if m["night_events"] else None
    m["day_false_per_100"] = 100 * m["day_false"] / m["day_events"] if m["day_events"] else None
    m["nth"] = [a.nth for a in target_fire]
    m["decision_s"] = [res.times[str(a.record.path)] for a in target_fire if str(a.record.path) in res.times]
    return m


def _rule_score(r: ImageRecord, rule: Rule, detection_threshold: float) -> float:
    seen = analysis.labels_seen(r, detection_threshold)
    return max(seen.get(t, 0.0) for t in rule.targets)


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
    rules: str | Path | Rules | None = OPTIONS.rules,
    fast: bool = OPTIONS.fast,
    threads: int | None = OPTIONS.threads,
    flip: bool = OPTIONS.flip,
    site_depth: int | None = OPTIONS.site_depth,
    log: Callable[[str], None] = print,
    models: analysis.Analyser | None = None,
) -> ReplayResult:
    """Score the photos, simulate the guard, print what would fire and (with labels) the figures."""
    threshold = OPTIONS.threshold if threshold is None else threshold
    if isinstance(rules, (str, Path)):
        rules = load_rules(rules)
    rules = rules or shorthand(target, threshold, cooldown)
    photos = [Path(p) for p in (photos if isinstance(photos, (list, tuple)) else [photos])]
    models = models or analysis.load_models(model, threads=threads, flip=flip, fast=fast)
    check_labels_of(rules, models)
    labels_path = Path(labels) if labels else (photos[0] / "LABELS.csv" if photos[0].is_dir() else None)
    if labels and not labels_path.exists():
        raise ValueError(f"--labels {labels}: no such labels file")
    if labels_path is not None and labels_path.exists():
        from ..formats.labels_in import read_label_file

        read_label_file(labels_path)  # a bad file stops here, before minutes of scoring
    else:
        labels_path = None
    times: dict[str, float] = {}
    records, mono = score_photos(photos, models, detection_threshold, rules.rules[0].targets[0], site_depth, log, times)
    table = read_labels(labels_path, records, log) if labels_path else None
    res = simulate(records, mono, event_gap=event_gap, labels=table, rules=rules,
                   detection_threshold=detection_threshold, times=times)
    log(report(res))
    return res


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def report(res: ReplayResult) -> str:
    lines = []
    words = {FIRED: "FIRE", COOLDOWN: "(cooldown, no fire)", VETOED: "HELD (person in frame: notify only)",
             OFF_SCHEDULE: "(off schedule, no fire)"}
    targets = {x.name: "/".join(x.targets) for x in res.rules.rules}
    for a in res.alarms:
        r = a.record
        when = r.timestamp.isoformat(sep=" ") if r.timestamp else "no EXIF time"
        night = " night-IR" if str(r.path) in res.mono else ""
        lines.append(f"{words.get(a.outcome, a.outcome)}  {when}  {r.site}/{Path(r.rel).name}  rule {a.rule}  "
                     f"P({targets[a.rule]}) {a.score:.2f}  event {a.event_id} mean {a.event_mean:.2f} "
                     f"({a.reason}){night}")
    n_fire = sum(a.outcome == FIRED for a in res.alarms)
    thresholds = "; ".join(f"{x.name}: P({targets[x.name]}) >= {x.threshold:g}" for x in res.rules.rules)
    lines.append(f"{len(res.records)} images, {len(res.events)} events, {n_fire} would fire ({thresholds})")
    for rule in res.rules.rules:
        m = res.per_rule.get(rule.name)
        if not m:
            continue

        def pct(x):
            return "-" if x is None else f"{x:.1f}"
        t = "/".join(rule.targets)
        lines.append(f"rule {rule.name}: {m['fired']} firing(s), {m['vetoed']} held by the human veto, "
                     f"{m['off_schedule']} off schedule")
        lines.append(f"  {t} events caught: {m['target_caught']}/{m['target_events']}"
                     + (f" (recall {m['recall']:.2f}; fired or held by the veto: {m['target_fired']})" if m["recall"] is not None else "")
                     + (f"; missed: {', '.join(m['missed'])}" if m["missed"] else ""))
        lines.append(f"  false triggers per 100 non-{t} events: {pct(m['false_per_100'])} "
                     f"(night-IR {m['night_false']}/{m['night_events']} = {pct(m['night_false_per_100'])}, "
                     f"other {m['day_false']}/{m['day_events']} = {pct(m['day_false_per_100'])})")
        lines.append(f"  night-IR non-{t} images at or over the threshold: {m['night_images_alarm']}/{m['night_images']}")
        lines.append(f"  events with a person labelled: {m['person_events']}; fired there: {m['person_fired']}")
        if m["nth"]:
            nth = ", ".join(f"photo {k}: {m['nth'].count(k)}" for k in sorted(set(m["nth"])))
            dec = m["decision_s"]
            lines.append(f"  latency: each {t} event fired at its {nth}"
                         + (f"; decision time of that photo (decode + models) p50 {_pct(dec, .5):.2f} s, "
                            f"p95 {_pct(dec, .95):.2f} s, max {max(dec):.2f} s" if dec else ""))
        for a in m["false_triggers"]:
            lines.append(f"  false trigger: {a.record.rel} P({t}) {a.score:.2f}")
        if m["unlabelled_events"]:
            lines.append(f"  ({m['unlabelled_events']} events had no label and are not counted)")
    v = res.veto
    if v:
        people = " or ".join(f"{lab} >= {thr:g}" for lab, thr in res.rules.veto.labels) or "no label (no veto)"
        lines.append(f"human veto ({people}): sees a person in {v['person_seen']}/{v['person_events']} events with a "
                     f"person labelled, and in {len(v['other_seen'])}/{v['other_events']} other events"
                     f" ({v['target_events_held']} of them a deterrent rule's target)"
                     + (f": {', '.join(v['other_seen'][:5])}" if v["other_seen"] else ""))
    return "\n".join(lines)
