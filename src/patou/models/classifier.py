"""Species classifier on detector crops: any classification model card on ONNX Runtime.

NumPy + Pillow only; torch is never imported here. The bundled default is EfficientNet-Lite0
trained on ImageNet-1k, whose 1000 logits are rolled up into patou's labels by the roll-up
CSV named in the card (`extra.taxonomy`, see rollup.py). A user-trained card without a
roll-up gets the softmax of its outputs over its own labels (or the outputs as they are when
`extra.outputs == "probabilities"`). Crops and the network input: crop.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from patou.models.card import ModelCard, load_card
from patou.models.crop import (  # noqa: F401  (crop and its constants: imported from here too)
    CROP_MODES, DEFAULT_CARD, DEFAULT_MARGIN, PAD_VALUE, RESAMPLE, RESAMPLERS, CropModel, crop,
)
from patou.models.rollup import Rollup, apply_log_prior, softmax

BATCH = 32  # crops per session call (x2 with flip): bounds memory on images with many boxes


def event_logit_scale(card: ModelCard) -> float | None:
    """How the card says an event's (or a video's) images are averaged: None for the mean of their
    probabilities (the default), else the factor s of the publisher's rule "softmax of the images'
    mean logit at `event_temperature`" (DeepFaune's), s = temperature / event_temperature: with each
    image's probabilities p = softmax(logit / temperature), log p is logit / temperature up to a
    per-image constant, so softmax(s * mean log p) is that rule exactly (decide.py)."""
    extra = card.extra or {}
    how = extra.get("event_average", "probabilities")
    if how not in ("probabilities", "logits"):
        raise ValueError(f"{card.name}: extra.event_average must be 'probabilities' or 'logits', not {str(how)[:40]!r}")
    temps = [extra.get("temperature", 1.0), extra.get("event_temperature", extra.get("temperature", 1.0))]
    if not all(isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0 for t in temps):
        raise ValueError(f"{card.name}: extra.temperature and extra.event_temperature must be numbers > 0")
    return float(temps[0]) / float(temps[1]) if how == "logits" else None


class Classifier(CropModel):
    """Runs a classification model card; `predict` returns probabilities over `labels`."""

    def __init__(self, card: ModelCard | str | Path | None = None, threads: int | None = None, flip: bool = True):
        card = load_card(card, DEFAULT_CARD)
        if card.task != "classification":
            raise ValueError(f"{card.name}: task is {card.task!r}, not a classification model")
        if card.resize not in CROP_MODES:
            raise ValueError(f"{card.name}: resize {card.resize!r} is not supported ({', '.join(CROP_MODES)})")
        h, w = card.input_size
        if h != w:
            raise ValueError(f"{card.name}: input_size {card.input_size} is not square")
        extra = card.extra or {}
        self.temperature = float(extra.get("temperature", 1.0))
        self.event_logit_scale = event_logit_scale(card)
        self.log_prior = dict(extra.get("log_prior") or {})
        self.fold = dict(extra.get("fold") or {})  # helper labels of the roll-up -> output labels
        if extra.get("resample", "bilinear") not in RESAMPLERS:
            raise ValueError(f"{card.name}: extra.resample must be one of {', '.join(RESAMPLERS)}")
        self._setup(card, bool(flip), RESAMPLERS[extra.get("resample", "bilinear")])
        self.outputs = extra.get("outputs", "logits")
        if self.outputs not in ("logits", "probabilities"):
            raise ValueError(
                f"{self.card.name}: extra.outputs must be 'logits' or 'probabilities', got {self.outputs!r}"
            )
        self.rollup: Rollup | None = None
        if extra.get("taxonomy"):
            self.rollup = Rollup.for_card(self.card)

        self._open(threads)
        shape = self.session.get_inputs()[0].shape
        want = (3, *self.card.input_size)
        if len(shape) != 4 or any(isinstance(d, int) and d != w for d, w in zip(shape[1:], want)):
            raise ValueError(f"{self.card.onnx_path}: the network takes input {shape}, its card says "
                             f"(batch, {', '.join(map(str, want))})")
        n_out = self.session.get_outputs()[0].shape[-1]
        expected = self.rollup.n_classes if self.rollup else len(self.card.labels)
        if isinstance(n_out, int) and n_out != expected:
            what = f"taxonomy {extra.get('taxonomy')}" if self.rollup else "its labels"
            raise ValueError(f"{self.card.name}: the network has {n_out} outputs, {what} expect {expected}")

    @property
    def labels(self) -> list[str]:
        return list(self.card.labels)

    def raw(self, crops: list[np.ndarray]) -> np.ndarray:
        """The network's outputs (n, n_outputs) for the crops, without flip or roll-up."""
        return self.session.run([self._output], {self._input: self.preprocess(crops)})[0]

    def to_probabilities(self, outputs: np.ndarray) -> np.ndarray:
        """Network outputs -> (n, len(labels)) probabilities (roll-up, softmax, priors)."""
        if self.rollup is not None:
            return self.rollup.rollup(outputs, self.temperature, self.log_prior, self.fold)
        if self.outputs == "probabilities":
            p = np.clip(np.asarray(outputs, dtype=np.float64), 0.0, None)
            p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
        else:
            p = softmax(outputs, self.temperature)
        return apply_log_prior(p, self.labels, self.log_prior).astype(np.float32)

    def predict(self, crops: list[np.ndarray]) -> np.ndarray:
        """(n, len(labels)) probabilities for (size, size, 3) uint8 crops (see `crop`). With
        flip, each crop and its mirror go through the network in the same batch and their
        probabilities are averaged."""
        crops = list(crops)
        if not crops:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        out = []
        for i in range(0, len(crops), BATCH):
            x = self.preprocess(crops[i : i + BATCH])
            n = len(x)
            if self.flip:
                x = np.concatenate([x, x[..., ::-1]])
            y = self.session.run([self._output], {self._input: np.ascontiguousarray(x)})[0]
            p = self.to_probabilities(y)
            out.append((p[:n] + p[n:]) / 2 if self.flip else p)
        return np.concatenate(out).astype(np.float32)

    def classify(self, img: Image.Image, detections, margin: float | None = None) -> list[np.ndarray]:
        """Probabilities for each detection (a `Detection` or a normalised [x, y, w, h] box)."""
        detections = list(detections)
        if not detections:
            return []
        return list(self.predict([self.crop_box(img, d, margin) for d in detections]))
