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
from patou.formats.megadetector import box_problem
from patou.formats.paths import climbs, norm
from patou.formats.taxa import parse_speciesnet

CATEGORIES = {"1": "animal", "2": "human", "3": "vehicle"}  # SpeciesNet's (MegaDetector's) detector classes
WHOLE_IMAGE = "0"  # the pseudo-box of a whole-image classifier: not a detection


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
    preds, info, problems = from_data(data, f"warning: {option} {path}")
    return preds, info, digest, problems


def from_data(data: dict, source: str) -> tuple[dict[str, Prediction], dict, Problems]:
    """(predictions, info with the model versions, problems) of a parsed predictions file."""
    info = {k: str(v)[:40] for k, v in data["info"].items() if isinstance(v, (str, int, float))} \
        if isinstance(data.get("info"), dict) else {}
    info["model_versions"] = sorted({str(p["model_version"])[:40] for p in data["predictions"]
                                     if isinstance(p, dict) and isinstance(p.get("model_version"), (str, int, float))})
    preds, problems = predictions(data, source)
    return preds, info, problems


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
            why = box_problem(d, CATEGORIES)
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


def as_megadetector(preds: dict[str, Prediction], info: dict) -> dict:
    """The same boxes as a MegaDetector batch file (what the MD box source reads)."""
    versions = info.get("model_versions") or []
    return {
        "info": {"format_version": "1.4", "detector": " ".join(["SpeciesNet", *versions])},
        "detection_categories": dict(CATEGORIES),
        "images": [{"file": p.file, "failure": p.failure, "detections": None if p.failure else p.detections}
                   for p in preds.values()],
    }
