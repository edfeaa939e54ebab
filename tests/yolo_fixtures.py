"""The YOLO fixtures of tests/data/yolo (made by tools/yolo_reference.py with the publishers' own code)
and how their recorded outputs are compared with patou's."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

DATA = Path(__file__).parent / "data" / "yolo"
FIXTURES = ["yolov5-p6-tiny", "yolov5-p5-tiny", "yolov8-tiny", "yolov11-tiny", "yolov11l-tiny"]
MD_CATEGORIES = {"1": "animal", "2": "person", "3": "vehicle"}
CONF_TOL = 0.0015  # MegaDetector truncates confidences to 3 decimals, patou rounds to 4
CORNER_TOL = 2.5e-4  # both write 4 decimals (MD truncates): for boxes too thin for an IoU


def info(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def raw(name: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    with np.load(DATA / f"{name}.npz") as z:
        return {k: (z[f"idx{k}"], z[f"raw{k}"]) for k in range(len(info(name)["photos"]))}


def photo(real: Path, rel: str) -> Image.Image:
    """Decoded as MegaDetector decodes (full size, EXIF-rotated, RGB): the reference's input."""
    img = Image.open(real / rel)
    img.load()
    return ImageOps.exif_transpose(img).convert("RGB")


def iou(a, b) -> float:
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    union = a[2] * a[3] + b[2] * b[3] - iw * ih
    return iw * ih / union if union > 0 else 0.0


def same_box(a, b) -> bool:
    return iou(a, b) >= 0.99 or max(abs(x - y) for x, y in zip(a, b)) <= CORNER_TOL


def compare_boxes(ref: list[tuple], ours: list[tuple], nms_iou: float) -> dict:
    """Final boxes (category, conf, bbox) of the publisher's code and patou's.

    Boxes match one to one at IoU >= 0.99 with equal classes and confidences. Among boxes of equal
    score (to the 3 decimals MD writes) that overlap more than the NMS threshold, which one NMS keeps
    is arbitrary (torch's sort is not stable): a random network gives such ties along flat regions
    (a photo's caption bar, the canvas edge). So a box left unmatched is accepted only when the
    other side kept, in its place, a box of the same class and score that overlaps it beyond the
    NMS threshold (that box suppressed it); any other difference is a failure (`unexplained`)."""
    free, matched, left_ref = list(range(len(ours))), [], []
    for r in sorted(ref, key=lambda r: -r[1]):
        cands = [j for j in free if ours[j][0] == r[0] and abs(ours[j][1] - r[1]) <= CONF_TOL and same_box(r[2], ours[j][2])]
        if cands:
            j = max(cands, key=lambda j: iou(r[2], ours[j][2]))
            free.remove(j)
            matched.append(iou(r[2], ours[j][2]))
        else:
            left_ref.append(r)
    left_ours = [ours[j] for j in free]

    def suppressed_by(a, kept) -> bool:
        return any(k[0] == a[0] and k[1] >= a[1] - CONF_TOL and iou(k[2], a[2]) > nms_iou for k in kept)

    unexplained = [("reference", r) for r in left_ref if not suppressed_by(r, ours)] + \
                  [("patou", o) for o in left_ours if not suppressed_by(o, ref)]
    return {"matched": len(matched), "reference": len(ref), "patou": len(ours), "tie_swaps": len(left_ref),
            "unexplained": unexplained, "worst_iou": min(matched, default=1.0),
            "matched_by_corners": sum(v < 0.99 for v in matched)}
