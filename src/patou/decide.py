"""Verdicts: per image from its boxes, per event by averaging its non-empty images (DeepFaune).

A box a MegaDetector file says is a person or a vehicle is decided without the classifier
(`decide_direct`): its label at the file's confidence.

A video is decided like an event of its frames: each sampled frame gets an image verdict, and the
video's scores are the mean over its non-empty frames (DeepFaune's video rule).

Thresholds may differ per class (`--threshold bear=0.3,wolf=0.6,0.5`): a label stands when its
score reaches its own class's threshold, else the verdict is `undefined`. Counts follow the
verdict: an image's `count` is its boxes of the winning class at or above that threshold, an
event's `event_count` the most such boxes in any one of its photos (MaxN).

The mean is of the images' probabilities, unless the classifier's card gives its publisher's rule:
`logit_scale` s (models/classifier.event_logit_scale) makes it the softmax of the images' mean logit
at the card's event temperature, computed from the probabilities as softmax(s * mean log p).
"""
from __future__ import annotations

import math

from .options import Thresholds
from .record import EMPTY, UNDEFINED, Detection, ImageRecord

# a probability of 0 in a log mean (float32 underflow, or a label an image was not scored on, such as
# a MegaDetector person box's): the smallest float32, so it weighs as the least the network can say
LOG_FLOOR = 1e-45

# MegaDetector category names -> patou label decided without the classifier
DIRECT_LABELS = {"person": "human", "human": "human", "vehicle": "vehicle"}


def decide_direct(d: Detection, labels: list[str]) -> bool:
    """person/vehicle boxes: the label at the file's confidence, no classifier. True when decided."""
    label = DIRECT_LABELS.get(d.category)
    if label is None:
        return False
    d.scores = {k: 0.0 for k in labels}
    d.scores[label] = round(float(d.conf), 6)
    return True


def _thresholds(t) -> Thresholds:
    return Thresholds.of_value(t)


def decide_image(r: ImageRecord, detection_threshold: float, threshold: float | Thresholds,
                 target: str | None = None, logit_scale: float | None = None) -> None:
    """Label = the class with the highest score over the boxes kept; `undefined` below its threshold."""
    thr = _thresholds(threshold)
    if r.failure:
        r.label = r.score = r.scores = r.target_score = r.count = None
        return
    if r.frames_processed:
        return _decide_video(r, detection_threshold, thr, target, logit_scale)
    kept = [d for d in r.detections if d.conf >= detection_threshold and d.scores]
    if not kept:
        # how sure we are it is empty: 1 - the best box the detector did see
        r.label, r.scores, r.count = EMPTY, None, 0
        r.score = round(1.0 - max((d.conf for d in r.detections), default=0.0), 6)
        r.target_score = 0.0 if target else None
        return
    best = max(kept, key=lambda d: d.top()[1])
    label, score = best.top()
    r.scores = dict(best.scores)
    r.score = score
    r.label = label if score >= thr.of(label) else UNDEFINED
    r.count = count_boxes(r, r.label, detection_threshold, thr)
    if target:
        r.target_score = max(d.scores.get(target, 0.0) for d in kept)


def count_boxes(r: ImageRecord, label: str | None, detection_threshold: float, threshold: float | Thresholds) -> int | None:
    """Boxes of `label` (their top class) scoring at least its threshold; for a video, the most in
    one frame. None when there is nothing to count: no verdict, `undefined`."""
    if r.failure or label in (None, UNDEFINED):
        return None
    if label == EMPTY:
        return 0
    thr = _thresholds(threshold).of(label)
    frames: dict[int | None, int] = {}
    for d in r.detections:
        top = d.top() if d.conf >= detection_threshold else None
        if top and top[0] == label and top[1] >= thr:
            frames[d.frame_number] = frames.get(d.frame_number, 0) + 1
    return max(frames.values(), default=0)


def decide_event(event: list[ImageRecord], threshold: float | Thresholds, target: str | None = None,
                 detection_threshold: float | None = None, logit_scale: float | None = None) -> None:
    """Average the class scores of the event's non-empty images; all empty -> `empty`. With the
    detection threshold, also the event's MaxN (`event_count`)."""
    thr = _thresholds(threshold)
    label, score, _, target_score = _average(event, thr, target, logit_scale)
    n = None
    if detection_threshold is not None:
        n = event_count(event, label, detection_threshold, thr)
    for r in event:
        r.event_label, r.event_score, r.event_target_score, r.event_count = label, score, target_score, n


def event_count(event: list[ImageRecord], label: str | None, detection_threshold: float,
                threshold: float | Thresholds) -> int | None:
    """MaxN: the most boxes of the event's label in any one of its photos (at least 1 for an
    animal's event: its label came from somewhere, even when no single box reached the threshold)."""
    counts = [c for r in event if (c := count_boxes(r, label, detection_threshold, threshold)) is not None]
    if label in (None, UNDEFINED) or not counts:
        return None
    return max(counts) if label == EMPTY else max(1, max(counts))


def mean_scores(scores: list[dict[str, float]], logit_scale: float | None = None) -> dict[str, float]:
    """The average of several images' class scores: their mean, or with `logit_scale` s the softmax
    of s times their mean log (the publisher's mean-logit rule, see the module's docstring)."""
    labels = dict.fromkeys(k for sc in scores for k in sc)  # MD person/vehicle may add a label
    if logit_scale is None:
        return {k: sum(sc.get(k, 0.0) for sc in scores) / len(scores) for k in labels}
    z = {k: logit_scale * sum(math.log(max(sc.get(k, 0.0), LOG_FLOOR)) for sc in scores) / len(scores) for k in labels}
    top = max(z.values())
    e = {k: math.exp(v - top) for k, v in z.items()}
    total = sum(e.values())
    return {k: v / total for k, v in e.items()}


def _average(records: list[ImageRecord], thr: Thresholds, target: str | None, logit_scale: float | None = None):
    """(label, score, mean scores, target score) over the records' non-empty verdicts."""
    scored = [r for r in records if r.scores]
    if not scored:
        return EMPTY, min(r.score for r in records), None, (0.0 if target else None)
    mean = mean_scores([r.scores for r in scored], logit_scale)
    top = max(mean, key=mean.get)
    score = mean[top]
    label = top if score >= thr.of(top) else UNDEFINED
    target_score = sum(r.target_score for r in scored) / len(scored) if target else None
    return label, score, mean, target_score


def _decide_video(r: ImageRecord, detection_threshold: float, thr: Thresholds, target: str | None,
                  logit_scale: float | None = None) -> None:
    frames = []
    for n in r.frames_processed:
        f = ImageRecord(path=r.path, root=r.root, detections=[d for d in r.detections if d.frame_number == n])
        decide_image(f, detection_threshold, thr, target)
        frames.append(f)
    r.label, r.score, r.scores, r.target_score = _average(frames, thr, target, logit_scale)
    r.count = count_boxes(r, r.label, detection_threshold, thr)
