"""Ultralytics YOLOv8 and YOLOv11 detectors (MDv1000-sorrel and -larch, DeepFaune's
yolov8s_960) in plain torch, built from the yaml dict the checkpoint carries on its model object.

The yaml's `scales` give (depth, width, max_channels) for the model's `scale` letter; rows are
`[from, repeats, module, args]` as in YOLOv5, channels capped at max_channels before the width
multiple. YOLOv11 rows use C3k2 (C3k blocks at the m/l/x scales) and C2PSA; its head's class branch
is two depth-wise + point-wise pairs where YOLOv8's is two 3x3 Convs (told apart by the
checkpoint's keys).

The head is anchor-free: per level a box branch of 4 x reg_max logits (a distribution over
distances to the cell centre's left, top, right and bottom, "DFL") and a class branch. Decoding is
inside the network, as Ultralytics' inference does: distance = softmax-weighted mean of 0..reg_max-1,
box = cell centre -/+ distances, times the stride. The ONNX output is (N, anchors, 4 + classes):
[cx, cy, w, h] in network-input pixels and sigmoid class scores (no objectness); Ultralytics' own
output is the transpose, (N, 4 + classes, anchors).
"""
from __future__ import annotations

import torch
from torch import nn

from patou.convert.yolo_layers import (
    C2PSA, C3, SPPF, Bottleneck, C2f, C3k2, Conv, DWConv, Graph, LayoutError, build_graph,
)

# yaml module name -> (class, whether its 'repeats' is an argument inside it)
MODULES = {"Conv": (Conv, False), "DWConv": (DWConv, False), "Bottleneck": (Bottleneck, False), "C3": (C3, True),
           "C2f": (C2f, True), "C3k2": (C3k2, True), "C2PSA": (C2PSA, True), "SPPF": (SPPF, False)}


class DFL(nn.Module):
    """Expected distance under a softmax over reg_max bins, as a fixed 1x1 conv (weights 0..reg_max-1,
    the checkpoint's own)."""

    def __init__(self, c1: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.arange(c1, dtype=torch.float32).view(1, c1, 1, 1))
        self.c1 = c1

    def forward(self, x):
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


class Detect(nn.Module):
    def __init__(self, nc: int, ch: list[int], strides: list[float], reg_max: int = 16, legacy: bool = False):
        super().__init__()
        self.nc, self.nl, self.reg_max = nc, len(ch), reg_max
        c2, c3 = max(16, ch[0] // 4, reg_max * 4), max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1)) for x in ch)
        if legacy:  # YOLOv8
            self.cv3 = nn.ModuleList(nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for x in ch)
        else:  # YOLOv11
            self.cv3 = nn.ModuleList(nn.Sequential(nn.Sequential(DWConv(x, x, 3), Conv(x, c3, 1)),
                                                   nn.Sequential(DWConv(c3, c3, 3), Conv(c3, c3, 1)),
                                                   nn.Conv2d(c3, nc, 1)) for x in ch)
        self.dfl = DFL(reg_max) if reg_max > 1 else nn.Identity()
        self.strides = [float(s) for s in strides]

    def forward(self, feats):
        b = feats[0].shape[0]
        boxes = torch.cat([self.cv2[i](x).view(b, 4 * self.reg_max, -1) for i, x in enumerate(feats)], -1)
        scores = torch.cat([self.cv3[i](x).view(b, self.nc, -1) for i, x in enumerate(feats)], -1)
        centres, steps = [], []
        for x, s in zip(feats, self.strides):
            ny, nx = x.shape[2], x.shape[3]
            # cell centres from the feature map itself, so the exported graph takes any input size
            gx = (torch.arange(nx, dtype=x.dtype) + 0.5).view(1, nx).expand(ny, nx)
            gy = (torch.arange(ny, dtype=x.dtype) + 0.5).view(ny, 1).expand(ny, nx)
            centres.append(torch.stack((gx, gy), 0).reshape(2, -1))
            steps.append(torch.full_like(gx.reshape(1, -1), s))
        centre, step = torch.cat(centres, 1).unsqueeze(0), torch.cat(steps, 1).unsqueeze(0)
        lt, rb = self.dfl(boxes).chunk(2, 1)
        x1y1, x2y2 = centre - lt, centre + rb
        box = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * step
        return torch.cat((box, scores.sigmoid()), 1).transpose(1, 2)


def scale_of(cfg: dict) -> tuple[float, float, float]:
    """(depth, width, max_channels) of the yaml: its `scales[scale]`, else the plain multiples."""
    scales, scale = cfg.get("scales"), cfg.get("scale")
    if scales:
        if scale not in scales:
            raise LayoutError(f"Ultralytics yaml: scale {scale!r} is not one of {', '.join(map(str, scales))}")
        d, w, mc = scales[scale]
        return float(d), float(w), float(mc)
    return float(cfg.get("depth_multiple", 1.0)), float(cfg.get("width_multiple", 1.0)), float("inf")


def build(cfg: dict, strides: list[float], legacy_head: bool) -> Graph:
    """The network an Ultralytics detection yaml dict describes (random weights). `strides` are
    the checkpoint's Detect strides; `legacy_head` whether its class branch is YOLOv8's."""
    try:
        nc = int(cfg["nc"])
        rows = list(cfg["backbone"]) + list(cfg["head"])
        depth, width, max_ch = scale_of(cfg)
    except (KeyError, TypeError, ValueError) as e:
        raise LayoutError(f"not an Ultralytics model yaml ({type(e).__name__}: {e})") from None
    if cfg.get("end2end"):
        raise LayoutError("Ultralytics yaml: end-to-end (NMS-free) heads are not supported")
    scale = cfg.get("scale")

    def head(froms, channels):
        if len(strides) != len(froms):
            raise LayoutError(f"Detect over {len(froms)} levels but the checkpoint gives {len(strides)} strides")
        return Detect(nc, channels, strides, int(cfg.get("reg_max", 16)), legacy_head)

    def adjust(cls, args):
        if cls is C3k2 and scale in ("m", "l", "x"):
            args[3:4] = [True]  # c3k at the larger scales, whatever the row says (Ultralytics' rule)
        return args

    return build_graph(rows, nc, MODULES, depth, width, head, what="Ultralytics", max_channels=max_ch, adjust=adjust)
