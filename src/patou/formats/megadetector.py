"""MegaDetector batch-output JSON, format 1.6 (https://lila.science/megadetector-output-format):
read (`--detections`), written (RESULTS_DIR/megadetector.json) and validated here.

This is the file Timelapse, AddaxAI and the MegaDetector post-processing tools read, so it follows
the published format to the letter; `validate_megadetector_json` checks those rules.

A file read in may come from anyone: `read_md_file` checks its frame, `md_entries` its names (a
name is only ever looked up among the scanned files, never a path opened, never a record of its
own), `clean_entry` and `clean_info` every value before it is used. What cannot be used is dropped
and counted (`Problems`: one warning line per kind with the first examples); a file that cannot be
trusted at all is refused in one line. boxes/md_file.py matches the entries to the scanned inputs.
"""
from __future__ import annotations

import json
import math
import os
from datetime import datetime
from pathlib import Path
from typing import Iterable

from patou.atomic import atomic_output
from patou.formats.jsonfile import MAX_JSON_BYTES, Problems, kind, read_json, unit
from patou.formats.taxa import descriptions
from patou.record import ImageRecord, in_output_order

FORMAT_VERSION = "1.6"
# What MegaDetector's own tools treat as a video (megadetector.detection.video_utils.is_video_file):
# such an entry must carry frame_rate and frames_processed, and each of its boxes a frame_number.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mpeg", ".mpg", ".mov", ".mkv", ".flv")
MIN_CLASSIFICATION_CONF = 0.01  # below this a class is noise; the top class is always kept
BBOX_EPS = 1e-3  # rounding to 4 decimals may push x+w a hair above 1


MAX_MD_BYTES = MAX_JSON_BYTES  # a 2-million-photo MD file is well under 1 GB; more is not a batch file
EXAMPLES = Problems.EXAMPLES  # examples quoted in a summary line


class MdProblems(Problems):
    """Problems of an MD file read in: each line a warning naming the option and the file."""

    def __init__(self, source: str):
        super().__init__(f"warning: --detections {source}")


def read_md_file(path: str | Path) -> tuple[dict, str]:
    """The parsed file and its sha256 (first 16 hex), or a one-line ValueError; only the file's
    frame is checked here (see `md_entries` for its entries)."""
    data, digest = read_json(path, "--detections")
    check_md_frame(data, path)
    return data, digest


def check_md_frame(data, path) -> None:
    """A one-line ValueError unless `data` is the frame of a MegaDetector batch file."""
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("detection_categories"), dict):
        raise ValueError(f"--detections {path}: not a MegaDetector batch file (needs 'images' and 'detection_categories')"
                         " nor SpeciesNet predictions (needs 'predictions')")
    info = data.get("info", {})
    if not isinstance(info, dict):
        raise ValueError(f"--detections {path}: 'info' is {kind(info)}, not an object: not a MegaDetector batch file")
    for k, v in data["detection_categories"].items():
        if not isinstance(v, str) or not v.strip():
            raise ValueError(f"--detections {path}: detection_categories {k!r} is named {kind(v)}, not a text")
    version = info.get("format_version", "1.0")
    if not isinstance(version, (str, int, float)) or not str(version).startswith("1."):
        raise ValueError(f"--detections {path}: format_version {str(version)[:40]} is not supported (1.0-1.6)")


def _show(v, n: int = 20) -> str:
    return (repr(v) if isinstance(v, str) else str(v))[:n]


def box_problem(d, cats) -> str | None:
    """Why a detection cannot be used (None: it can); `cats` the category ids the file names."""
    if not isinstance(d, dict):
        return f"{kind(d)}, not an object"
    if str(d.get("category")) not in cats:
        return f"category {_show(d.get('category'))} not in detection_categories"
    if not unit(d.get("conf")):
        return f"conf {_show(d.get('conf'))} is not a number in [0, 1]"
    b = d.get("bbox")
    if not (isinstance(b, list) and len(b) == 4 and all(unit(v) for v in b)):
        return f"bbox {_show(b, 60)} is not 4 numbers in [0, 1]"
    if b[2] <= 0 or b[3] <= 0:
        return f"bbox {b} has no size"
    if b[0] + b[2] > 1 + BBOX_EPS or b[1] + b[3] > 1 + BBOX_EPS:
        return f"bbox {b} leaves the image"
    return None


def md_entries(data: dict, source: str) -> tuple[dict[str, tuple[int, dict]], Problems]:
    """The file's entries by normalised `file` ((index, raw entry), the first of each file), and
    Problems counting the entries left out: no `file`, a path with `..`, a file listed again.

    Only names are looked at here, so a file of any size costs one pass: the rest of an entry is
    checked (`clean_entry`) only once it matched a scanned input. Nothing here touches the disk."""
    problems = MdProblems(source)
    entries: dict[str, tuple[int, dict]] = {}
    for i, e in enumerate(data["images"]):
        name = e.get("file") if isinstance(e, dict) else None
        if not isinstance(name, str) or not name.strip() or "\0" in name:
            problems.add("entries without a 'file' path, ignored", f"images[{i}]")
            continue
        f = _norm(name)
        if ".." in f and ".." in f.split("/"):
            problems.add("entries whose path climbs out of the folder (..), never matched", f"images[{i}] {name[:80]!r}")
        elif f in entries:
            problems.add("entries listing a file already listed, ignored (the first kept)",
                         f"images[{i}] {name[:80]!r} (first at images[{entries[f][0]}])")
        else:
            entries[f] = (i, e)
    return entries, problems


