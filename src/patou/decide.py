"""Verdicts: per image from its boxes, per event by averaging its non-empty images (DeepFaune).

A box a MegaDetector file says is a person or a vehicle is decided without the classifier
(`decide_direct`): its label at the file's confidence.

A video is decided like an event of its frames: each sampled frame gets an image verdict, and the
video's scores are the mean over its non-empty frames (DeepFaune's video rule).

The mean is of the images' probabilities, unless the classifier's card gives its publisher's rule:
`logit_scale` s (models/classifier.event_logit_scale) makes it the softmax of the images' mean logit
at the card's event temperature, computed from the probabilities as softmax(s * mean log p).
"""
from __future__ import annotations

import math

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


def decide_image(r: ImageRecord, detection_threshold: float, threshold: float, target: str | None = None,
                 logit_scale: float | None = None) -> None:
    """Label = the class with the highest score over the boxes kept; `undefined` below `threshold`."""
    if r.failure:
        r.label = r.score = r.scores = r.target_score = None
        return
    if r.frames_processed:
        return _decide_video(r, detection_threshold, threshold, target, logit_scale)
    kept = [d for d in r.detections if d.conf >= detection_threshold and d.scores]
    if not kept:
        # how sure we are it is empty: 1 - the best box the detector did see
        r.label, r.scores = EMPTY, None
        r.score = round(1.0 - max((d.conf for d in r.detections), default=0.0), 6)
        r.target_score = 0.0 if target else None
        return
    best = max(kept, key=lambda d: d.top()[1])
    label, score = best.top()
    r.scores = dict(best.scores)
    r.score = score
    r.label = label if score >= threshold else UNDEFINED
    if target:
        r.target_score = max(d.scores.get(target, 0.0) for d in kept)


def decide_event(event: list[ImageRecord], threshold: float, target: str | None = None,
                 logit_scale: float | None = None) -> None:
    """Average the class scores of the event's non-empty images; all empty -> `empty`."""
    label, score, _, target_score = _average(event, threshold, target, logit_scale)
    for r in event:
        r.event_label, r.event_score, r.event_target_score = label, score, target_score


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


def _average(records: list[ImageRecord], threshold: float, target: str | None, logit_scale: float | None = None):
    """(label, score, mean scores, target score) over the records' non-empty verdicts."""
    scored = [r for r in records if r.scores]
    if not scored:
        return EMPTY, min(r.score for r in records), None, (0.0 if target else None)
    mean = mean_scores([r.scores for r in scored], logit_scale)
    top = max(mean, key=mean.get)
    score = mean[top]
    label = top if score >= threshold else UNDEFINED
    target_score = sum(r.target_score for r in scored) / len(scored) if target else None
    return label, score, mean, target_score


def _decide_video(r: ImageRecord, detection_threshold: float, threshold: float, target: str | None,
                  logit_scale: float | None) -> None:
    frames = []
    for n in r.frames_processed:
        f = ImageRecord(path=r.path, root=r.root, detections=[d for d in r.detections if d.frame_number == n])
        decide_image(f, detection_threshold, threshold, target)
        frames.append(f)
    r.label, r.score, r.scores, r.target_score = _average(frames, threshold, target, logit_scale)
