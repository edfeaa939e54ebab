"""Boxes from elsewhere: a MegaDetector batch-output file (`--detections`) or one box per image
(`--no-detector`), as the same `Detection` records the bundled detector makes.

The file's `file` entries are matched to the scanned inputs by path under the input root (as
patou writes them), then by a path that ends with it, then by a unique file name; anything
ambiguous is an error naming both files. `person` and `vehicle` boxes are decided here (label
human / vehicle, the file's confidence as the score): the classifier never sees them.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..record import Detection, ImageRecord

# MegaDetector category names -> patou label decided without the classifier
DIRECT_LABELS = {"person": "human", "human": "human", "vehicle": "vehicle"}
WHOLE_IMAGE = (0.0, 0.0, 1.0, 1.0)


@dataclass
class GivenBoxes:
    """Boxes per input file (absolute path -> MD detections), and what the file said about itself.

    Picklable (Ray workers get it with the model options); `boxes()` returns fresh Detections.
    """

    source: str = ""  # the file's path, or "no-detector"
    digest: str = ""
    categories: dict[str, str] = field(default_factory=dict)  # MD category id -> name
    by_path: dict[str, list[dict]] = field(default_factory=dict)
    whole_image: bool = False  # --no-detector: one box covering every photo or frame
    info: dict = field(default_factory=dict)

    def covers(self, record: ImageRecord) -> bool:
        return self.whole_image or str(record.path) in self.by_path

    def boxes(self, record: ImageRecord) -> list[Detection]:
        if self.whole_image:
            return [Detection(WHOLE_IMAGE, 1.0)]
        out = []
        for d in self.by_path.get(str(record.path), []):
            name = self.categories.get(str(d.get("category")), str(d.get("category")))
            out.append(Detection(tuple(float(v) for v in d["bbox"]), float(d["conf"]), name))
        return out

    def key(self) -> str:
        """For the checkpoint fingerprint: other boxes, other results."""
        return "no-detector" if self.whole_image else f"detections:{self.digest}"

    @property
    def typical_threshold(self) -> float | None:
        v = (self.info.get("detector_metadata") or {}).get("typical_detection_threshold")
        return float(v) if isinstance(v, (int, float)) else None


def no_detector() -> GivenBoxes:
    return GivenBoxes(source="no-detector", whole_image=True)


def read_md_file(path: str | Path) -> tuple[dict, str]:
    """The parsed file and its sha256 (first 16 hex), or a one-line ValueError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ValueError(f"--detections {path}: cannot read ({e.strerror or e})") from None
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"--detections {path}: not JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("detection_categories"), dict):
        raise ValueError(f"--detections {path}: not a MegaDetector batch file (needs 'images' and 'detection_categories')")
    version = str((data.get("info") or {}).get("format_version", "1.0"))
    if not version.startswith("1."):
        raise ValueError(f"--detections {path}: format_version {version} is not supported (1.0-1.6)")
    return data, hashlib.sha256(raw).hexdigest()[:16]


def _norm(p: str) -> str:
    p = p.replace("\\", "/")
    while p.startswith("./"):
        p = p[2:]
    return p


