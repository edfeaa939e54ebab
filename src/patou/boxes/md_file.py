"""Boxes from a MegaDetector batch-output file (`--detections`), as the same `Detection` records the
bundled detector makes (the file is read and its values checked by formats/megadetector.py).

The file's `file` entries are matched to the scanned inputs by path under the input root (as
patou writes them), then by a path that ends with it, then by a unique file name; anything
ambiguous is an error naming both files. `person` and `vehicle` boxes are decided without the
classifier (label human / vehicle, the file's confidence as the score: decide.decide_direct).
Only the scanned files are ever looked up: an entry is a name, never a path opened.
"""
from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..decide import DIRECT_LABELS
from ..formats import speciesnet
from ..formats.jsonfile import read_json
from ..formats.megadetector import EXAMPLES, check_md_frame, clean_entry, clean_info, md_entries
from ..formats.paths import Ambiguous, match_entries
from ..formats.speciesnet import is_speciesnet
from ..record import Detection, ImageRecord
from ..video import is_video
from .source import BoxSource


@dataclass
class MdFileBoxes(BoxSource):
    """Boxes per input file (absolute path -> MD detections), and what the file said about itself.

    Picklable (Ray workers get it with the run options); `prepare` returns fresh Detections. Videos
    and files the file does not list get the bundled detector's boxes.
    """

    source: str = ""  # the file's path
    digest: str = ""
    categories: dict[str, str] = field(default_factory=dict)  # MD category id -> name
    by_path: dict[str, list[dict]] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    labels: dict[str, tuple] = field(default_factory=dict)  # input path -> (SpeciesNet's label, its score)

    @property
    def key(self) -> str:
        return f"detections:{self.digest}"

    def covers(self, record: ImageRecord) -> bool:
        return not is_video(record.path) and str(record.path) in self.by_path

    def prepare(self, record: ImageRecord, img) -> list[Detection]:
        out = []
        for d in self.by_path.get(str(record.path), []):
            name = self.categories.get(str(d.get("category")), str(d.get("category")))
            out.append(Detection(tuple(float(v) for v in d["bbox"]), float(d["conf"]), name))
        return out

    def find(self, prepared: list[Detection], img) -> list[Detection]:
        return prepared

    def classifies(self, d: Detection) -> bool:
        return d.category == "animal"  # person/vehicle: decided at the file's confidence; the rest kept

    @property
    def typical_threshold(self) -> float | None:
        v = (self.info.get("detector_metadata") or {}).get("typical_detection_threshold")
        return float(v) if isinstance(v, (int, float)) else None

    def detector_summary(self, bundled: dict) -> dict:
        """The file's own detector, for megadetector.json."""
        names = [v for _, v in sorted(self.categories.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0)]
        extra = dict(bundled.get("extra") or {})
        meta = self.info.get("detector_metadata") or {}
        for k in ("megadetector_version", "typical_detection_threshold", "conservative_detection_threshold"):
            if k in meta:
                extra[k] = meta[k]
        return {**bundled, "file": str(self.info.get("detector") or Path(self.source).name), "labels": names,
                "extra": extra}

    def run_info(self) -> dict:
        return {"source": self.source, "sha256_16": self.digest, "detector": self.info.get("detector"),
                "format": self.info.get("format", "megadetector"), "format_version": self.info.get("format_version"),
                "files_listed_and_found": len(self.by_path)}


def match(path: str | Path, records: list[ImageRecord]) -> tuple[MdFileBoxes, list[str]]:
    """Match the MD file at `path` to the scanned `records`: (the boxes per matched input, notes
    and warnings for the log).

    Only the scanned files are ever looked up: an entry that matches none of them (not among the
    inputs, an absolute path elsewhere, `..`) is counted in one line, never becomes a record,
    never is opened. An input the file lists as a failure gets that failure. Raises ValueError
    for a file that cannot be trusted at all or an ambiguous match.
    """
    data, digest = read_json(path, "--detections")
    labels, sn_lines, sn = {}, [], is_speciesnet(data)
    if sn:  # SpeciesNet's own file: the same boxes, its labels kept beside patou's
        preds, sn_info, sn_problems = speciesnet.from_data(data, f"warning: --detections {path}")
        data = speciesnet.as_megadetector(preds, sn_info)
        labels = {f: (p.label, p.score) for f, p in preds.items() if p.label is not None}
        sn_lines = sn_problems.lines()
    else:
        check_md_frame(data, path)
    cats = {str(k): v.strip().lower() for k, v in data["detection_categories"].items()}
    entries, problems = md_entries(data, str(path))
    given = MdFileBoxes(source=str(path), digest=digest, categories=cats,
                        info=clean_info(data.get("info", {}), problems))
    if sn:  # run.json says which file it was: SpeciesNet's, in its own format version (None: unstated)
        given.info.update(format="speciesnet", format_version=sn_info.get("format_version"))
    try:
        used = match_entries(entries, records, hint="give the input folder MegaDetector ran on so paths match exactly")
    except Ambiguous as e:
        raise ValueError(f"--detections {path}: {e}") from None
    listed = 0
    for f, r in used.items():
        e = clean_entry(*entries[f], cats, problems)
        if e is None:  # an entry of the wrong shape: the photo is analysed as if it were not listed
            continue
        listed += 1
        if e["failure"]:  # MD could not read it: a failure row here too
            r.failure = e["failure"] if e["failure"].startswith("SpeciesNet:") else f"MegaDetector: {e['failure']}"
        else:
            given.by_path[str(r.path)] = e["detections"]
        if f in labels:
            given.labels[str(r.path)] = labels[f]

    unmatched = len(entries) - len(used)
    if not used and records:
        raise ValueError(f"--detections {path}: none of its {len(entries)} entries matches an input file; "
                         "give the folder MegaDetector ran on")
    other = Counter(cats.get(d["category"], "?") for boxes in given.by_path.values() for d in boxes
                    if cats.get(d["category"]) not in ("animal", *DIRECT_LABELS))
    notes = [f"detections from {path}{' (SpeciesNet predictions)' if sn else ''}: {listed} of {len(records)} inputs listed"
             + (f"; {len(records) - listed} not listed are analysed with the bundled detector"
                if listed < len(records) else "")]
    if unmatched:
        examples = list(itertools.islice((e["file"][:80] for f, (_, e) in entries.items() if f not in used), EXAMPLES))
        notes.append(f"warning: --detections {path}: entries that match no input file, ignored (not analysed, "
                     f"not sorted, not opened) ({unmatched}): " + ", ".join(map(repr, examples))
                     + (" ..." if unmatched > len(examples) else ""))
    notes += sn_lines + problems.lines()
    if other:
        notes.append("boxes of categories patou does not classify kept as they are: "
                     + ", ".join(f"{k} ({n})" for k, n in sorted(other.items())))
    return given, notes
