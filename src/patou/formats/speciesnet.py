"""SpeciesNet's predictions JSON (`python -m speciesnet.scripts.run_model --predictions_json`) as
boxes for patou (`--detections predictions.json`).

Both layouts SpeciesNet has written are read: the one its README documents (per image
`detections`, `classifications`, `prediction`, `prediction_score`) and format 20261015 (per box
`raw_classifications` and `processed_classification`). Its boxes are MegaDetector's (category
1 animal, 2 human, 3 vehicle; normalised [x, y, w, h]), so they become the same records an MD
file gives; its own label for each photo (the ensemble's `prediction`, or the best box's
processed classification) is kept beside patou's for comparison, never used to decide.

The file may be hostile: a bounded regular file, every entry and box checked (finite numbers in
[0, 1], boxes inside the image), paths only ever matched against the scanned inputs (`..` never);
each kind of problem is one line with a few examples.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from patou.formats.jsonfile import Problems, kind, read_json, unit
from patou.formats.paths import climbs, norm
from patou.formats.taxa import parse_speciesnet

CATEGORIES = {"1": "animal", "2": "human", "3": "vehicle"}  # SpeciesNet's (MegaDetector's) detector classes
WHOLE_IMAGE = "0"  # the pseudo-box of a whole-image classifier: not a detection
BBOX_EPS = 1e-3  # boxes are rounded to 4 decimals: x + w may pass 1 by a hair


@dataclass
class Prediction:
    """What SpeciesNet said of one photo, as patou keeps it."""

    file: str  # as the file writes it
    failure: str | None
    detections: list[dict]  # MD-style {"category", "conf", "bbox"}, checked
    label: str | None = None  # SpeciesNet's own label: its common name (`african elephant`)
    taxon: str | None = None  # its scientific name when it has one (`Loxodonta africana`)
    score: float | None = None


def is_speciesnet(data) -> bool:
    return isinstance(data, dict) and isinstance(data.get("predictions"), list) and "images" not in data


def read_speciesnet(path: str | Path, option: str = "--detections") -> tuple[dict[str, Prediction], dict, str, Problems]:
    """({normalised file: Prediction}, info, sha256[:16], problems) of a SpeciesNet predictions file;
    a one-line ValueError when the file cannot be used at all."""
    data, digest = read_json(path, option)
    if not is_speciesnet(data):
        raise ValueError(f"{option} {path}: not a SpeciesNet predictions file (needs a 'predictions' list)")
    info = dict(data["info"]) if isinstance(data.get("info"), dict) else {}
    info["model_versions"] = sorted({str(p["model_version"])[:40] for p in data["predictions"]
                                     if isinstance(p, dict) and isinstance(p.get("model_version"), (str, int, float))})
    preds, problems = predictions(data, f"{option} {path}")
    return preds, info, digest, problems


def predictions(data: dict, source: str) -> tuple[dict[str, Prediction], Problems]:
    """The usable entries of a parsed predictions file; everything left out is counted in Problems."""
    problems = Problems(source)
    out: dict[str, Prediction] = {}
    first: dict[str, int] = {}
    for i, p in enumerate(data["predictions"]):
        f = p.get("filepath") if isinstance(p, dict) else None
        if not isinstance(f, str) or not f.strip() or "\0" in f:
            problems.add("entries without a 'filepath', ignored", f"predictions[{i}]")
            continue
        where = f"predictions[{i}] {f[:80]!r}"
        if climbs(f):
            problems.add("entries whose path climbs out of the folder (..), never matched", where)
            continue
        key = norm(f)
        if key in first:
            problems.add("entries listing a file already listed, ignored (the first kept)",
                         f"{where} (first at predictions[{first[key]}])")
            continue
        failures = p.get("failures")
        if failures is not None and not (isinstance(failures, list) and all(isinstance(x, str) for x in failures)):
            problems.add("entries whose 'failures' is not a list of texts, ignored", where)
            continue
        dets = p.get("detections")
        if "DETECTOR" in (failures or []):  # SpeciesNet could not read it: a failure row here too
            out[key] = Prediction(f, "SpeciesNet: the detector failed on this file", [])
            first[key] = i
            continue
        if not isinstance(dets, list):
            problems.add("entries without a 'detections' list (a classifier-only run?), analysed as if not listed",
                         f"{where}: {kind(dets)}")
            continue
        first[key] = i
        kept, processed = [], []
        for j, d in enumerate(dets):
            if isinstance(d, dict) and str(d.get("category")) == WHOLE_IMAGE:
                processed.append((2.0, d.get("processed_classification")))  # the whole image's own verdict first
                continue
            why = _box_problem(d)
            if why:
                problems.add("boxes dropped", f"{where} detection {j}: {why}")
                continue
            kept.append({"category": str(d["category"]), "conf": float(d["conf"]), "bbox": [float(v) for v in d["bbox"]]})
            processed.append((float(d["conf"]), d.get("processed_classification")))
        pred = Prediction(f, None, kept)
        said = _label_of(p, processed)
        if said is not None:
            text, score = said
            if isinstance(text, str) and text.strip() and (score is None or unit(score)):
                pred.taxon, pred.label = parse_speciesnet(text)
                pred.score = None if score is None else float(score)
            else:
                problems.add("labels that are not a text with a score in [0, 1], left out", where)
        out[key] = pred
    return out, problems


def _label_of(p: dict, processed: list[tuple[float, object]]) -> tuple[object, object] | None:
    """(class text, score): the ensemble's `prediction` (README layout), else the processed
    classification of the whole image or of the most confident box (format 20261015)."""
    if "prediction" in p:
        return p.get("prediction"), p.get("prediction_score")
    for _, pc in sorted(processed, key=lambda t: -t[0]):
        if isinstance(pc, dict) and "class" in pc:
            return pc.get("class"), pc.get("score")
    return None


def _box_problem(d) -> str | None:
    """Why a detection cannot be used (None: it can)."""
    if not isinstance(d, dict):
        return f"{kind(d)}, not an object"
    if str(d.get("category")) not in CATEGORIES:
        return f"category {str(d.get('category'))[:20]!r} is not 1, 2 or 3 (animal, human, vehicle)"
    if not unit(d.get("conf")):
        return f"conf {str(d.get('conf'))[:20]} is not a number in [0, 1]"
    b = d.get("bbox")
    if not (isinstance(b, list) and len(b) == 4 and all(unit(v) for v in b)):
        return f"bbox {str(b)[:60]} is not 4 numbers in [0, 1]"
    if b[2] <= 0 or b[3] <= 0:
        return f"bbox {b} has no size"
    if b[0] + b[2] > 1 + BBOX_EPS or b[1] + b[3] > 1 + BBOX_EPS:
        return f"bbox {b} leaves the image"
    return None


def as_megadetector(preds: dict[str, Prediction], info: dict) -> dict:
    """The same boxes as a MegaDetector batch file (what the MD box source reads)."""
    versions = info.get("model_versions") or []
    return {
        "info": {"format_version": "1.4", "detector": " ".join(["SpeciesNet", *versions]),
                 "speciesnet_format_version": str(info.get("format_version", ""))[:40]},
        "detection_categories": dict(CATEGORIES),
        "images": [{"file": p.file, "failure": p.failure, "detections": None if p.failure else p.detections}
                   for p in preds.values()],
    }
