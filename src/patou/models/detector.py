"""Animal detector: a YOLOX ONNX model (by default the bundled MegadetectorLite) on ONNX Runtime.

NumPy + Pillow only; torch is never imported here. The ONNX graph ends at the raw head output,
so grid decoding and NMS live below in NumPy where they can be unit-tested.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from patou.models.card import ASSETS, ModelCard, load_card
from patou.models.runtime import cpu_session
from patou.record import Detection

DEFAULT_CARD = ASSETS / "megadetectorlite_yolox_tiny.json"
# int8 twin (tools/quantize_detector.py): ~1.6x faster on AVX2, keeps the held-out fp32 boxes (its card)
FAST_CARD = ASSETS / "megadetectorlite_yolox_tiny_int8.json"


def letterbox(
    img: Image.Image, size: tuple[int, int], pad_value: int = 0, resample=Image.Resampling.BICUBIC
) -> tuple[np.ndarray, float]:
    """Resize keeping the aspect ratio so the image fits `size` (height, width), paste it at the
    top-left, fill the rest with `pad_value`. Returns the (H, W, 3) uint8 canvas and the scale
    factor (network pixels per original pixel).

    Same geometry and rounding as `PIL.ImageOps.pad(img, (W, H), BICUBIC, centering=(0, 0))`,
    the preprocessing zamba trained and ran MegadetectorLite with. Top-left placement means
    boxes map back to the original by a division alone, without an offset.
    """
    h, w = size
    resized, ratio = _fit(img, size, resample)
    canvas = np.full((h, w, 3), pad_value, dtype=np.uint8)
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    return canvas, ratio


def letterbox_chw(
    img: Image.Image, size: tuple[int, int], pad_value: int = 0, resample=Image.Resampling.BICUBIC
) -> tuple[np.ndarray, float]:
    """`letterbox` straight into the network's (3, H, W) float32 layout, the same values: the
    resize stays in uint8 and the one float conversion writes into the padded buffer (no uint8
    canvas, no second full-size copy)."""
    h, w = size
    resized, ratio = _fit(img, size, resample)
    x = np.full((3, h, w), pad_value, dtype=np.float32)
    x[:, : resized.shape[0], : resized.shape[1]] = resized.transpose(2, 0, 1)
    return x, ratio


def _fit(img: Image.Image, size: tuple[int, int], resample) -> tuple[np.ndarray, float]:
    """The image resized to fit `size` (height, width), aspect kept, as (h, w, 3) uint8; and the ratio."""
    h, w = size
    ratio = min(w / img.width, h / img.height)
    # ImageOps.contain's rounding: the long side fills the canvas exactly, the short side rounds
    if img.width * h > img.height * w:
        new = (w, round(img.height / img.width * w))
    elif img.width * h < img.height * w:
        new = (round(img.width / img.height * h), h)
    else:
        new = (w, h)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img if img.size == new else img.resize(new, resample=resample)), ratio


@lru_cache(maxsize=8)
def _grid(input_size: tuple[int, int], strides: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Cell (x, y) and stride of every anchor, in the head's order: level by level, row-major."""
    cells, steps = [], []
    for s in strides:
        ys, xs = np.mgrid[0 : input_size[0] // s, 0 : input_size[1] // s]
        cells.append(np.stack((xs.ravel(), ys.ravel()), axis=1))
        steps.append(np.full((xs.size, 1), s))
    return np.concatenate(cells).astype(np.float32), np.concatenate(steps).astype(np.float32)


def decode(raw: np.ndarray, input_size: tuple[int, int], strides) -> np.ndarray:
    """YOLOX anchor-free decoding of the raw head output (..., anchors, 4 + 1 + C):
    centre = (offset + cell) * stride, size = exp(log_size) * stride. Returns a new array of the
    same shape whose first four columns are (cx, cy, w, h) in network-input pixels; the score
    columns (objectness, classes) are copied unchanged."""
    cells, steps = _grid(tuple(input_size), tuple(int(s) for s in strides))
    if raw.shape[-2] != len(cells):
        raise ValueError(f"raw output has {raw.shape[-2]} anchors, {input_size} at strides {strides} gives {len(cells)}")
    out = np.array(raw, dtype=np.float32, copy=True)
    out[..., :2] = (raw[..., :2] + cells) * steps
    # clip before exp: a wild regression must give a huge box, not inf (inf - inf = nan later)
    out[..., 2:4] = np.exp(np.minimum(raw[..., 2:4], 20.0)) * steps
    return out


def nms(boxes_xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression. Returns indices of kept boxes, highest score first.
    A box is dropped when its IoU with an already kept box is strictly greater than the threshold
    (the torchvision rule YOLOX and zamba use). Ties in score keep the input order."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    x1, y1, x2, y2 = boxes.T
    area = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        iw = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = iw * ih
        union = area[i] + area[rest] - inter
        # degenerate (zero-area) pairs have no meaningful overlap: count them as IoU 0, keep both
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


class Detector:
    """Runs a detection model card; boxes come back in original-image coordinates."""

    def __init__(
        self,
        card: ModelCard | str | Path | None = None,
        threads: int | None = None,
        min_conf: float = 0.05,
        nms_iou: float | None = None,
        max_detections: int = 100,
        input_size: int | None = None,
    ):
        self.card = load_card(card, DEFAULT_CARD)
        if self.card.task != "detection":
            raise ValueError(f"{self.card.name}: task is {self.card.task!r}, not a detection model")
        # YOLOX is fully convolutional: a model exported with free height/width runs at any
        # multiple of 32 (`--detector-size`); small, far animals get more pixels
        self.input_size = (input_size, input_size) if input_size else tuple(self.card.input_size)
        if input_size is not None and (input_size % 32 or input_size < 64):
            raise ValueError(f"--detector-size {input_size}: must be a multiple of 32 (e.g. 640, 960, 1280)")
        self.strides = tuple(self.card.extra.get("strides", (8, 16, 32)))
        self.min_conf = min_conf
        self.nms_iou = self.card.extra.get("nms_iou", 0.45) if nms_iou is None else nms_iou
        self.max_detections = max_detections
        self._mean = np.asarray(self.card.mean, dtype=np.float32).reshape(3, 1, 1)
        self._std = np.asarray(self.card.std, dtype=np.float32).reshape(3, 1, 1)
        self._identity = not self._mean.any() and (self._std == 1).all()

        self.session = cpu_session(self.card.onnx_path, threads)  # ORT only imported here
        self._input = self.session.get_inputs()[0].name
        self._output = self.session.get_outputs()[0].name
        self.check_size()

    def check_size(self) -> None:
        fixed = [d for d in self.session.get_inputs()[0].shape[2:] if isinstance(d, int)]
        if fixed and tuple(fixed) != self.input_size:
            raise ValueError(f"{self.card.onnx_path.name}: exported for {fixed[0]}x{fixed[-1]} input only; "
                             f"--detector-size {self.input_size[0]} needs a model exported with free height and "
                             "width (tools/convert_detector.py)")

    def preprocess(self, img: Image.Image) -> tuple[np.ndarray, float]:
        """(3, H, W) float32 network input and the letterbox ratio."""
        x, ratio = letterbox_chw(img, self.input_size, self.card.pad_value)
        if not self._identity:  # in place: the buffer is ours
            x -= self._mean
            x /= self._std
        return x, ratio

    def detect(self, img: Image.Image) -> list[Detection]:
        return self.detect_prepared(*self.preprocess(img), img.size)

    def detect_prepared(self, x: np.ndarray, ratio: float, image_size: tuple[int, int]) -> list[Detection]:
        """Detect on one input made by `preprocess`, which a decoding thread can run ahead."""
        raw = self.session.run([self._output], {self._input: x[None]})[0]
        return self.postprocess(raw[0], ratio, image_size)

    def detect_batch(self, images: list[Image.Image]) -> list[list[Detection]]:
        """One session call for the whole batch (images already RGB and EXIF-rotated)."""
        if not images:
            return []
        inputs, ratios = zip(*(self.preprocess(im) for im in images))
        raw = self.session.run([self._output], {self._input: np.stack(inputs)})[0]
        return [self.postprocess(r, ratio, im.size) for r, ratio, im in zip(raw, ratios, images)]

    def postprocess(self, raw: np.ndarray, ratio: float, image_size: tuple[int, int]) -> list[Detection]:
        """Raw head output of one image -> detections sorted by conf, bbox normalised
        [x_min, y_min, width, height] on the original image (`image_size` = (width, height))."""
        dec = decode(raw, self.input_size, self.strides)
        cls = dec[:, 5:]
        label = cls.argmax(1)
        conf = dec[:, 4] * cls[np.arange(len(cls)), label]
        # filtering before NMS is exact: a box is only ever suppressed by a higher-scoring one
        sel = np.flatnonzero(conf >= self.min_conf)
        if not sel.size:
            return []
        cx, cy, w, h = dec[sel, :4].T
        boxes = np.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), axis=1)
        lab, score = label[sel], conf[sel]
        keep = []
        for c in np.unique(lab):  # per class: boxes of different classes never suppress each other
            idx = np.flatnonzero(lab == c)
            keep.extend(idx[nms(boxes[idx], score[idx], self.nms_iou)])
        keep = sorted(keep, key=lambda k: -score[k])[: self.max_detections]

        width, height = image_size
        scale = np.array([width, height, width, height], dtype=np.float64) * ratio
        out = []
        for k in keep:
            x1, y1, x2, y2 = np.clip(boxes[k] / scale, 0.0, 1.0)
            out.append(
                Detection(
                    bbox=tuple(round(float(v), 4) for v in (x1, y1, x2 - x1, y2 - y1)),
                    conf=round(float(score[k]), 4),
                    category=self.card.labels[lab[k]],
                )
            )
        return out


