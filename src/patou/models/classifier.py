"""Species classifier on detector crops: any classification model card on ONNX Runtime.

NumPy + Pillow only; torch is never imported here. The bundled default is EfficientNet-Lite0
trained on ImageNet-1k, whose 1000 logits are rolled up into patou's labels by the taxonomy
CSV named in the card (`extra.taxonomy`, see taxonomy.py). A user-trained card without a
taxonomy gets the softmax of its outputs over its own labels (or the outputs as they are when
`extra.outputs == "probabilities"`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from patou.models.card import ASSETS, ModelCard
from patou.models.runtime import cpu_session
from patou.models.taxonomy import Taxonomy, apply_log_prior, softmax

DEFAULT_CARD = ASSETS / "efficientnet_lite0_imagenet.json"
DEFAULT_MARGIN = 0.1
PAD_VALUE = 0  # the bundled card's pad_value; `crop` callers that do not pass one get this
BATCH = 32  # crops per session call (x2 with flip): bounds memory on images with many boxes
RESAMPLE = Image.Resampling.BILINEAR
RESAMPLERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
# square-pad: the box's long side (+ margin) as a square centred on it, padded where it leaves the
# image (the bundled model). square-clip: the box grown to a square on its short side, clipped to
# the image, so the crop may be a rectangle that is then stretched to the input (DeepFaune's crop).
CROP_MODES = ("square-pad", "square-clip")


def crop(
    img: Image.Image,
    bbox_norm_xywh: Sequence[float],
    size: int,
    margin: float = DEFAULT_MARGIN,
    pad_value: int = PAD_VALUE,
    mode: str = "square-pad",
    resample: Image.Resampling = RESAMPLE,
) -> np.ndarray:
    """Square crop around a detection, resized to (size, size, 3) uint8 RGB.

    `bbox_norm_xywh` is [x_min, y_min, width, height] normalised to the image. The square's side
    is the box's longer side times (1 + 2 * margin), i.e. `margin` of the longer side is added
    on each side; it is centred on the box, so the shorter side gets real image context rather
    than padding. Only where the square leaves the image is it filled with `pad_value`.
    With mode "square-clip" the square (same rule) is clipped to the image instead of padded
    and what is left is resized to (size, size).
    """
    if mode not in CROP_MODES:
        raise ValueError(f"crop mode must be one of {', '.join(CROP_MODES)}, not {mode!r}")
    if img.mode != "RGB":
        img = img.convert("RGB")
    W, H = img.size
    x, y, w, h = (float(v) for v in bbox_norm_xywh)
    if mode == "square-clip":
        side = max(w * W, h * H, 1.0) * (1.0 + 2.0 * max(float(margin), 0.0))
        cx, cy = (x + w / 2) * W, (y + h / 2) * H
        box = (max(cx - side / 2, 0.0), max(cy - side / 2, 0.0), min(cx + side / 2, float(W)), min(cy + side / 2, float(H)))
        if box[2] - box[0] < 1 or box[3] - box[1] < 1:  # a box outside the image: its nearest pixel
            px, py = min(max(int(cx), 0), W - 1), min(max(int(cy), 0), H - 1)
            box = (px, py, px + 1, py + 1)
        return np.asarray(img.resize((size, size), resample, box=box))
    side = max(w * W, h * H, 1.0) * (1.0 + 2.0 * max(float(margin), 0.0))
    cx, cy = (x + w / 2) * W, (y + h / 2) * H
    left, top = cx - side / 2, cy - side / 2
    right, bottom = left + side, top + side
    if left >= 0 and top >= 0 and right <= W and bottom <= H:
        return np.asarray(img.resize((size, size), resample, box=(left, top, right, bottom)))
    # the part of the square inside the image, resized at the same scale, pasted onto the pad
    canvas = Image.new("RGB", (size, size), (int(pad_value),) * 3)
    ix0, iy0, ix1, iy1 = max(left, 0.0), max(top, 0.0), min(right, float(W)), min(bottom, float(H))
    if ix1 > ix0 and iy1 > iy0:
        scale = size / side
        px0, py0 = round((ix0 - left) * scale), round((iy0 - top) * scale)
        px1, py1 = round((ix1 - left) * scale), round((iy1 - top) * scale)
        if px1 > px0 and py1 > py0:
            canvas.paste(img.resize((px1 - px0, py1 - py0), resample, box=(ix0, iy0, ix1, iy1)), (px0, py0))
    return np.asarray(canvas)


def _bbox_of(d) -> Sequence[float]:
    return d.bbox if hasattr(d, "bbox") else d


class Classifier:
    """Runs a classification model card; `predict` returns probabilities over `labels`."""

    def __init__(self, card: ModelCard | str | Path | None = None, threads: int | None = None, flip: bool = True):
        self.card = card if isinstance(card, ModelCard) else ModelCard.load(card or DEFAULT_CARD)
        if self.card.task != "classification":
            raise ValueError(f"{self.card.name}: task is {self.card.task!r}, not a classification model")
        if self.card.resize not in CROP_MODES:
            raise ValueError(f"{self.card.name}: resize {self.card.resize!r} is not supported ({', '.join(CROP_MODES)})")
        h, w = self.card.input_size
        if h != w:
            raise ValueError(f"{self.card.name}: input_size {self.card.input_size} is not square")
        self.size = int(h)
        self.flip = bool(flip)
        extra = self.card.extra or {}
        self.temperature = float(extra.get("temperature", 1.0))
        self.log_prior = dict(extra.get("log_prior") or {})
        self.fold = dict(extra.get("fold") or {})  # helper labels of the taxonomy -> output labels
        self.margin = float(extra.get("crop_margin", DEFAULT_MARGIN))
        if extra.get("resample", "bilinear") not in RESAMPLERS:
            raise ValueError(f"{self.card.name}: extra.resample must be one of {', '.join(RESAMPLERS)}")
        self.resample = RESAMPLERS[extra.get("resample", "bilinear")]
        self.outputs = extra.get("outputs", "logits")
        if self.outputs not in ("logits", "probabilities"):
            raise ValueError(
                f"{self.card.name}: extra.outputs must be 'logits' or 'probabilities', got {self.outputs!r}"
            )
        self.taxonomy: Taxonomy | None = None
        if extra.get("taxonomy"):
            self.taxonomy = Taxonomy.for_card(self.card)
        self._mean = np.asarray(self.card.mean, dtype=np.float32).reshape(1, 3, 1, 1)
        self._std = np.asarray(self.card.std, dtype=np.float32).reshape(1, 3, 1, 1)

        self.session = cpu_session(self.card.onnx_path, threads)
        shape = self.session.get_inputs()[0].shape
        want = (3, *self.card.input_size)
        if len(shape) != 4 or any(isinstance(d, int) and d != w for d, w in zip(shape[1:], want)):
            raise ValueError(f"{self.card.onnx_path}: the network takes input {shape}, its card says "
                             f"(batch, {', '.join(map(str, want))})")
        self._input = self.session.get_inputs()[0].name
        self._output = self.session.get_outputs()[0].name
        n_out = self.session.get_outputs()[0].shape[-1]
        expected = self.taxonomy.n_classes if self.taxonomy else len(self.card.labels)
        if isinstance(n_out, int) and n_out != expected:
            what = f"taxonomy {extra.get('taxonomy')}" if self.taxonomy else "its labels"
            raise ValueError(f"{self.card.name}: the network has {n_out} outputs, {what} expect {expected}")

    @property
    def labels(self) -> list[str]:
        return list(self.card.labels)

    def preprocess(self, crops: Iterable[np.ndarray]) -> np.ndarray:
        """(n, 3, size, size) float32 network input from (size, size, 3) uint8 RGB crops."""
        arrs = []
        for c in crops:
            c = np.asarray(c)
            if c.shape != (self.size, self.size, 3):
                im = Image.fromarray(c.astype(np.uint8)).convert("RGB")
                c = np.asarray(im.resize((self.size, self.size), self.resample))
            arrs.append(c)
        x = np.stack(arrs).astype(np.float32).transpose(0, 3, 1, 2)
        return (x - self._mean) / self._std

    def raw(self, crops: list[np.ndarray]) -> np.ndarray:
        """The network's outputs (n, n_outputs) for the crops, without flip or roll-up."""
        return self.session.run([self._output], {self._input: self.preprocess(crops)})[0]

    def to_probabilities(self, outputs: np.ndarray) -> np.ndarray:
        """Network outputs -> (n, len(labels)) probabilities (roll-up, softmax, priors)."""
        if self.taxonomy is not None:
            return self.taxonomy.rollup(outputs, self.temperature, self.log_prior, self.fold)
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
        margin = self.margin if margin is None else margin
        crops = [crop(img, _bbox_of(d), self.size, margin=margin, pad_value=self.card.pad_value, mode=self.card.resize,
                      resample=self.resample) for d in detections]
        return list(self.predict(crops))
