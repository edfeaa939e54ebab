"""The embedding network (torch, training and export only): an ImageNet EfficientNet-Lite0 cut
in two, a frozen `prefix` (stem + first blocks) and a trainable `suffix` (last blocks, head
convolution, average pooling, a linear projection and BatchNorm), output L2-normalised.

The cut lets training compute the prefix once per augmented view and cache it: on 2 CPU cores
the frozen early blocks at full resolution are most of the cost of a step, and identity cues
(coat pattern, markings, face shape) are learnt in the late blocks anyway.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from patou.train.backbones import build

N_BLOCKS = 16  # efficientnet-lite0


class Prefix(nn.Module):
    def __init__(self, net, cut: int):
        super().__init__()
        self.stem, self.bn0, self.act = net._conv_stem, net._bn0, net._swish
        self.blocks = nn.ModuleList(net._blocks[:cut])

    def forward(self, x):
        x = self.act(self.bn0(self.stem(x)))
        for b in self.blocks:
            x = b(x)
        return x


class Suffix(nn.Module):
    def __init__(self, net, cut: int, dim: int):
        super().__init__()
        self.blocks = nn.ModuleList(net._blocks[cut:])
        self.conv_head, self.bn1, self.act = net._conv_head, net._bn1, net._swish
        n_features = net._conv_head.out_channels
        self.proj = nn.Linear(n_features, dim, bias=False)
        self.bn = nn.BatchNorm1d(dim)  # the "BNNeck" of re-id baselines: a normalised embedding space

    def forward(self, x):
        for b in self.blocks:
            x = b(x)  # no drop-connect: the cached views are the regularisation here
        x = self.act(self.bn1(self.conv_head(x))).mean((2, 3))
        return self.bn(self.proj(x))


class EmbeddingNet(nn.Module):
    """images (N, 3, S, S), normalised as the card says -> (N, dim) unit vectors."""

    def __init__(self, image_size: int = 224, dim: int = 512, cut: int = 8):
        super().__init__()
        if not 0 < cut < N_BLOCKS:
            raise ValueError(f"cut {cut}: expected 1..{N_BLOCKS - 1} (the blocks left frozen)")
        backbone, self.spec = build("efficientnet-lite0", 2, image_size)
        net = backbone.backbone.net
        self.prefix = Prefix(net, cut)
        self.suffix = Suffix(net, cut, dim)
        self.cut, self.dim = cut, dim
        for p in self.prefix.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.prefix.eval()  # frozen: BatchNorm statistics stay ImageNet's
        return self

    def forward(self, x):
        return F.normalize(self.suffix(self.prefix(x)), dim=1)


class ArcFace(nn.Module):
    """Additive angular margin loss (Deng et al. 2019): logits s*cos(theta + m) for the true class."""

    def __init__(self, dim: int, n_classes: int, s: float = 30.0, m: float = 0.3, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(n_classes, dim, generator=g) * 0.01)
        self.s, self.m = s, m

    def forward(self, emb, target):
        cos = F.linear(F.normalize(emb, dim=1), F.normalize(self.weight, dim=1)).clamp(-1 + 1e-7, 1 - 1e-7)
        theta = torch.acos(cos)
        onehot = F.one_hot(target, cos.shape[1]).bool()
        logits = torch.where(onehot, torch.cos(theta + self.m), cos) * self.s
        return F.cross_entropy(logits, target), cos
