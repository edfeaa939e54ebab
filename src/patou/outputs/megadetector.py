"""MegaDetector batch-output JSON, format 1.6 (https://lila.science/megadetector-output-format).

This is the file Timelapse, AddaxAI and the MegaDetector post-processing tools read, so it follows
the published format to the letter; `validate_megadetector_json` checks those rules.
"""
from __future__ import annotations

import json
import math
import os
from datetime import datetime
from pathlib import Path
from typing import Iterable

from patou.outputs.atomic import atomic_output
from patou.record import ImageRecord

FORMAT_VERSION = "1.6"
MIN_CLASSIFICATION_CONF = 0.01  # below this a class is noise; the top class is always kept
BBOX_EPS = 1e-3  # rounding to 4 decimals may push x+w a hair above 1


def _now() -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S")


def _base(roots: list[Path]) -> Path | None:
    """The folder `file` paths are relative to: the root itself, or the roots' common folder."""
    try:
        return Path(os.path.commonpath([os.path.abspath(r) for r in roots]))
    except ValueError:  # different drives on Windows: no common base, write absolute paths
        return None


def _file(r: ImageRecord, base: Path | None) -> str:
    if base is None:
        return Path(os.path.abspath(r.path)).as_posix()
    prefix = os.path.relpath(os.path.abspath(r.root), base)
    return r.rel if prefix == "." else f"{Path(prefix).as_posix()}/{r.rel}"


def _bbox(b) -> list[float]:
    # Clip into the image: the format (and Timelapse) reject boxes that leave [0, 1].
    x, y = (min(max(float(v), 0.0), 1.0) for v in b[:2])
    w, h = min(max(float(b[2]), 0.0), 1.0 - x), min(max(float(b[3]), 0.0), 1.0 - y)
    return [round(x, 4), round(y, 4), round(w, 4), round(h, 4)]


def write_megadetector_json(records: Iterable[ImageRecord], path: str | Path,
                            detector_card_summary: dict, classifier_labels: list[str],
                            classifier_name: str, roots: Iterable[str | Path] | None = None, *,
                            typical_detection_threshold: float | None = None,
                            conservative_detection_threshold: float | None = None,
                            detection_completion_time: str | None = None,
                            classification_completion_time: str | None = None,
                            classifier_metadata: dict | None = None) -> Path:
    """Write every record (all boxes, even low-confidence ones: users threshold later).

    Thresholds default to the card's `extra` values, then to MegaDetector v5's 0.2 / 0.05.
    """
    records = sorted(records, key=lambda r: (str(r.root), r.rel))
    roots = [Path(p) for p in roots] if roots else sorted({r.root for r in records})
    base = _base(roots) if roots else None
    card = detector_card_summary or {}
    extra = card.get("extra") or {}

    det_labels = card.get("labels") if isinstance(card.get("labels"), list) else ["animal"]
    det_ids = {lab: str(i + 1) for i, lab in enumerate(det_labels)}  # "0" is informally "empty"
    cls_ids = {lab: str(i) for i, lab in enumerate(classifier_labels)}
    for r in records:  # labels the card lists not (e.g. a box category added later) still get an id
        for d in r.detections:
            det_ids.setdefault(d.category, str(len(det_ids) + 1))
            for lab in sorted(d.scores or ()):
                cls_ids.setdefault(lab, str(len(cls_ids)))

    images = []
    for r in records:
        f = _file(r, base)
        if r.failure:
            images.append({"file": f, "failure": r.failure, "detections": None})
            continue
        dets = []
        for d in sorted(r.detections, key=lambda d: -d.conf):
            det = {"category": det_ids[d.category], "conf": round(float(d.conf), 3), "bbox": _bbox(d.bbox)}
            if d.scores:
                ranked = sorted(d.scores.items(), key=lambda kv: -kv[1])
                det["classifications"] = [[cls_ids[k], round(float(v), 3)] for i, (k, v) in enumerate(ranked)
                                          if i == 0 or v >= MIN_CLASSIFICATION_CONF]
            dets.append(det)
        images.append({"file": f, "detections": dets})

    now = _now()
    data = {
        "info": {
            "format_version": FORMAT_VERSION,
            "detector": card.get("file") or card.get("name") or "unknown",
            "detection_completion_time": detection_completion_time or now,
            "classifier": classifier_name,
            "classification_completion_time": classification_completion_time or now,
            "detector_metadata": {
                "megadetector_version": extra.get("megadetector_version")
                or f"{card.get('name', 'unknown')} {card.get('version', '')}".strip(),
                "typical_detection_threshold": float(
                    typical_detection_threshold if typical_detection_threshold is not None
                    else extra.get("typical_detection_threshold", 0.2)),
                "conservative_detection_threshold": float(
                    conservative_detection_threshold if conservative_detection_threshold is not None
                    else extra.get("conservative_detection_threshold", 0.05)),
            },
            "classifier_metadata": dict(classifier_metadata or {}),
        },
        "detection_categories": {v: k for k, v in det_ids.items()},
        "classification_categories": {v: k for k, v in cls_ids.items()},
        "images": images,
    }
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return Path(path)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_float(v) -> bool:
    # MegaDetector's own validator insists on floats for conf; 0.0, not 0, in the JSON.
    return isinstance(v, float) and math.isfinite(v)


