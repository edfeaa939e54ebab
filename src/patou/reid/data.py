"""Known individuals on disk: KNOWN_DIR/<individual_id>/*.jpg, the leaf folder names the animal.

Frames of one burst are near-duplicates, so every split here keeps a whole sequence on one side:
the sequence is patou's event (EXIF time gap per folder, else the file-name burst rule of
events.py, e.g. MPDD's `100_c1s6_1.jpg` .. `100_c1s6_5.jpg` are sequence `100_c1s6`).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from patou.media import IMAGE_EXTENSIONS, scan
from patou.train.records import LabelledImage
from patou.train.splits import assign_events


def scan_individuals(root: str | Path) -> tuple[list[LabelledImage], list[str]]:
    """Photos under `root` labelled by their leaf folder; one-line problems for the rest.

    `site` is the folder relative to `root`, so sequences never join two individuals."""
    root = Path(root)
    if not root.is_dir():
        return [], [f"{root}: no such folder"]
    records, problems = scan([root])
    holders = {r.site for r in records if r.site != "."}  # folders that hold photos themselves
    images, nested = [], defaultdict(int)
    for r in records:
        if r.path.suffix.lower() not in IMAGE_EXTENSIONS:
            problems.append(f"{r.path}: videos are not used for re-identification, skipped")
            continue
        if r.site == ".":
            problems.append(f"{r.path}: not inside an individual's folder (KNOWN_DIR/<individual_id>/), skipped")
            continue
        parts = r.site.split("/")
        owner = next(("/".join(parts[:i]) for i in range(1, len(parts)) if "/".join(parts[:i]) in holders), None)
        if owner is not None:  # rex/2024/*.jpg beside rex/*.jpg: "2024" is no animal's name
            nested[(owner, r.site)] += 1
            continue
        images.append(LabelledImage(path=r.path, root=r.root, label=r.path.parent.name, site=r.site))
    if nested:
        problems.append(
            f"warning: {root}: {sum(nested.values())} photos in folders inside an individual's folder skipped "
            "(their folder's name would be taken for a new individual): "
            + ", ".join(f"{sub}/ in {owner}/ ({n})" for (owner, sub), n in sorted(nested.items())[:3])
            + (" ..." if len(nested) > 3 else "") + "; move them up into the individual's folder, or beside it "
            "if they are another animal")
    if not images:
        problems.append(f"{root}: no photos in individual folders (expected {root}/<individual_id>/*.jpg)")
    assign_events(images)
    return images, problems


def sequences(images: list[LabelledImage]) -> dict[str, list[LabelledImage]]:
    by = defaultdict(list)
    for img in images:
        by[f"{img.site}|{img.event_id}"].append(img)
    return dict(by)


def query_gallery_split(images: list[LabelledImage], seed: int = 0) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """(queries, gallery): for each individual with >= 2 sequences, one sequence (seeded pick)
    becomes queries and the others stay in the gallery; single-sequence individuals are gallery only
    (they still act as distractors)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    by_ind: dict[str, list[list[LabelledImage]]] = defaultdict(list)
    for seq in sequences(images).values():
        by_ind[seq[0].label].append(seq)
    queries, gallery = [], []
    for ind in sorted(by_ind):
        seqs = sorted(by_ind[ind], key=lambda s: str(s[0].path))
        q = int(rng.integers(len(seqs))) if len(seqs) >= 2 else -1
        for i, s in enumerate(seqs):
            (queries if i == q else gallery).extend(s)
    return queries, gallery
