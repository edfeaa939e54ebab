"""The heron burst of the Camtrap DP example: its frames and the boxes its observations give
(test_detections_in, test_detector_size)."""
from __future__ import annotations

import csv
from pathlib import Path

HERON = "camtrapdp-mica-heron/tests/testthat/fixtures/sample_camtrap_dp_data"


def heron_boxes(real: Path) -> dict[str, tuple[list[float], float]]:
    """file name -> (bbox, probability) of the 10 heron frames, from the example's observations.csv."""
    pkg = real / HERON
    with open(pkg / "media.csv", newline="") as f:
        names = {r["mediaID"]: r["fileName"] for r in csv.DictReader(f)}
    on_disk = {p.name for p in (pkg / "media").iterdir()}
    boxes = {}
    with open(pkg / "observations.csv", newline="") as f:
        for r in csv.DictReader(f):
            name = names.get(r["mediaID"])
            if name in on_disk and r["bboxX"]:
                boxes[name] = ([float(r[k]) for k in ("bboxX", "bboxY", "bboxWidth", "bboxHeight")],
                               float(r["classificationProbability"]))
    return boxes