def _check_categories(data: dict, key: str, problems: list[str]) -> dict:
    cats = data.get(key)
    if not isinstance(cats, dict):
        problems.append(f"{key} must be an object")
        return {}
    for k, v in cats.items():
        if not (isinstance(k, str) and k.isdigit()):
            problems.append(f"{key}: id {k!r} is not a non-negative integer string")
        if not isinstance(v, str) or not v.strip():
            problems.append(f"{key}: name for id {k!r} must be a non-blank string")
    return cats


def validate_megadetector_json(data: dict) -> list[str]:
    """Problems found against the format's rules; an empty list means the file is valid."""
    p: list[str] = []
    if not isinstance(data, dict):
        return ["top level must be an object"]
    info = data.get("info")
    if not isinstance(info, dict):
        p.append("info missing or not an object")
    elif info.get("format_version") != FORMAT_VERSION:
        p.append(f"info.format_version must be {FORMAT_VERSION!r}, got {info.get('format_version')!r}")
    det_cats = _check_categories(data, "detection_categories", p)
    cls_cats = _check_categories(data, "classification_categories", p) if "classification_categories" in data else {}
    images = data.get("images")
    if not isinstance(images, list):
        return p + ["images missing or not a list"]
    seen: set[str] = set()
    for i, im in enumerate(images):
        if not isinstance(im, dict) or not isinstance(im.get("file"), str) or not im["file"]:
            p.append(f"images[{i}]: not an object with a non-empty 'file'")
            continue
        f = im["file"]
        if f in seen:
            p.append(f"{f}: file listed twice")
        seen.add(f)
        dets = im.get("detections")
        if im.get("failure") is not None:
            if not isinstance(im["failure"], str):
                p.append(f"{f}: failure must be a string")
            if dets is not None:
                p.append(f"{f}: failure set but detections is not null")
            continue
        if not isinstance(dets, list):
            p.append(f"{f}: detections must be a list (null only with a failure)")
            continue
        for j, d in enumerate(dets):
            p += [f"{f} detection {j}: {m}" for m in _check_detection(d, det_cats, cls_cats)]
    return p


def _check_detection(d, det_cats: dict, cls_cats: dict) -> list[str]:
    if not isinstance(d, dict):
        return ["not an object"]
    p = []
    cat = d.get("category")
    if not isinstance(cat, str):
        p.append(f"category {cat!r} is not a string")
    elif cat not in det_cats:
        p.append(f"category {cat!r} not in detection_categories")
    conf = d.get("conf")
    if not (_is_float(conf) and 0.0 <= conf <= 1.0):
        p.append(f"conf {conf!r} not a float in [0, 1]")
    b = d.get("bbox")
    if not (isinstance(b, list) and len(b) == 4 and all(_is_float(v) for v in b)):
        p.append(f"bbox {b!r} is not 4 floats")
    elif not (all(0.0 <= v <= 1.0 for v in b) and b[0] + b[2] <= 1 + BBOX_EPS and b[1] + b[3] <= 1 + BBOX_EPS):
        p.append(f"bbox {b!r} leaves the image (normalised [x, y, w, h] expected)")
    cls = d.get("classifications")
    if cls is not None:
        if not isinstance(cls, list):
            return p + ["classifications is not a list"]
        confs = []
        for c in cls:
            if not (isinstance(c, list) and len(c) == 2 and isinstance(c[0], str) and _is_num(c[1])):
                p.append(f"classification {c!r} is not [id string, conf]")
                continue
            if c[0] not in cls_cats:
                p.append(f"classification id {c[0]!r} not in classification_categories")
            if not 0.0 <= c[1] <= 1.0:
                p.append(f"classification conf {c[1]!r} not in [0, 1]")
            confs.append(c[1])
        if confs != sorted(confs, reverse=True):
            p.append("classifications not sorted by confidence, descending")
    return p