def merge_passes(passes: list[list[Detection]], iou_threshold: float) -> list[Detection]:
    """Boxes of several passes over one image (e.g. 640 and 1280 inputs), NMS'd together per
    category, highest conf first: a box both passes found is kept once, at its best conf."""
    dets = [d for p in passes for d in p]
    if not dets:
        return []
    boxes = np.array([(x, y, x + w, y + h) for x, y, w, h in (d.bbox for d in dets)], dtype=np.float64)
    conf = np.array([d.conf for d in dets])
    keep = []
    for c in sorted({d.category for d in dets}):
        idx = np.flatnonzero([d.category == c for d in dets])
        keep.extend(idx[nms(boxes[idx], conf[idx], iou_threshold)])
    return [dets[k] for k in sorted(keep, key=lambda k: (-conf[k], k))]


def parse_detector_size(value: str | int | None) -> tuple[int, ...] | None:
    """`--detector-size`: 960, 1280, or passes joined by '+' (640+1280: both, merged)."""
    if value is None or value == "":
        return None
    try:
        sizes = tuple(int(v) for v in str(value).split("+"))
    except ValueError:
        sizes = ()
    if not sizes or any(s % 32 or s < 64 for s in sizes) or len(set(sizes)) != len(sizes):
        raise ValueError(f"--detector-size {value}: give multiples of 32, e.g. 960, 1280 or 640+1280")
    return sizes


