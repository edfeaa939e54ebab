"""The YOLO fixtures of tests/data/yolo (made by tools/yolo_reference.py with the publishers' own code)
and how their recorded outputs are compared with patou's."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from patou.models import yolo_boxes

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


def compare_boxes(ref: list[tuple], ours: list[tuple], nms_iou: float) -> dict:
    """Final boxes (category, conf, bbox) of the publisher's code and patou's: patou's agreement
    rule (models/yolo_boxes.agree: one to one at IoU >= 0.99, equal classes and confidences, NMS
    ties allowed for), with MegaDetector's rounding (3 decimals for confidences, truncated)."""
    out = yolo_boxes.agree(ref, ours, nms_iou, conf_tol=CONF_TOL, corner_tol=CORNER_TOL)
    out["patou"] = out.pop("other")
    return out
