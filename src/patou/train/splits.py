"""Train/validation split that never cuts an event (or, with by="site", a site) in two.

Frames of one visit are near-duplicates: with one in train and its neighbour in validation,
validation measures memory, not recognition. Whole groups are therefore assigned to a side, and
the assignment is stratified by label as far as whole groups allow.
"""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
from PIL import Image

from patou.events import group_events
from patou.media import exif_time
from patou.options import EVENT_GAP
from patou.record import ImageRecord
from patou.train.records import LabelledImage


def assign_events(images: list[LabelledImage], gap: float = EVENT_GAP) -> list[list[LabelledImage]]:
    """Set `timestamp` (EXIF, header only) and `event_id` on every image; return the events."""
    records = []
    for img in images:
        if img.timestamp is None:
            try:
                with Image.open(img.path) as im:  # lazy: reads the header, not the pixels
                    img.timestamp = exif_time(im)
            except Exception:  # unreadable files still get an event (file-name fallback)
                img.timestamp = None
        records.append(ImageRecord(path=img.path, root=img.root, site=img.site, timestamp=img.timestamp))
    events = group_events(records, gap)
    by_record = {id(r): img for r, img in zip(records, images)}
    out = []
    for ev in events:
        members = [by_record[id(r)] for r in ev]
        for img in members:
            img.event_id = ev[0].event_id
        out.append(members)
    return out


def split(items: list, val_fraction: float = 0.1, by: str = "event", seed: int = 0) -> tuple[list, list]:
    """(train, val) from anything with `.label`, `.event_id`, `.site`; whole groups on one side.

    First every class with >= 2 groups gets one group in validation (its smallest, so small
    classes are not emptied), then groups in a seeded random order join validation whenever that
    brings the per-class counts closer to `val_fraction` of each class. A class never loses its
    last training group. Deterministic for a seed.
    """
    if by not in ("event", "site"):
        raise ValueError(f"split by {by!r}: expected 'event' or 'site'")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction {val_fraction}: expected between 0 and 1")
    if by == "event" and any(getattr(i, "event_id", None) is None for i in items):
        raise ValueError("split by event needs event ids: call assign_events first")
    groups: dict[str, list[int]] = defaultdict(list)
    for n, item in enumerate(items):
        groups[str(item.event_id if by == "event" else item.site)].append(n)
    if by == "site" and len(groups) < 2:
        raise ValueError(f"split by site needs at least 2 sites, found {len(groups)}")

    keys = sorted(groups)
    counts = {k: Counter(items[n].label for n in groups[k]) for k in keys}
    totals = Counter(item.label for item in items)
    target = {c: val_fraction * t for c, t in totals.items()}
    in_train = Counter(c for k in keys for c in counts[k])  # groups per class left in train
    val_counts: Counter = Counter()
    val: set[str] = set()
    order = [keys[i] for i in np.random.default_rng(seed).permutation(len(keys))]

    def movable(k: str) -> bool:
        return k not in val and all(in_train[c] > 1 for c in counts[k])

    def move(k: str) -> None:
        val.add(k)
        val_counts.update(counts[k])
        in_train.subtract(counts[k].keys())

    # 1. coverage: rarest classes (fewest groups) first, each through its smallest movable group
    for c in sorted(totals, key=lambda c: (in_train[c], c)):
        if val_counts[c] or in_train[c] < 2:
            continue
        candidates = [k for k in order if c in counts[k] and movable(k)]
        if candidates:
            move(min(candidates, key=lambda k: (sum(counts[k].values()) - counts[k][c], counts[k][c])))

    # 2. fill towards the per-class targets, one pass in seeded order
    for k in order:
        if movable(k):
            gain = sum(
                (val_counts[c] - target[c]) ** 2 - (val_counts[c] + n - target[c]) ** 2 for c, n in counts[k].items()
            )
            if gain > 0:
                move(k)

    if not val:  # e.g. two big sites: validation must still hold something
        candidates = [k for k in order if movable(k)] or order
        move(min(candidates, key=lambda k: sum(counts[k].values())))

    val_idx = {n for k in val for n in groups[k]}
    train = [it for n, it in enumerate(items) if n not in val_idx]
    return train, [it for n, it in enumerate(items) if n in val_idx]


def crops_by_side(crops: list, train_images: list, val_images: list) -> tuple[list, list]:
    """Crops follow their source image; crops of images on neither side are left out."""
    train_paths = {img.path for img in train_images}
    val_paths = {img.path for img in val_images}
    return [c for c in crops if c.source in train_paths], [c for c in crops if c.source in val_paths]
