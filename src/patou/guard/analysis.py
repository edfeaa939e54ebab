"""The guard's one door into the pipeline: the models, one image's analysis and verdict, what it shows.

Everything the guard (live, streams, replay) needs of `pipeline`, `decide` and the box sources
goes through here, so a change of those (the box-source interface, a renamed analyser) is
re-pointed in this file only.
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from ..decide import DIRECT_LABELS, decide_image
from ..options import MAX_PIXELS
from ..pipeline import Analyser, Prepared, process
from ..record import ImageRecord

__all__ = ["Analyser", "analyse_image", "analyse_loaded", "check_labels", "decide", "decode_side", "labels_seen",
           "load_file", "load_models", "max_pixels", "model_labels", "process"]
ANIMAL = "animal"


def load_models(model: str | Path | None = None, threads: int | None = None, flip: bool = True,
                fast: bool = False) -> Analyser:
    """The sessions, created once: one image at a time on every thread (the shortest wait)."""
    return Analyser(model, threads=threads, flip=flip, fast=fast, images_at_once=1)


def model_labels(model: str | Path | None = None) -> list[str]:
    """The classifier's labels from its card alone (no session): for --check-rules."""
    from ..models.card import ModelCard
    from ..models.crop import DEFAULT_CARD

    return list(ModelCard.load(model or DEFAULT_CARD).labels)


def check_labels(models: Analyser | list[str], labels: set[str], what: str = "--target") -> None:
    """Every label a rule names must be one the models can say, or a detector category."""
    said = list(models) if isinstance(models, list) else list(models.classifier.labels)
    known = set(said) | set(DIRECT_LABELS) | set(DIRECT_LABELS.values())
    unknown = sorted(set(labels) - known)
    if unknown:
        raise ValueError(f"{what}: {', '.join(map(repr, unknown))} is not a label of the model "
                         f"({', '.join(said)}) nor a detector category (person, vehicle)")


def load_file(models: Analyser, record: ImageRecord):
    """Decode one file for the models ((image, prepared), or None with record.failure set)."""
    return models.load(record)


def analyse_loaded(models: Analyser, loaded, record: ImageRecord, detection_threshold: float) -> None:
    """Detect and classify what load_file gave; a model error becomes record.failure."""
    models.analyse_safely(loaded, record, detection_threshold)


def decode_side(models: Analyser) -> int:
    return models.decode_side


def max_pixels(models: Analyser) -> int:
    return models.max_pixels or MAX_PIXELS


def analyse_image(models: Analyser, img: Image.Image, record: ImageRecord, detection_threshold: float) -> None:
    """Analyse an image already in memory (a stream frame), as a decoded file would be."""
    record.width, record.height = record.width or img.size[0], record.height or img.size[1]
    try:
        source = models.source_for(record)
        prepared = Prepared(source, source.prepare(record, img))
    except Exception as e:  # as analyse_safely: a model error costs this frame
        record.detections, record.failure = [], f"model error: {type(e).__name__}: {e}"
        return
    models.analyse_safely((img, prepared), record, detection_threshold)


def decide(record: ImageRecord, detection_threshold: float, classify_threshold: float, target: str | None) -> None:
    decide_image(record, detection_threshold, classify_threshold, target)


def labels_seen(record: ImageRecord, detection_threshold: float) -> dict[str, float]:
    """Each label the kept boxes show, with its best score: the classifier's scores of every box,
    and a non-animal detector category (an installed MegaDetector's `person`) at its confidence.
    The rules and the human veto read only this, whichever source gave the label."""
    seen: dict[str, float] = {}
    for d in record.detections:
        if d.conf < detection_threshold:
            continue
        if d.category and d.category != ANIMAL:
            seen[d.category] = max(seen.get(d.category, 0.0), float(d.conf))
        for label, score in (d.scores or {}).items():
            if score > seen.get(label, 0.0):
                seen[label] = float(score)
    return seen
