"""YOLOX-tiny in plain torch, written to load zamba's MegadetectorLite checkpoint strictly.

Used only by tools/convert_detector.py and the tests: the inference path runs the exported ONNX
and must never import torch. Module and attribute names follow the checkpoint's state-dict keys
(backbone.backbone.dark2..., backbone.C3_p4..., head.cls_convs...), so `load_state_dict(sd,
strict=True)` works without renaming.

Architecture (YOLOX paper, Ge et al. 2021): CSPDarknet backbone with a Focus stem and SPP,
PAFPN neck, decoupled head, SiLU everywhere, strides 8/16/32. Tiny = depth 0.33, width 0.375.
"""
from __future__ import annotations

import torch
from torch import nn

STRIDES = (8, 16, 32)


class ConvBNAct(nn.Module):
    """Conv (no bias) -> BatchNorm -> SiLU. YOLOX trains with BN eps 1e-3, momentum 0.03: the
    eps matters at inference, a different value shifts every activation."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride, padding=(k - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Focus(nn.Module):
    """Space-to-depth (2x2 pixels -> 4x channels), then a 3x3 conv. The channel order of the four
    phases is fixed by the trained weights: (even row, even col), (odd, even), (even, odd), (odd, odd)."""

    def __init__(self, c_in: int, c_out: int, k: int = 3):
        super().__init__()
        self.conv = ConvBNAct(c_in * 4, c_out, k)

    def forward(self, x):
        x = torch.cat(
            (x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), dim=1
        )
        return self.conv(x)


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool):
        super().__init__()
        self.conv1 = ConvBNAct(c, c, 1)
        self.conv2 = ConvBNAct(c, c, 3)
        self.shortcut = shortcut

    def forward(self, x):
        y = self.conv2(self.conv1(x))
        return x + y if self.shortcut else y


class CSPLayer(nn.Module):
    """Split into two 1x1 branches (half width), run bottlenecks on one, concat, fuse."""

    def __init__(self, c_in: int, c_out: int, n: int, shortcut: bool = True):
        super().__init__()
        hidden = c_out // 2
        self.conv1 = ConvBNAct(c_in, hidden, 1)
        self.conv2 = ConvBNAct(c_in, hidden, 1)
        self.conv3 = ConvBNAct(2 * hidden, c_out, 1)
        self.m = nn.Sequential(*(Bottleneck(hidden, shortcut) for _ in range(n)))

    def forward(self, x):
        return self.conv3(torch.cat((self.m(self.conv1(x)), self.conv2(x)), dim=1))


class SPPBottleneck(nn.Module):
    """Spatial pyramid pooling: concat of the input and its 5/9/13 stride-1 max-pools."""

    def __init__(self, c_in: int, c_out: int, kernels=(5, 9, 13)):
        super().__init__()
        hidden = c_in // 2
        self.conv1 = ConvBNAct(c_in, hidden, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(k, stride=1, padding=k // 2) for k in kernels)
        self.conv2 = ConvBNAct(hidden * (len(kernels) + 1), c_out, 1)

    def forward(self, x):
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [m(x) for m in self.m], dim=1))


class CSPDarknet(nn.Module):
    def __init__(self, depth: float, width: float):
        super().__init__()
        c = int(width * 64)  # 24 for tiny
        n = max(round(depth * 3), 1)  # 1 for tiny
        self.stem = Focus(3, c)
        self.dark2 = nn.Sequential(ConvBNAct(c, 2 * c, 3, 2), CSPLayer(2 * c, 2 * c, n))
        self.dark3 = nn.Sequential(ConvBNAct(2 * c, 4 * c, 3, 2), CSPLayer(4 * c, 4 * c, 3 * n))
        self.dark4 = nn.Sequential(ConvBNAct(4 * c, 8 * c, 3, 2), CSPLayer(8 * c, 8 * c, 3 * n))
        self.dark5 = nn.Sequential(
            ConvBNAct(8 * c, 16 * c, 3, 2),
            SPPBottleneck(16 * c, 16 * c),
            CSPLayer(16 * c, 16 * c, n, shortcut=False),
        )

    def forward(self, x):
        x = self.dark2(self.stem(x))
        c3 = self.dark3(x)
        c4 = self.dark4(c3)
        c5 = self.dark5(c4)
        return c3, c4, c5


class PAFPN(nn.Module):
    """Top-down then bottom-up fusion of the stride 8/16/32 features."""

    def __init__(self, depth: float, width: float):
        super().__init__()
        self.backbone = CSPDarknet(depth, width)
        c3, c4, c5 = (int(width * c) for c in (256, 512, 1024))  # 96, 192, 384
        n = round(3 * depth)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.lateral_conv0 = ConvBNAct(c5, c4, 1)
        self.C3_p4 = CSPLayer(2 * c4, c4, n, shortcut=False)
        self.reduce_conv1 = ConvBNAct(c4, c3, 1)
        self.C3_p3 = CSPLayer(2 * c3, c3, n, shortcut=False)
        self.bu_conv2 = ConvBNAct(c3, c3, 3, 2)
        self.C3_n3 = CSPLayer(2 * c3, c4, n, shortcut=False)
        self.bu_conv1 = ConvBNAct(c4, c4, 3, 2)
        self.C3_n4 = CSPLayer(2 * c4, c5, n, shortcut=False)

    def forward(self, x):
        x3, x4, x5 = self.backbone(x)
        top5 = self.lateral_conv0(x5)
        p4 = self.C3_p4(torch.cat((self.upsample(top5), x4), 1))
        top4 = self.reduce_conv1(p4)
        out3 = self.C3_p3(torch.cat((self.upsample(top4), x3), 1))
        out4 = self.C3_n3(torch.cat((self.bu_conv2(out3), top4), 1))
        out5 = self.C3_n4(torch.cat((self.bu_conv1(out4), top5), 1))
        return out3, out4, out5


class YOLOXHead(nn.Module):
    """Decoupled head: per level a 1x1 stem, then separate cls and reg towers of two 3x3 convs;
    objectness is predicted from the reg tower."""

    def __init__(self, num_classes: int, width: float, in_channels=(256, 512, 1024)):
        super().__init__()
        hidden = int(256 * width)
        self.stems = nn.ModuleList(ConvBNAct(int(c * width), hidden, 1) for c in in_channels)
        tower = lambda: nn.Sequential(ConvBNAct(hidden, hidden, 3), ConvBNAct(hidden, hidden, 3))  # noqa: E731
        self.cls_convs = nn.ModuleList(tower() for _ in in_channels)
        self.reg_convs = nn.ModuleList(tower() for _ in in_channels)
        self.cls_preds = nn.ModuleList(nn.Conv2d(hidden, num_classes, 1) for _ in in_channels)
        self.reg_preds = nn.ModuleList(nn.Conv2d(hidden, 4, 1) for _ in in_channels)
        self.obj_preds = nn.ModuleList(nn.Conv2d(hidden, 1, 1) for _ in in_channels)

    def forward(self, feats):
        outs = []
        for i, x in enumerate(feats):
            x = self.stems[i](x)
            reg = self.reg_convs[i](x)
            cls = self.cls_convs[i](x)
            out = torch.cat(
                (self.reg_preds[i](reg), self.obj_preds[i](reg).sigmoid(), self.cls_preds[i](cls).sigmoid()), 1
            )
            outs.append(out.flatten(2))  # (N, 5 + C, H*W), row-major over the grid
        return torch.cat(outs, 2).permute(0, 2, 1)  # (N, anchors, 5 + C), levels stride 8 -> 32


class YOLOX(nn.Module):
    """Returns the raw head output (N, anchors, 4 + 1 + C): box regressions (not yet decoded),
    sigmoid objectness, sigmoid class scores. Grid decoding and NMS happen in NumPy
    (patou.models.detector) so they are testable without torch."""

    def __init__(self, num_classes: int = 1, depth: float = 0.33, width: float = 0.375):
        super().__init__()
        self.backbone = PAFPN(depth, width)
        self.head = YOLOXHead(num_classes, width)

    def forward(self, x):
        return self.head(self.backbone(x))


def yolox_tiny(num_classes: int = 1) -> YOLOX:
    return YOLOX(num_classes, depth=0.33, width=0.375)
