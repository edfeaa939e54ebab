"""Training labels: a DATA tree whose leaf folders are labels, or a label file for DATA (`--labels`:
a `path,label` CSV, Timelapse CSV, COCO Camera Traps, Wildlife Insights images.csv or a Camtrap DP
package; see formats.labels_in), whose names become labels through a taxon table.

Labels are normalised (accents, case, spaces) so that "Cerf élaphe/" and "cerf_elaphe/" from two
field seasons are one class; a mapping then merges or drops labels, and `classes` folds the rest
into `other`. Per-file trouble is returned as one-line problems, never raised.
"""
from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from patou.media import IMAGE_EXTENSIONS, scan
from patou.record import EMPTY, normalise_label
from patou.train.records import LabelledImage

OTHER = "other"
# what people write for "nothing in the frame"; all become `empty` (kept for evaluation only)
EMPTY_ALIASES = {"", "none", "blank", EMPTY}


def _canonical(name: str) -> str:
    label = normalise_label(name)
    return EMPTY if label in EMPTY_ALIASES else label


def parse_merge(text: str | Path | None) -> dict[str, str | None]:
    """Mapping from label to label (None = drop the images): "a,b=c;d=", or a `from,to` CSV file.

    A Path, or a string naming an existing .csv file, is read as CSV (an empty `to` drops).
    Merges are applied once, not chained: "a=b;b=c" sends a to b, not to c.
    """
    if text is None:
        return {}
    path = Path(text)
    if isinstance(text, Path) or (str(text).lower().endswith(".csv") and path.is_file()):
        pairs = _read_mapping_csv(path)
    else:
        pairs = []
        for part in filter(None, (p.strip() for p in str(text).split(";"))):
            if "=" not in part:
                raise ValueError(f"merge {part!r}: expected 'from1,from2=to' (or 'from=' to drop)")
            sources, _, target = part.partition("=")
            pairs += [(s, target) for s in sources.split(",") if s.strip()]
    mapping: dict[str, str | None] = {}
    for source, target in pairs:
        src, dst = _canonical(source), _canonical(target) if target.strip() else None
        if src in mapping and mapping[src] != dst:
            raise ValueError(f"merge: {source!r} is mapped twice ({mapping[src]} and {dst})")
        mapping[src] = dst
    return mapping


def _read_mapping_csv(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f, delimiter=_delimiter(path)) if any(c.strip() for c in r)]
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["from", "to"]:
        rows = rows[1:]
    for i, r in enumerate(rows):
        if len(r) < 1 or len(r) > 2:
            raise ValueError(f"{path}: row {i + 1}: expected 'from,to', got {r}")
    return [(r[0], r[1] if len(r) > 1 else "") for r in rows]


def _delimiter(path: Path) -> str:
    # spreadsheets in French locales save CSV with ';'
    with open(path, encoding="utf-8-sig") as f:
        head = f.readline()
    return ";" if ";" in head and "," not in head else ","


def relabel(label: str, merge: dict | None = None, classes: list[str] | None = None) -> str | None:
    """Raw label -> final label: normalise, merge (None = dropped), then fold into `classes`."""
    label = _canonical(label)
    if merge and label in merge:
        label = merge[label]
        if label is None:
            return None
    if classes is not None and label != EMPTY and label not in {_canonical(c) for c in classes}:
        return OTHER
    return label


def collect(
    data: Path,
    labels_csv: Path | None = None,
    merge: dict | None = None,
    classes: list[str] | None = None,
    taxonomy: Path | None = None,
) -> tuple[list[LabelledImage], list[str]]:
    """Labelled images under `data` (leaf folder = label), or the photos under `data` a label file
    names (`labels_csv`: any format formats.labels_in reads; its names mapped through the taxon
    table `taxonomy`, the bundled one by default); plus problems."""
    data = Path(data).absolute()
    if labels_csv is None:
        found, problems = _from_folders(data)
    else:
        found, problems = _from_label_file(data, Path(labels_csv).absolute(), taxonomy)
    images, dropped = [], defaultdict(int)
    for img in found:
        label = relabel(img.label, merge, classes)
        if label is None:
            dropped[_canonical(img.label)] += 1
            continue
        img.label = label
        images.append(img)
    if dropped:
        names = ", ".join(f"{k} ({n})" for k, n in sorted(dropped.items()))
        problems.append(f"dropped by the label mapping: {names}")
    images.sort(key=lambda i: (str(i.root), str(i.path)))
    return images, problems


def _from_folders(data: Path) -> tuple[list[LabelledImage], list[str]]:
    records, problems = _photos(data)
    images: list[LabelledImage] = []
    at_root = 0
    with_subfolders: set[Path] = set()
    # folders that have image folders below them (computed once: trees can hold 100k images)
    ancestors = {a for f in {r.path.parent for r in records} for a in f.parents}
    for r in records:
        folder = r.path.parent
        if folder == r.root:
            at_root += 1  # no label folder: nothing to learn from
            continue
        if folder in ancestors:
            with_subfolders.add(folder)
        parts = folder.relative_to(r.root).parts
        images.append(LabelledImage(path=r.path, root=r.root, label=parts[-1], site="/".join(parts[:-1]) or "."))
    if at_root:
        problems.append(f"{data}: {at_root} images directly in DATA have no label folder, skipped")
    for folder in sorted(with_subfolders):
        # e.g. DATA/siteA/x.jpg beside DATA/siteA/bear/: x.jpg is labelled "sitea", probably not meant
        problems.append(f"{folder}: holds images and labelled sub-folders; its images are labelled {folder.name!r}")
    return images, problems


def _photos(data: Path) -> tuple[list, list[str]]:
    records, problems = scan([data])
    photos = [r for r in records if r.path.suffix.lower() in IMAGE_EXTENSIONS]
    if len(photos) < len(records):  # training crops come from photos; videos are for `patou run`
        problems.append(f"{data}: {len(records) - len(photos)} videos skipped (training uses photos)")
    return photos, problems


def _from_label_file(data: Path, path: Path, taxonomy: Path | None) -> tuple[list[LabelledImage], list[str]]:
    """The photos under `data` that the label file names, as `--detections` matches paths."""
    from patou.formats.labels_in import match_labels, read_label_file
    from patou.formats.taxa import NameIndex, load_table

    labels = read_label_file(path)
    photos, problems = _photos(data)
    truth, more = match_labels(labels, photos, NameIndex(load_table(taxonomy)))
    images = [LabelledImage(path=r.path, root=r.root, label=truth[str(r.path)][0],
                            site=truth[str(r.path)][1].site or r.site) for r in photos if str(r.path) in truth]
    return images, problems + labels.notes + more
