"""Synthetic camera-trap seasons for the report's tests.

Photos are real (tiny) JPEG files whose EXIF DateTimeOriginal Pillow sets, and patou reads them
back with its own scan and decode. The detector is not run (7,000 photos would take it a quarter
of an hour): each photo gets the boxes and class scores its plan says, then patou's own decide,
events and writers (predictions.csv, records.jsonl, run.json as `patou run` lays it out) make the
results folder the report reads.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from PIL import Image

from patou import __version__
from patou.decide import decide_event, decide_image
from patou.events import group_events
from patou.media import decode, scan
from patou.formats.tables import write_csv
from patou.record import Detection
from patou.results import RESULTS_VERSION, write_records
from patou.timestamps import assign_times

LABELS = ["fox", "deer", "wild_boar", "badger", "bird"]
START = datetime(2024, 5, 1)
DAYS = 90
DET_T, THR = 0.2, 0.5


@dataclass
class Shot:
    """One photo of the plan: when the camera clock says it was taken, and what it shows."""

    time: datetime
    label: str = "empty"  # a class of LABELS, or empty
    animals: int = 1  # boxes of that class
    score: float = 0.9  # the class score of each box
    others: int = 0  # extra boxes of another class (a MaxN must not count them)
    taken: datetime | None = None  # when it really was, if the clock is wrong (the file counter follows it)

    @property
    def order(self) -> datetime:
        return self.taken or self.time


def _visit(t: datetime, label: str, rng: random.Random, n_photos: int) -> list[Shot]:
    score = rng.choice([0.95, 0.9, 0.85, 0.6, 0.4])  # some low-score, some undefined events
    animals = rng.choice([1, 1, 1, 2])
    return [Shot(t + timedelta(seconds=2 * i), label, animals, score) for i in range(n_photos)]


def normal_days(days: range, rng: random.Random, hours: tuple[int, int] = (0, 24)) -> list[Shot]:
    """A working camera: 2-4 visits a day at any hour (about 40 % at night), 1-3 photos each,
    a third of the visits empty (wind, warm air)."""
    shots = []
    for d in days:
        for _ in range(rng.randint(2, 4)):
            t = START + timedelta(days=d, hours=rng.randrange(*hours), minutes=rng.randrange(60))
            label = rng.choice(LABELS) if rng.random() > 0.33 else "empty"
            shots += _visit(t, label, rng, rng.randint(1, 3))
    return shots


def season_plan(seed: int = 7) -> dict[str, list[Shot]]:
    """Eight cameras over 90 days from 2024-05-01, each with one problem, or none."""
    rng = random.Random(seed)
    plan = {"normal-a": normal_days(range(DAYS), rng), "normal-b": normal_days(range(DAYS), rng),
            "dies-day40": normal_days(range(40), rng),
            "gap-30": normal_days(range(30), rng) + normal_days(range(60, DAYS), rng)}
    # the clock is reset to 2000-01-01 on day 45 (a battery change) and runs on from there
    reset = normal_days(range(DAYS), rng)
    cut = START + timedelta(days=45)
    plan["clock-2000"] = [Shot(s.time if s.time < cut else datetime(2000, 1, 1) + (s.time - cut), s.label, s.animals,
                               s.score, taken=s.time) for s in reset]
    # vegetation in the sun: 500 empty photos a day, 09:00-17:00, on days 50-54
    burst = normal_days(range(DAYS), rng)
    for d in range(50, 55):
        burst += [Shot(START + timedelta(days=d, hours=9, seconds=57 * i)) for i in range(500)]
    plan["burst-500"] = burst
    # the infrared flash is dead: animals by day only; the few night triggers come out black (empty)
    plan["no-night"] = normal_days(range(DAYS), rng, hours=(8, 18)) + [
        Shot(START + timedelta(days=d, hours=23)) for d in range(0, DAYS, 10)]
    # the year was set ten years ahead
    plan["clock-future"] = [Shot(s.time.replace(year=2034), s.label, s.animals, s.score)
                            for s in normal_days(range(30), rng)]
    return plan


def write_photos(plan: dict[str, list[Shot]], photos: Path) -> dict[Path, Shot]:
    """One JPEG per shot, named IMG_0001.JPG... in the order the camera took them (so a clock
    reset shows as time going back between consecutive names)."""
    img = Image.new("RGB", (16, 12), (90, 110, 80))
    exif = Image.Exif()
    ifd = exif.get_ifd(0x8769)  # the Exif sub-IFD, where DateTimeOriginal lives
    by_path = {}
    for site, shots in plan.items():
        folder = photos / site
        folder.mkdir(parents=True, exist_ok=True)
        # in the order of capture: a reset clock's times go back, its file counter does not
        for n, shot in enumerate(sorted(shots, key=lambda s: s.order), 1):
            ifd[0x9003] = shot.time.strftime("%Y:%m:%d %H:%M:%S")
            path = folder / f"IMG_{n:04d}.JPG"
            img.save(path, exif=exif, quality=70)
            by_path[path.absolute()] = shot
    return by_path


def _detections(shot: Shot) -> list[Detection]:
    if shot.label == "empty":
        return []
    rest = (1.0 - shot.score) / (len(LABELS) - 1)
    scores = {k: (shot.score if k == shot.label else rest) for k in LABELS}
    other = "bird" if shot.label != "bird" else "fox"
    boxes = [Detection((0.1 * i, 0.1, 0.2, 0.2), 0.9, scores=dict(scores)) for i in range(shot.animals)]
    boxes += [Detection((0.6, 0.5, 0.1, 0.1), 0.8, scores={k: 0.8 if k == other else 0.05 for k in LABELS})
              for _ in range(shot.others)]
    return boxes + [Detection((0.0, 0.0, 0.05, 0.05), 0.1, scores=dict(scores))]  # below the threshold


def make_results(plan: dict[str, list[Shot]], tmp: Path) -> Path:
    """The results folder of a `patou run` over the plan's photos (boxes from the plan)."""
    photos = tmp / "photos"
    shots = write_photos(plan, photos)
    records, problems = scan([photos])
    assert not problems
    for r in records:
        decode(r)  # patou's own EXIF reading
        r.detections = _detections(shots[r.path])
    assign_times(records, ["exif", "filename"])
    for r in records:
        decide_image(r, DET_T, THR)
    for event in group_events(records, 20.0):
        decide_event(event, THR)
    out = tmp / "results"
    out.mkdir()
    write_csv(records, out / "predictions.csv", DET_T)
    write_records(records, out)
    info = {"patou_version": __version__, "results_version": RESULTS_VERSION,
            "finished": datetime(2026, 1, 15, tzinfo=timezone.utc).isoformat(timespec="seconds"),
            "options": {"inputs": [str(photos)], "out": str(out), "detection_threshold": DET_T, "threshold": THR,
                        "event_gap": 20.0},
            "models": {"detector": {"name": "synthetic-boxes", "version": "0"},
                       "classifier": {"name": "synthetic-scores", "version": "0", "labels": LABELS}},
            "counts": {"images": len(records)}}
    (out / "run.json").write_text(json.dumps(info, indent=2) + "\n")
    return out
