"""Greedy non-maximum suppression, the rule every detector here shares (YOLOX's, MegaDetector's
and Ultralytics' NMS are torchvision's: drop a box whose IoU with a kept, higher-scoring box is
greater than the threshold)."""
from __future__ import annotations

import numpy as np


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
