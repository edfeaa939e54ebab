"""Boxes from elsewhere: a MegaDetector batch-output file (`--detections`) or one box per image
(`--no-detector`), as the same `Detection` records the bundled detector makes.

The file's `file` entries are matched to the scanned inputs by path under the input root (as
patou writes them), then by a path that ends with it, then by a unique file name; anything
ambiguous is an error naming both files. `person` and `vehicle` boxes are decided here (label
human / vehicle, the file's confidence as the score): the classifier never sees them.

The file may come from anyone: an entry is only ever a name looked up among the scanned files
(never a path opened, never a record of its own), and every value is checked before it is used.
What cannot be used is dropped and counted, one warning line per kind with the first examples;
a file that cannot be trusted at all is refused in one line.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import stat
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .record import Detection, ImageRecord

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


MAX_MD_BYTES = 2 << 30  # a 2-million-photo MD file is well under 1 GB; more is not a batch file
EXAMPLES = 3  # examples quoted in a summary line
BBOX_EPS = 1e-3  # MD rounds boxes to 4 decimals: x + w may pass 1 by a hair


class Problems:
    """Problems of one file, counted by kind with the first few examples: one line per kind."""

    def __init__(self, source: str):
        self.source = source
        self.kinds: dict[str, list] = {}

    def add(self, kind: str, example: str) -> None:
        n_ex = self.kinds.setdefault(kind, [0, []])
        n_ex[0] += 1
        if len(n_ex[1]) < EXAMPLES:
            n_ex[1].append(example)

    def lines(self) -> list[str]:
        return [f"warning: --detections {self.source}: {kind} ({n}): {'; '.join(ex)}" + (" ..." if n > len(ex) else "")
                for kind, (n, ex) in self.kinds.items()]


def read_md_file(path: str | Path) -> tuple[dict, str]:
    """The parsed file and its sha256 (first 16 hex), or a one-line ValueError; only the file's
    frame is checked here (see `md_entries` for its entries)."""
    path = Path(path)
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # a folder, a FIFO, /dev/zero: never read
            raise ValueError(f"--detections {path}: {'a folder' if stat.S_ISDIR(st.st_mode) else 'not a regular file'}, "
                             "not a MegaDetector JSON file")
        if st.st_size > MAX_MD_BYTES:
            raise ValueError(f"--detections {path}: {st.st_size / 2**30:.1f} GB, more than a MegaDetector batch file "
                             f"holds (limit {MAX_MD_BYTES / 2**30:.0f} GB)")
        raw = path.read_bytes()
    except OSError as e:
        raise ValueError(f"--detections {path}: cannot read ({e.strerror or e})") from None
    try:
        data = json.loads(raw)
    except RecursionError:
        raise ValueError(f"--detections {path}: nested too deep to be a MegaDetector batch file") from None
    except ValueError as e:
        raise ValueError(f"--detections {path}: not JSON ({str(e)[:200]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("detection_categories"), dict):
        raise ValueError(f"--detections {path}: not a MegaDetector batch file (needs 'images' and 'detection_categories')")
    info = data.get("info", {})
    if not isinstance(info, dict):
        raise ValueError(f"--detections {path}: 'info' is {_kind(info)}, not an object: not a MegaDetector batch file")
    for k, v in data["detection_categories"].items():
        if not isinstance(v, str) or not v.strip():
            raise ValueError(f"--detections {path}: detection_categories {k!r} is named {_kind(v)}, not a text")
    version = info.get("format_version", "1.0")
    if not isinstance(version, (str, int, float)) or not str(version).startswith("1."):
        raise ValueError(f"--detections {path}: format_version {str(version)[:40]} is not supported (1.0-1.6)")
    return data, hashlib.sha256(raw).hexdigest()[:16]


def _kind(v) -> str:
    return {dict: "an object", list: "a list", str: "a text", bool: "true/false", type(None): "null"}.get(
        type(v), "a number" if isinstance(v, (int, float)) else type(v).__name__)


def _show(v, n: int = 20) -> str:
    return (repr(v) if isinstance(v, str) else str(v))[:n]


def _unit(v) -> bool:
    """A finite number in [0, 1] (true/false are not numbers here)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0.0 <= v <= 1.0


def _box_problem(d, cats: dict) -> str | None:
    """Why a detection cannot be used (None: it can)."""
    if not isinstance(d, dict):
        return f"{_kind(d)}, not an object"
    if str(d.get("category")) not in cats:
        return f"category {_show(d.get('category'))} not in detection_categories"
    if not _unit(d.get("conf")):
        return f"conf {_show(d.get('conf'))} is not a number in [0, 1]"
    b = d.get("bbox")
    if not (isinstance(b, list) and len(b) == 4 and all(_unit(v) for v in b)):
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
    problems = Problems(source)
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
                     f"{where}: {_kind(dets)}")
        return None
    kept = []
    for j, d in enumerate(dets if failure is None else []):
        why = _box_problem(d, cats)
        if why:
            problems.add("boxes dropped", f"{where} detection {j}: {why}")
        else:
            kept.append({"category": str(d["category"]), "conf": float(d["conf"]), "bbox": [float(v) for v in d["bbox"]]})
    return {"file": e["file"], "failure": failure, "detections": kept}


def _clean_info(info: dict, problems: Problems) -> dict:
    """What patou uses of `info`, each value checked: the detector's name, its thresholds in [0, 1]."""
    out = {k: info[k] for k in ("format_version", "detector") if isinstance(info.get(k), (str, int, float))
           and not isinstance(info.get(k), bool)}
    meta = info.get("detector_metadata")
    if meta is None:
        return out
    if not isinstance(meta, dict):
        problems.add("info.detector_metadata ignored", f"{_kind(meta)}, not an object")
        return out
    clean = {}
    for k in ("typical_detection_threshold", "conservative_detection_threshold"):
        if k in meta:
            if _unit(meta[k]):
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


def match(path: str | Path, records: list[ImageRecord]) -> tuple[GivenBoxes, list[str]]:
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

    given = GivenBoxes(source=str(path), digest=digest, categories=cats,
                       info=_clean_info(data.get("info", {}), problems))
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
