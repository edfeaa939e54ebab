"""How many animals one photo shows, from its detector boxes.

Issue 26 adds a `count` field to the records; until then the report computes it here, from the
record's detections, in this one function (so the two can be compared, then this one retired).
"""
from __future__ import annotations

from collections import Counter

from ..record import ImageRecord


def animals_in(r: ImageRecord, detection_threshold: float, label: str | None = None) -> int:
    """Boxes at or above the detection threshold whose top class is `label` (default: the
    photo's winning class, the class of its best box). When no kept box has that class (an
    `undefined` verdict, or a person's label the model never gave) every kept box counts: the
    boxes are the animals, the person named them. A video counts its busiest frame."""
    kept = [d for d in r.detections if d.conf >= detection_threshold]
    if label is None and r.scores:
        label = max(r.scores, key=r.scores.get)
    same = [d for d in kept if (t := d.top()) and t[0] == label]
    boxes = same or kept
    per_frame = Counter(d.frame_number for d in boxes)
    return max(per_frame.values(), default=0)
