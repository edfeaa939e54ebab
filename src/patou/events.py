"""Group images into events: one site, shots a few seconds apart, are one animal's visit.

Per site, images with an EXIF time join the previous one when the gap is <= `gap` seconds.
Images without a time fall back to their file names: `100002_1.jpg` .. `100002_5.jpg` (a
counter after a separator) are one burst; anything else stands alone.
"""
from __future__ import annotations

import re
from collections import defaultdict
from itertools import groupby

from .options import EVENT_GAP
from .record import ImageRecord

# a burst counter at the end of a stem, after a separator: "_3", "-12", " (2)", "(2)"
_BURST_SUFFIX = re.compile(r"^(?P<stem>.*?\S)(?:[ _\-]\(?\d{1,4}\)?|\(\d{1,4}\))$")


def burst_key(stem: str) -> str | None:
    m = _BURST_SUFFIX.match(stem)
    return m.group("stem") if m else None


def group_events(records: list[ImageRecord], gap: float = EVENT_GAP) -> list[list[ImageRecord]]:
    """Set `event_id` on every readable record; return the events in a stable order.

    Event ids are `E00001`... numbered by (root, site, first time, first file), so the same
    inputs always give the same ids (resume relies on that).
    """
    by_site: dict[tuple, list[ImageRecord]] = defaultdict(list)
    for r in records:
        if r.failure is None:
            by_site[(str(r.root), r.site)].append(r)

    events: list[list[ImageRecord]] = []
    for key in sorted(by_site):
        site_records = by_site[key]
        timed = sorted((r for r in site_records if r.timestamp), key=lambda r: (r.timestamp, r.rel))
        current: list[ImageRecord] = []
        for r in timed:
            if current and (r.timestamp - current[-1].timestamp).total_seconds() > gap:
                events.append(current)
                current = []
            current.append(r)
        if current:
            events.append(current)

        untimed = sorted((r for r in site_records if not r.timestamp), key=lambda r: r.rel)
        bursts: dict[str, list[ImageRecord]] = defaultdict(list)
        for r in untimed:
            folder, _, name = r.rel.rpartition("/")
            stem = name.rsplit(".", 1)[0]
            k = burst_key(stem)
            bursts[f"{folder}/{k}" if k else r.rel].append(r)
        events.extend(bursts.values())

    def order(ev: list[ImageRecord]):
        first = ev[0]
        return (str(first.root), first.site, first.timestamp is None, first.timestamp or 0, first.rel)

    events.sort(key=order)
    for i, ev in enumerate(events, 1):
        for r in ev:
            r.event_id = f"E{i:05d}"
    return events


def events_of(records: list[ImageRecord]) -> list[list[ImageRecord]]:
    """Regroup records that already carry event ids (e.g. for writers), in id order."""
    keyed = sorted((r for r in records if r.event_id), key=lambda r: (r.event_id, r.rel))
    return [list(g) for _, g in groupby(keyed, key=lambda r: r.event_id)]
