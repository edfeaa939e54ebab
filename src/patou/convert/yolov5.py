"""YOLOv5 (MegaDetector v5a/b, MDv1000-redwood and -spruce) in plain torch, built from the yaml
dict the checkpoint carries on its model object.

A YOLOv5 yaml lists rows `[from, number, module, args]` scaled by `depth_multiple` (repeats) and
`width_multiple` (channels, rounded up to a multiple of 8), ending in a Detect row over 3 (P5:
strides 8-32) or 4 (P6: strides 8-64, YOLOv5x6 = MDv5) feature maps with `na` anchors each.

The head decodes inside the network, as YOLOv5's inference does, so the ONNX output is what
MegaDetector's code feeds its NMS: (N, anchors, 5 + classes) with per anchor [cx, cy, w, h] in
network-input pixels, sigmoid objectness, sigmoid class scores; conf = objectness * class score.
Box centre = (2 sigmoid(t_xy) - 0.5 + cell) * stride, size = (2 sigmoid(t_wh))^2 * anchor.
"""
from __future__ import annotations

import torch
from torch import nn

from patou.convert.yolo_layers import C3, SPP, SPPF, Bottleneck, Conv, DWConv, Focus, Graph, LayoutError, build_graph

# yaml module name -> (class, whether its 'number' is a repeat argument inside it)
MODULES = {"Conv": (Conv, False), "DWConv": (DWConv, False), "Focus": (Focus, False), "Bottleneck": (Bottleneck, False),
           "C3": (C3, True), "SPP": (SPP, False), "SPPF": (SPPF, False)}


class Detect(nn.Module):
    """Per level a 1x1 conv to na * (5 + nc) channels; boxes decoded against the level's grid and
    anchors (`anchors` is the checkpoint's buffer, in units of its level's stride)."""

    def __init__(self, nc: int, anchors, ch: list[int], strides: list[float]):
        super().__init__()
        self.nc, self.no, self.nl = nc, nc + 5, len(anchors)
        self.na = len(anchors[0]) // 2
        self.strides = [float(s) for s in strides]  # not state: the checkpoint's Detect.stride
        per_level = [[[a[j] / s, a[j + 1] / s] for j in range(0, len(a), 2)] for a, s in zip(anchors, self.strides)]
        self.register_buffer("anchors", torch.tensor(per_level, dtype=torch.float32))  # the checkpoint's replace it
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)

    def forward(self, feats):
        out = []
        for i, x in enumerate(feats):
            x = self.m[i](x)
            b, _, ny, nx = x.shape
            y = x.view(b, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).sigmoid()
            # grid from the feature map itself, so the exported graph takes any input size
            gx = torch.arange(nx, dtype=y.dtype).view(1, 1, 1, nx)
            gy = torch.arange(ny, dtype=y.dtype).view(1, 1, ny, 1)
            s = self.strides[i]
            cx = (y[..., 0] * 2 - 0.5 + gx) * s
            cy = (y[..., 1] * 2 - 0.5 + gy) * s
            anchor = (self.anchors[i] * s).view(1, self.na, 1, 1, 2)
            wh = (y[..., 2:4] * 2) ** 2 * anchor
            y = torch.cat((cx.unsqueeze(-1), cy.unsqueeze(-1), wh, y[..., 4:]), -1)
            out.append(y.reshape(b, -1, self.no))
        return torch.cat(out, 1)


def build(cfg: dict, strides: list[float]) -> Graph:
    """The network a YOLOv5 yaml dict describes (random weights; load the checkpoint's after).
    `strides` are the Detect layer's, from the checkpoint."""
    try:
        nc, gd, gw = int(cfg["nc"]), float(cfg["depth_multiple"]), float(cfg["width_multiple"])
        rows = list(cfg["backbone"]) + list(cfg["head"])
        anchors = cfg["anchors"]
    except (KeyError, TypeError, ValueError) as e:
        raise LayoutError(f"not a YOLOv5 model yaml ({type(e).__name__}: {e})") from None
    if not isinstance(anchors, list):
        raise LayoutError("YOLOv5 yaml: anchors given as a count, not the list the checkpoint would hold")
    na = len(anchors[0]) // 2

    def head(froms, channels):
        if len(strides) != len(froms):
            raise LayoutError(f"Detect over {len(froms)} levels but the checkpoint gives {len(strides)} strides")
        return Detect(nc, anchors, channels, strides)

    # a row whose width is the output's (na * (5 + nc)) is not scaled: YOLOv5's rule
    return build_graph(rows, nc, MODULES, gd, gw, head, what="YOLOv5", keep_width=lambda c: c == na * (nc + 5))
