"""Pre- and post-processing of YOLOv5 and Ultralytics detectors (MegaDetector v5 / v1000, DeepFaune's
yolov8s), exactly as the publishers' inference code does it; NumPy + OpenCV only.

Letterbox (YOLOv5's `letterbox`, Ultralytics' `LetterBox`, what MegaDetector's PTDetector calls in its
default "classic" mode): scale so the image fits `size` x `size` (r = min(size/h, size/w), up-scaling
allowed), resize to (round(w r), round(h r)) with OpenCV's bilinear filter, then pad with grey 114 to
the *smallest* multiple of the network stride on each side (`auto`: a 4:3 photo at 1280 becomes
1280 x 960, not a square), the padding split between both sides (top/left = round(pad / 2 - 0.1)).

The ONNX graph ends in decoded boxes (convert/yolov5.py, convert/ultralytics_yolo.py): per anchor
[cx, cy, w, h] in network pixels, then objectness and class scores (YOLOv5) or class scores only
(Ultralytics). Confidence = objectness x best class score, or the best class score; boxes with
conf >= min_conf go through per-class greedy NMS (torchvision's rule: drop IoU > threshold), at most
300 kept. Boxes map back to the image as each publisher does it:
- "yolov5": one gain for both axes and the padding computed from it (YOLOv5's `scale_coords`);
- "ultralytics": each axis by its own rounded size and the integer padding the letterbox added;
then, with `round_pixels` (MegaDetector's classic mode), every corner rounded to a whole pixel.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from patou.models.nms import nms
from patou.record import Detection

PAD_VALUE = 114
MAX_DETECTIONS = 300


@dataclass(frozen=True)
class Geometry:
    """Where the image sits in the network input."""

    input_shape: tuple[int, int]  # (height, width) of the network input
    image_shape: tuple[int, int]  # (height, width) of the image that was letterboxed
    new_unpad: tuple[int, int]  # (width, height) of the resized image inside the input
    top: int
    left: int


def geometry(width: int, height: int, size: int, stride: int, auto: bool = True) -> Geometry:
    """The letterbox of a width x height image to `size` (YOLOv5's arithmetic, Ultralytics' rounding:
    both sides at least one pixel)."""
    r = min(size / height, size / width)
    new_w, new_h = max(int(round(width * r)), 1), max(int(round(height * r)), 1)
    dw, dh = size - new_w, size - new_h
    if auto:
        dw, dh = dw % stride, dh % stride
    dw, dh = dw / 2, dh / 2
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    return Geometry((new_h + top + bottom, new_w + left + right), (height, width), (new_w, new_h), top, left)


def letterbox(img: Image.Image, size: int, stride: int, pad_value: int = PAD_VALUE,
              auto: bool = True) -> tuple[np.ndarray, Geometry]:
    """The network input as (H, W, 3) uint8 RGB, and where the image sits in it."""
    import cv2

    if img.mode != "RGB":
        img = img.convert("RGB")
    g = geometry(img.width, img.height, size, stride, auto)
    arr = np.asarray(img)
    if (img.width, img.height) != g.new_unpad:
        arr = cv2.resize(arr, g.new_unpad, interpolation=cv2.INTER_LINEAR)
    canvas = np.full((*g.input_shape, 3), pad_value, dtype=np.uint8)
    canvas[g.top: g.top + g.new_unpad[1], g.left: g.left + g.new_unpad[0]] = arr
    return canvas, g


def letterbox_chw(img: Image.Image, size: int, stride: int, pad_value: int = PAD_VALUE,
                  auto: bool = True) -> tuple[np.ndarray, Geometry]:
    """`letterbox` as the (3, H, W) float32 pixels 0..255 the network is fed (before /255)."""
    canvas, g = letterbox(img, size, stride, pad_value, auto)
    return np.ascontiguousarray(canvas.transpose(2, 0, 1), dtype=np.float32), g


def scores(raw: np.ndarray, objectness: bool) -> tuple[np.ndarray, np.ndarray]:
    """(best class index, conf) per anchor of a decoded output (anchors, 4 + [1] + classes)."""
    cls = raw[:, 5:] if objectness else raw[:, 4:]
    label = cls.argmax(1)
    best = cls[np.arange(len(cls)), label]
    return label, best * raw[:, 4] if objectness else best


def to_image(boxes_xyxy: np.ndarray, g: Geometry, mapping: str, round_pixels: bool) -> np.ndarray:
    """Network-input boxes (x1, y1, x2, y2) -> pixels of the letterboxed image, clipped to it."""
    h0, w0 = g.image_shape
    b = np.array(boxes_xyxy, dtype=np.float64, copy=True)
    if mapping == "yolov5":
        gain = min(g.input_shape[0] / h0, g.input_shape[1] / w0)
        pad_x, pad_y = (g.input_shape[1] - w0 * gain) / 2, (g.input_shape[0] - h0 * gain) / 2
        gx = gy = gain
    elif mapping == "ultralytics":
        gx, gy = g.new_unpad[0] / w0, g.new_unpad[1] / h0
        pad_x, pad_y = g.left, g.top
    else:
        raise ValueError(f"box mapping {mapping!r}: expected 'yolov5' or 'ultralytics'")
    b[:, [0, 2]] = (b[:, [0, 2]] - pad_x) / gx
    b[:, [1, 3]] = (b[:, [1, 3]] - pad_y) / gy
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, w0)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, h0)
    return np.round(b) if round_pixels else b


def detections(raw: np.ndarray, g: Geometry, labels: list[str], *, objectness: bool, mapping: str,
               round_pixels: bool = False, min_conf: float = 0.05, nms_iou: float = 0.45,
               max_detections: int = MAX_DETECTIONS) -> list:
    """One image's decoded output -> Detections (normalised [x, y, w, h] on the letterboxed image),
    highest conf first."""
    label, conf = scores(raw, objectness)
    # filtering before NMS is exact: a box is only ever suppressed by a higher-scoring one
    sel = np.flatnonzero(conf >= min_conf)
    if not sel.size:
        return []
    cx, cy, w, h = raw[sel, :4].astype(np.float64).T
    boxes = np.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), axis=1)
    lab, score = label[sel], conf[sel]
    keep = []
    for c in np.unique(lab):  # per class: boxes of different classes never suppress each other
        idx = np.flatnonzero(lab == c)
        keep.extend(idx[nms(boxes[idx], score[idx], nms_iou)])
    keep = sorted(keep, key=lambda k: -score[k])[:max_detections]
    if not keep:
        return []
    px = to_image(boxes[keep], g, mapping, round_pixels)
    h0, w0 = g.image_shape
    out = []
    for k, (x1, y1, x2, y2) in zip(keep, px):
        bbox = (x1 / w0, y1 / h0, (x2 - x1) / w0, (y2 - y1) / h0)
        out.append(Detection(bbox=tuple(round(float(v), 4) for v in bbox), conf=round(float(score[k]), 4),
                             category=labels[lab[k]]))
    return out


def _iou(a, b) -> float:
    """IoU of two normalised [x, y, w, h] boxes."""
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    union = a[2] * a[3] + b[2] * b[3] - iw * ih
    return iw * ih / union if union > 0 else 0.0


def agree(ref: list[tuple], ours: list[tuple], nms_iou: float, conf_tol: float = 0.0015,
          corner_tol: float = 2.5e-4) -> dict:
    """Do two NMS outputs (category, conf, [x, y, w, h]) say the same? Boxes match one to one with
    equal classes, confidences within `conf_tol` and IoU >= 0.99 (or, for boxes too thin for an IoU,
    corners within `corner_tol`). Among boxes of equal score that overlap beyond the NMS threshold,
    which one NMS keeps is arbitrary (a sort of ties; torch's is not stable): so a box left
    unmatched is accepted only when the other side kept, in its place, a box of the same class and
    at least its score that overlaps it beyond the threshold (the box that suppressed it), or when
    it has no area left inside the image (NMS compared it unclipped). Anything else is
    `unexplained`: a real difference."""
    def same(a, b) -> bool:
        return _iou(a, b) >= 0.99 or max(abs(x - y) for x, y in zip(a, b)) <= corner_tol

    free, matched, left_ref = list(range(len(ours))), [], []
    for r in sorted(ref, key=lambda r: -r[1]):
        cands = [j for j in free if ours[j][0] == r[0] and abs(ours[j][1] - r[1]) <= conf_tol and same(r[2], ours[j][2])]
        if cands:
            j = max(cands, key=lambda j: _iou(r[2], ours[j][2]))
            free.remove(j)
            matched.append(_iou(r[2], ours[j][2]))
        else:
            left_ref.append(r)
    left_ours = [ours[j] for j in free]

    def suppressed_by(a, kept) -> bool:
        return any(k[0] == a[0] and k[1] >= a[1] - conf_tol and _iou(k[2], a[2]) > nms_iou for k in kept)

    def outside(a) -> bool:  # clipped to nothing: NMS saw it unclipped, no overlap can be told here
        return a[2][2] * a[2][3] <= 0

    unexplained = [("reference", r) for r in left_ref if not outside(r) and not suppressed_by(r, ours)] + \
                  [("other", o) for o in left_ours if not outside(o) and not suppressed_by(o, ref)]
    return {"matched": len(matched), "reference": len(ref), "other": len(ours), "tie_swaps": len(left_ref),
            "unexplained": unexplained, "matched_by_corners": sum(v < 0.99 for v in matched),
            "outside_unmatched": sum(outside(a) for a in left_ref + left_ours)}