def clean_entry(i: int, e: dict, cats, problems: Problems) -> dict | None:
    """{file, failure, detections} of entry `images[i]` with only its valid boxes (each one left
    out counted in `problems`), or None when the entry itself is of the wrong shape."""
    where = f"images[{i}] {e['file'][:80]!r}"
    failure = e.get("failure")
    if isinstance(failure, str):
        failure = " ".join(failure.split())[:200] or None  # one line in every log; "" is no failure
    elif failure is not None:
        problems.add("entries whose 'failure' is not a text, ignored (analysed as if not listed)", where)
        return None
    dets = e.get("detections")
    if failure is None and not isinstance(dets, list):
        problems.add("entries whose 'detections' is not a list, ignored (analysed as if not listed)",
                     f"{where}: {kind(dets)}")
        return None
    kept = []
    for j, d in enumerate(dets if failure is None else []):
        why = box_problem(d, cats)
        if why:
            problems.add("boxes dropped", f"{where} detection {j}: {why}")
        else:
            kept.append({"category": str(d["category"]), "conf": float(d["conf"]), "bbox": [float(v) for v in d["bbox"]]})
    return {"file": e["file"], "failure": failure, "detections": kept}


def clean_info(info: dict, problems: Problems) -> dict:
    """What patou uses of `info`, each value checked: the detector's name, its thresholds in [0, 1]."""
    out = {k: info[k] for k in ("format_version", "detector") if isinstance(info.get(k), (str, int, float))
           and not isinstance(info.get(k), bool)}
    meta = info.get("detector_metadata")
    if meta is None:
        return out
    if not isinstance(meta, dict):
        problems.add("info.detector_metadata ignored", f"{kind(meta)}, not an object")
        return out
    clean = {}
    for k in ("typical_detection_threshold", "conservative_detection_threshold"):
        if k in meta:
            if unit(meta[k]):
                clean[k] = float(meta[k])
            else:
                problems.add(f"info.detector_metadata.{k} ignored", f"{_show(meta[k])} is not a number in [0, 1]")
    if isinstance(meta.get("megadetector_version"), str):
        clean["megadetector_version"] = meta["megadetector_version"][:200]
    out["detector_metadata"] = clean
    return out


def _norm(p: str) -> str:
    """Forward slashes, no empty or '.' parts (MD's own paths are already so: returned as they are)."""
    if "\\" not in p and "//" not in p and "/./" not in p and not p.startswith("./") and not p.endswith(("/", "/.")):
        return p
    p = p.replace("\\", "/")
    parts = [x for x in p.split("/") if x not in ("", ".")]
    return ("/" if p.startswith("/") else "") + "/".join(parts)


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
                            classifier_metadata: dict | None = None, taxa: dict[str, dict] | None = None) -> Path:
    """Write every record (all boxes, even low-confidence ones: users threshold later).

    Thresholds default to the card's `extra` values, then to MegaDetector v5's 0.2 / 0.05. With
    `taxa` (label -> taxon table row, formats.taxa), every class also gets SpeciesNet's seven-field
    `classification_category_descriptions`, which SpeciesNet's, AddaxAI's and CamTrapTools' readers
    take as its taxonomy.
    """
    records = in_output_order(records)
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
        video = _video_fields(r, f)
        if r.failure:
            images.append({"file": f, **video, "failure": r.failure, "detections": None})
            continue
        dets = []
        for d in sorted(r.detections, key=lambda d: (-d.conf, d.frame_number or 0)):
            det = {"category": det_ids[d.category], "conf": round(float(d.conf), 3), "bbox": _bbox(d.bbox)}
            if d.frame_number is not None:
                det["frame_number"] = int(d.frame_number)
            if d.scores:
                ranked = sorted(d.scores.items(), key=lambda kv: -kv[1])
                det["classifications"] = [[cls_ids[k], round(float(v), 3)] for i, (k, v) in enumerate(ranked)
                                          if i == 0 or v >= MIN_CLASSIFICATION_CONF]
            dets.append(det)
        images.append({"file": f, **video, "detections": dets})

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
        **({"classification_category_descriptions": {v: d for v, d in zip(cls_ids.values(),
                                                                           descriptions(list(cls_ids), taxa).values())}}
           if taxa is not None else {}),
        "images": images,
    }
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return Path(path)


