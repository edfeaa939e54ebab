"""How many animals one photo shows, from its detector boxes, where the run's own counts do not say.

A machine event's MaxN is the run's `event_count` (decide.py: boxes of the label at or above its
threshold), as predictions.csv and Camtrap DP give it; a person's count, when they gave one, is
theirs. This function counts the rest: the photos a person labelled without a count, and
`undefined` events (no label, so no run count), from the record's detections.
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
