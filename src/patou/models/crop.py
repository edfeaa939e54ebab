"""Square crops of detector boxes, and the base of every model that looks at them.

`crop` cuts the square a box is seen through (margin, padding or clipping, resampling); `CropModel`
is what the classifier (classifier.py) and the re-identification embedder (reid/embed.py) share:
the card, its crop geometry and the network input made from crops (mean/std), and the session.
NumPy + Pillow + ONNX Runtime only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from patou.models import ASSETS
from patou.models.card import ModelCard
from patou.models.runtime import cpu_session

DEFAULT_CARD = ASSETS / "efficientnet_lite0_imagenet.json"  # the bundled classifier, also reid's default
DEFAULT_MARGIN = 0.1
PAD_VALUE = 0  # the bundled card's pad_value; `crop` callers that do not pass one get this
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


class CropModel:
    """A model card run on crops: subclasses check the card, then call `_setup` and `_open`."""

    card: ModelCard
    size: int
    flip: bool
    margin: float
    resample: Image.Resampling

    def _setup(self, card: ModelCard, flip: bool, resample: Image.Resampling) -> None:
        self.card = card
        self.size = int(card.input_size[0])
        # test-time mirroring only where the publisher mirrors too (`extra.mirror`, default yes):
        # a model's scores are its publisher's only with the publisher's own rule
        self.flip = bool(flip) and bool((card.extra or {}).get("mirror", True))
        self.margin = float((card.extra or {}).get("crop_margin", DEFAULT_MARGIN))
        self.resample = resample
        self._mean = np.asarray(card.mean, dtype=np.float32).reshape(1, 3, 1, 1)
        self._std = np.asarray(card.std, dtype=np.float32).reshape(1, 3, 1, 1)

    def _open(self, threads: int | None, model: Path | bytes | None = None, output: str | None = None) -> None:
        """The session (on `model`, default the card's ONNX; messages name the card's file), its
        input and the output it reads."""
        self.session = cpu_session(self.card.onnx_path if model is None else model, threads, name=self.card.onnx_path)
        self._input = self.session.get_inputs()[0].name
        self._output = output or self.session.get_outputs()[0].name

    def crop_box(self, img: Image.Image, bbox, margin: float | None = None) -> np.ndarray:
        """The crop this model is fed for a box (a `Detection` or a normalised [x, y, w, h])."""
        return crop(img, _bbox_of(bbox), self.size, margin=self.margin if margin is None else margin,
                    pad_value=self.card.pad_value, mode=self.card.resize, resample=self.resample)

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