def _video_fields(r: ImageRecord, f: str) -> dict:
    """frame_rate and frames_processed for a video (the format requires both, even for a video
    that failed: frame_rate 0.0 then says it is unknown)."""
    if r.frames_processed is None and r.frame_rate is None and not f.lower().endswith(VIDEO_SUFFIXES):
        return {}
    return {"frame_rate": float(r.frame_rate or 0.0), "frames_processed": [int(n) for n in r.frames_processed or []]}


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
        if not (isinstance(k, str) and k.isascii() and k.isdigit()):
            problems.append(f"{key}: id {k!r} is not a non-negative integer string")
        if not isinstance(v, str) or not v.strip():
            problems.append(f"{key}: name for id {k!r} must be a non-blank string")
    return cats


def validate_megadetector_json(data: dict) -> list[str]:
    """Problems found against the format's rules; an empty list means the file is valid.

    The rules of https://lila.science/megadetector-output-format (format 1.6) and of MegaDetector's
    own postprocessing/validate_batch_results.py, checked all at once rather than first-error-only:
    required keys, category ids as non-negative integer strings with non-blank names, float
    confidences in [0, 1], normalised boxes inside the image, classifications sorted and mapped,
    `failure` with `detections: null`, and for videos `frame_rate`, `frames_processed` and each
    box's `frame_number`.
    """
    p: list[str] = []
    if not isinstance(data, dict):
        return ["top level must be an object"]
    _check_info(data.get("info"), p)
    if "detection_categories" not in data:
        p.append("detection_categories missing (required)")
    det_cats = _check_categories(data, "detection_categories", p) if "detection_categories" in data else {}
    cls_cats = _check_categories(data, "classification_categories", p) if "classification_categories" in data else {}
    if "classification_category_descriptions" in data:
        desc = _check_categories(data, "classification_category_descriptions", p)
        if set(desc) != set(cls_cats):
            p.append("classification_category_descriptions must use the ids of classification_categories")
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
        failed = im.get("failure") is not None
        dets = im.get("detections")
        frames = _check_video_entry(im, failed, p) if f.lower().endswith(VIDEO_SUFFIXES) else None
        if failed:
            if not isinstance(im["failure"], str):
                p.append(f"{f}: failure must be a string")
            if dets is not None:
                p.append(f"{f}: failure set but detections is not null")
            continue
        if not isinstance(dets, list):
            p.append(f"{f}: detections must be a list (null only with a failure)")
            continue
        for j, d in enumerate(dets):
            p += [f"{f} detection {j}: {m}" for m in _check_detection(d, det_cats, cls_cats, frames)]
    return p


def _check_info(info, p: list[str]) -> None:
    if not isinstance(info, dict):
        p.append("info missing or not an object")
        return
    if info.get("format_version") != FORMAT_VERSION:
        p.append(f"info.format_version must be the string {FORMAT_VERSION!r}, got {info.get('format_version')!r}")
    for key in ("detector", "classifier", "detection_completion_time", "classification_completion_time",
                "summary_report"):
        if info.get(key) is not None and not isinstance(info[key], str):
            p.append(f"info.{key} must be a string")
    for key in ("detector_metadata", "classifier_metadata"):
        meta = info.get(key)
        if meta is None:
            continue
        if not isinstance(meta, dict):
            p.append(f"info.{key} must be an object")
            continue
        for t in ("typical_detection_threshold", "conservative_detection_threshold",
                  "typical_classification_threshold"):
            if t in meta and not (_is_num(meta[t]) and 0.0 <= meta[t] <= 1.0):
                p.append(f"info.{key}.{t} {meta[t]!r} is not a number in [0, 1]")


def _check_video_entry(im: dict, failed: bool, p: list[str]) -> set | None:
    """A video's own fields; returns its processed frame numbers (None when unusable)."""
    f = im["file"]
    rate = im.get("frame_rate")
    if "frame_rate" not in im:
        p.append(f"{f}: video without frame_rate")
    elif not (_is_num(rate) and (rate >= 0 if failed else rate > 0)):
        p.append(f"{f}: frame_rate {rate!r} is not a number > 0")
    if "frames_processed" not in im:
        if not failed:
            p.append(f"{f}: video without frames_processed")
        return None
    frames = im["frames_processed"]
    if not (isinstance(frames, list)
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in frames)):
        p.append(f"{f}: frames_processed must be a list of frame numbers (integers >= 0)")
        return None
    if len(set(frames)) != len(frames):
        p.append(f"{f}: frames_processed lists a frame twice")
    return set(frames)


def _check_detection(d, det_cats: dict, cls_cats: dict, frames: set | None = None) -> list[str]:
    """One box; `frames` is the video's frames_processed (None for a photo)."""
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
    if frames is not None or "frame_number" in d:
        n = d.get("frame_number")
        if not (isinstance(n, int) and not isinstance(n, bool) and n >= 0):
            p.append(f"frame_number {n!r} is not an integer >= 0 (required for a video's boxes)")
        elif frames is not None and n not in frames:
            p.append(f"frame_number {n} is not in frames_processed")
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
