"""Photos -> unit-length embedding vectors on ONNX Runtime + NumPy + Pillow (no torch).

A photo is cropped as `patou run` crops it (the detector's boxes, square crop with the model's
margin), keeping one animal per photo: the most confident box above the threshold, ties broken
by area. `no_detector` treats the whole photo as the crop (square-padded), for inputs that are
crops already. The model is any card with `task: embedding` (its output is the embedding), or,
without one, the bundled classifier's 1000 ImageNet logits: a generic appearance descriptor
that needs no training.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from patou.digest import file_sha256
from patou.media import decode
from patou.models.card import ModelCard
from patou.models.classifier import DEFAULT_CARD, DEFAULT_MARGIN, RESAMPLE, crop
from patou.models.runtime import cpu_session
from patou.record import Detection, ImageRecord

BATCH = 32
DETECTION_THRESHOLD = 0.2  # patou run's default
WHOLE = (0.0, 0.0, 1.0, 1.0)


def best_box(detections: Sequence[Detection], threshold: float = DETECTION_THRESHOLD) -> Detection | None:
    """The animal box to identify: most confident above `threshold`, then the largest."""
    boxes = [d for d in detections if d.category == "animal" and d.conf >= threshold]
    return max(boxes, key=lambda d: (round(d.conf, 2), d.bbox[2] * d.bbox[3]), default=None)


@dataclass
class Cropped:
    path: Path
    crop: np.ndarray | None  # (size, size, 3) uint8; None when the photo failed or shows no animal
    bbox: tuple[float, float, float, float] | None = None  # normalised x, y, w, h of the box used
    conf: float | None = None
    problem: str | None = None


def crop_photo(path: Path, size: int, detector=None, threshold: float = DETECTION_THRESHOLD,
               margin: float = DEFAULT_MARGIN, pad_value: int = 0) -> Cropped:
    """The crop of one photo: `detector` None means the photo is already a crop (square-padded)."""
    rec = ImageRecord(path=Path(path), root=Path(path).parent)
    img = decode(rec)
    if img is None:
        return Cropped(rec.path, None, problem=f"{path}: {rec.failure}")
    if detector is None:
        return Cropped(rec.path, crop(img, WHOLE, size, margin=0.0, pad_value=pad_value), WHOLE)
    box = best_box(detector.detect(img), threshold)
    if box is None:
        return Cropped(rec.path, None, problem=f"{path}: no animal detected above {threshold}")
    return Cropped(rec.path, crop(img, box.bbox, size, margin=margin, pad_value=pad_value), tuple(box.bbox), box.conf)


def l2n(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class Embedder:
    """Runs an embedding card, or the bundled classifier's logits when `model` is None."""

    def __init__(self, model: ModelCard | str | Path | None = None, threads: int | None = None, flip: bool = True):
        card = model if isinstance(model, ModelCard) else ModelCard.load(model or DEFAULT_CARD)
        if card.task not in ("embedding", "classification"):
            raise ValueError(f"{card.name}: task is {card.task!r}; re-identification needs an embedding "
                             "(or classification) model card")
        if card.resize != "square-pad" or card.input_size[0] != card.input_size[1]:
            raise ValueError(f"{card.name}: only square 'square-pad' inputs are supported")
        self.card = card
        self.size = int(card.input_size[0])
        self.flip = flip
        self.margin = float((card.extra or {}).get("crop_margin", DEFAULT_MARGIN))
        self._mean = np.asarray(card.mean, dtype=np.float32).reshape(1, 3, 1, 1)
        self._std = np.asarray(card.std, dtype=np.float32).reshape(1, 3, 1, 1)
        self.session = cpu_session(card.onnx_path, threads)
        self._input = self.session.get_inputs()[0].name
        self._output = self.session.get_outputs()[0].name
        # the cache key: the weights' bytes and what shapes the input, never the file name
        self.key = hashlib.sha256(
            f"{file_sha256(card.onnx_path)}|{self.size}|{card.mean}|{card.std}|{self.margin}|{flip}".encode()
        ).hexdigest()[:20]

    @property
    def name(self) -> str:
        return self.card.name if self.card.task == "embedding" else f"{self.card.name} (ImageNet logits)"

    def preprocess(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        arrs = []
        for c in crops:
            c = np.asarray(c)
            if c.shape != (self.size, self.size, 3):
                c = np.asarray(Image.fromarray(c.astype(np.uint8)).convert("RGB").resize((self.size, self.size), RESAMPLE))
            arrs.append(c)
        x = np.stack(arrs).astype(np.float32).transpose(0, 3, 1, 2)
        return (x - self._mean) / self._std

    def raw(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Network outputs without flip or normalisation (the ONNX-vs-torch check uses this)."""
        return self.session.run([self._output], {self._input: self.preprocess(crops)})[0]

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """(n, dim) unit vectors; with flip, the mean of the crop's and its mirror's outputs."""
        crops = list(crops)
        out = []
        for i in range(0, len(crops), BATCH):
            x = self.preprocess(crops[i : i + BATCH])
            n = len(x)
            if self.flip:
                x = np.ascontiguousarray(np.concatenate([x, x[..., ::-1]]))
            y = self.session.run([self._output], {self._input: x})[0].astype(np.float32)
            out.append(l2n(l2n(y[:n]) + l2n(y[n:])) if self.flip else l2n(y))
        if not out:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(out)

    def crop_photo(self, path: Path, detector=None, threshold: float = DETECTION_THRESHOLD) -> Cropped:
        return crop_photo(path, self.size, detector, threshold, self.margin, int(self.card.pad_value))