class MultiSizeDetector:
    """Several input sizes over one ONNX session, boxes merged (`--detector-size 640+1280`):
    the larger pass finds small, far animals, the 640 pass keeps the large ones it was trained on."""

    def __init__(self, card=None, threads: int | None = None, sizes: tuple[int, ...] = (640, 1280)):
        import copy

        first = Detector(card, threads=threads, input_size=sizes[0])
        self.passes = [first]
        for s in sizes[1:]:
            d = copy.copy(first)  # shares the session; only the letterbox size differs
            d.input_size = (s, s)
            d.check_size()
            self.passes.append(d)
        self.card, self.nms_iou = first.card, first.nms_iou
        self.input_size = max(d.input_size for d in self.passes)

    def preprocess(self, img: Image.Image):
        """(inputs, ratios) of every pass, so `x, ratio = prepared` callers work unchanged."""
        prepared = [d.preprocess(img) for d in self.passes]
        return [x for x, _ in prepared], [r for _, r in prepared]

    def detect_prepared(self, xs, ratios, image_size) -> list[Detection]:
        return merge_passes([d.detect_prepared(x, r, image_size) for d, x, r in zip(self.passes, xs, ratios)],
                            self.nms_iou)

    def detect(self, img: Image.Image) -> list[Detection]:
        return self.detect_prepared(*self.preprocess(img), img.size)