def match(path: str | Path, records: list[ImageRecord]) -> tuple[GivenBoxes, list[ImageRecord], list[str]]:
    """Match the MD file at `path` to the scanned `records`.

    Returns (the boxes per matched input, new `failure` records for entries whose file is not on
    disk, notes for the log); an input the file lists as a failure gets that failure. Raises
    ValueError for a bad file or an ambiguous match.
    """
    data, digest = read_md_file(path)
    cats = {str(k): str(v).strip().lower() for k, v in data["detection_categories"].items()}
    entries: dict[str, dict] = {}
    for e in data["images"]:
        if isinstance(e, dict) and isinstance(e.get("file"), str):
            entries.setdefault(_norm(e["file"]), e)
    by_name: dict[str, list[str]] = defaultdict(list)
    for f in entries:
        by_name[f.rsplit("/", 1)[-1]].append(f)

    roots = sorted({r.root for r in records}, key=str)
    base = Path(os.path.commonpath([str(r) for r in roots])) if roots else None

    def candidates(r: ImageRecord) -> list[str]:
        keys = [r.rel, Path(os.path.relpath(r.path, base)).as_posix() if base else r.rel, r.path.as_posix()]
        exact = [k for k in dict.fromkeys(keys) if k in entries]
        if exact:
            return exact[:1]
        tail = [f for f in by_name.get(r.path.name, []) if f.endswith("/" + r.rel)]
        return tail or by_name.get(r.path.name, [])

    given = GivenBoxes(source=str(path), digest=digest, categories=cats, info=dict(data.get("info") or {}))
    used: dict[str, ImageRecord] = {}
    for r in records:
        found = candidates(r)
        if len(found) > 1:
            raise ValueError(f"--detections {path}: {r.path} matches both {found[0]!r} and {found[1]!r}; "
                             "give the input folder MegaDetector ran on so paths match exactly")
        if not found:
            continue
        f = found[0]
        if f in used:
            raise ValueError(f"--detections {path}: entry {f!r} matches both {used[f].path} and {r.path}; "
                             "give the input folder MegaDetector ran on so paths match exactly")
        used[f] = r
        e = entries[f]
        if e.get("failure"):  # MD could not read it: a failure row here too
            r.failure = f"MegaDetector: {e['failure']}"
        else:
            given.by_path[str(r.path)] = [d for d in e.get("detections") or [] if _valid_box(d)]

    # Entries no input matched: their file is not on disk (under the first input root, as MD saw it)
    missing = []
    root = roots[0] if len(roots) == 1 else base
    for f, e in entries.items():
        if f in used or root is None:
            continue
        p = Path(f) if Path(f).is_absolute() else root / f
        site = "/".join(Path(f).parent.parts) or "." if not Path(f).is_absolute() else ""
        missing.append(ImageRecord(path=p, root=root, site=site,
                                   failure=f"listed in {Path(path).name} but not found on disk"))
    other = Counter(cats.get(str(d.get("category")), "?") for boxes in given.by_path.values() for d in boxes
                    if cats.get(str(d.get("category"))) not in ("animal", *DIRECT_LABELS))
    notes = [f"detections from {path}: {len(used)} of {len(records)} inputs listed"
             + (f"; {len(records) - len(used)} not listed are analysed with the bundled detector"
                if len(used) < len(records) else "")
             + (f"; {len(missing)} listed files not found on disk (failure rows)" if missing else "")]
    if other:
        notes.append("boxes of categories patou does not classify kept as they are: "
                     + ", ".join(f"{k} ({n})" for k, n in sorted(other.items())))
    if not used and records:
        raise ValueError(f"--detections {path}: none of its {len(entries)} entries matches an input file; "
                         "give the folder MegaDetector ran on")
    return given, missing, notes


def _valid_box(d) -> bool:
    try:
        return len(d["bbox"]) == 4 and isinstance(float(d["conf"]), float)
    except (KeyError, TypeError, ValueError):
        return False


def decide_direct(d: Detection, labels: list[str]) -> bool:
    """person/vehicle boxes: the label at the file's confidence, no classifier. True when decided."""
    label = DIRECT_LABELS.get(d.category)
    if label is None:
        return False
    d.scores = {k: 0.0 for k in labels}
    d.scores[label] = round(float(d.conf), 6)
    return True


def detector_summary(given: GivenBoxes | None, bundled: dict) -> dict:
    """The detector megadetector.json names: the file's own when its boxes were used."""
    if given is None or given.whole_image:
        return bundled if given is None else {**bundled, "file": "none (--no-detector: one box per image)"}
    names = [v for _, v in sorted(given.categories.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0)]
    extra = dict(bundled.get("extra") or {})
    meta = given.info.get("detector_metadata") or {}
    for k in ("megadetector_version", "typical_detection_threshold", "conservative_detection_threshold"):
        if k in meta:
            extra[k] = meta[k]
    return {**bundled, "file": str(given.info.get("detector") or Path(given.source).name), "labels": names,
            "extra": extra}
