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
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..decide import DIRECT_LABELS
from ..formats.megadetector import EXAMPLES, clean_entry, clean_info, md_entries, read_md_file
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
                "format_version": self.info.get("format_version"), "files_listed_and_found": len(self.by_path)}


def match(path: str | Path, records: list[ImageRecord]) -> tuple[MdFileBoxes, list[str]]:
    """Match the MD file at `path` to the scanned `records`: (the boxes per matched input, notes
    and warnings for the log).

    Only the scanned files are ever looked up: an entry that matches none of them (not among the
    inputs, an absolute path elsewhere, `..`) is counted in one line, never becomes a record,
    never is opened. An input the file lists as a failure gets that failure. Raises ValueError
    for a file that cannot be trusted at all or an ambiguous match.
    """
    data, digest = read_md_file(path)
    cats = {str(k): v.strip().lower() for k, v in data["detection_categories"].items()}
    entries, problems = md_entries(data, str(path))
    by_name: dict[str, list[str]] = {}  # file name -> entries, built only if a path does not match as it is

    def same_name(name: str) -> list[str]:
        if not by_name and entries:
            index = defaultdict(list)
            for f in entries:
                index[f.rsplit("/", 1)[-1]].append(f)
            by_name.update(index)
        return by_name.get(name, [])

    roots = sorted({r.root for r in records}, key=str)
    base = Path(os.path.commonpath([str(r) for r in roots])) if roots else None

    def candidates(r: ImageRecord) -> list[str]:
        keys = [r.rel, Path(os.path.relpath(r.path, base)).as_posix() if base else r.rel, r.path.as_posix()]
        exact = [k for k in dict.fromkeys(keys) if k in entries]
        if exact:
            return exact[:1]
        named = same_name(r.path.name)
        tail = [f for f in named if f.endswith("/" + r.rel)]
        return tail or named

    given = MdFileBoxes(source=str(path), digest=digest, categories=cats,
                        info=clean_info(data.get("info", {}), problems))
    used: dict[str, ImageRecord] = {}
    listed = 0
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
        e = clean_entry(*entries[f], cats, problems)
        if e is None:  # an entry of the wrong shape: the photo is analysed as if it were not listed
            continue
        listed += 1
        if e["failure"]:  # MD could not read it: a failure row here too
            r.failure = f"MegaDetector: {e['failure']}"
        else:
            given.by_path[str(r.path)] = e["detections"]

    unmatched = len(entries) - len(used)
    if not used and records:
        raise ValueError(f"--detections {path}: none of its {len(entries)} entries matches an input file; "
                         "give the folder MegaDetector ran on")
    other = Counter(cats.get(d["category"], "?") for boxes in given.by_path.values() for d in boxes
                    if cats.get(d["category"]) not in ("animal", *DIRECT_LABELS))
    notes = [f"detections from {path}: {listed} of {len(records)} inputs listed"
             + (f"; {len(records) - listed} not listed are analysed with the bundled detector"
                if listed < len(records) else "")]
    if unmatched:
        examples = list(itertools.islice((e["file"][:80] for f, (_, e) in entries.items() if f not in used), EXAMPLES))
        notes.append(f"warning: --detections {path}: entries that match no input file, ignored (not analysed, "
                     f"not sorted, not opened) ({unmatched}): " + ", ".join(map(repr, examples))
                     + (" ..." if unmatched > len(examples) else ""))
    notes += problems.lines()
    if other:
        notes.append("boxes of categories patou does not classify kept as they are: "
                     + ", ".join(f"{k} ({n})" for k, n in sorted(other.items())))
    return given, notes
