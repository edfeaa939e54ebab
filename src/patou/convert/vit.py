"""A DINOv2 ViT (timm's `vit_*_patch14_dinov2` layout) in plain torch, for converting checkpoints.

timm imports torchvision, which does not import beside the CPU torch wheel here, so the network
is written out: patch embedding, class token, absolute position embedding, pre-norm blocks with
LayerScale, final norm, linear head on the class token. Parameter names are timm's, so a
checkpoint maps key for key (`load_strict`); the architecture (width, depth, patch) is read from
the tensors' shapes, the head count from DINOv2's fixed head width of 64.

Used at install time only (torch is never imported for inference).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from patou.convert.checkpoint import check_limits

HEAD_DIM = 64  # every DINOv2 ViT (S/B/L/g) has 64-wide attention heads
EPS = 1e-6  # timm's LayerNorm eps for these models


class Block(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.heads = max(dim // HEAD_DIM, 1)
        self.norm1 = nn.LayerNorm(dim, eps=EPS)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(dim, dim * 3)
        self.attn.proj = nn.Linear(dim, dim)
        self.ls1 = nn.Module()
        self.ls1.gamma = nn.Parameter(torch.ones(dim))
        self.norm2 = nn.LayerNorm(dim, eps=EPS)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, hidden)
        self.mlp.fc2 = nn.Linear(hidden, dim)
        self.ls2 = nn.Module()
        self.ls2.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.attn.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        # written out rather than F.scaled_dot_product_attention: the legacy ONNX exporter's
        # graph for it is the same, and this is readable
        a = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d // self.heads))
        y = (a.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, d)
        x = x + self.ls1.gamma * self.attn.proj(y)
        return x + self.ls2.gamma * self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class DinoV2ViT(nn.Module):
    """ViT with a class token; `forward` returns (logits, features), features = normed class token."""

    def __init__(self, dim: int, depth: int, patch: int, grid: int, hidden: int, num_classes: int):
        super().__init__()
        self.patch = patch
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        self.blocks = nn.ModuleList(Block(dim, hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=EPS)
        self.head = nn.Linear(dim, num_classes)

    @property
    def grid(self) -> int:
        return math.isqrt(self.pos_embed.shape[1] - 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        if x.shape[1] != self.pos_embed.shape[1] - 1:
            raise ValueError(f"input gives {x.shape[1]} patches, the position embedding has {self.pos_embed.shape[1] - 1}"
                             " (call resize_grid first)")
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        features = self.norm(x)[:, 0]
        return self.head(features), features

    def set_input_size(self, image_size: int) -> None:
        """The one input size the exported graph takes (eva.DinoV3Eva has the same method)."""
        self.resize_grid(image_size)

    @torch.no_grad()
    def resize_grid(self, image_size: int) -> None:
        """Resample the position embedding once to `image_size`'s patch grid, as timm does for a
        dynamic image size (bicubic, antialiased), so the exported graph has a fixed embedding."""
        new = image_size // self.patch
        if new == self.grid:
            return
        cls_pos, grid_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        d, g = grid_pos.shape[-1], self.grid
        grid_pos = grid_pos.reshape(1, g, g, d).permute(0, 3, 1, 2).float()
        grid_pos = F.interpolate(grid_pos, size=(new, new), mode="bicubic", antialias=True, align_corners=False)
        grid_pos = grid_pos.permute(0, 2, 3, 1).reshape(1, new * new, d)
        self.pos_embed = nn.Parameter(torch.cat([cls_pos, grid_pos], dim=1))


def expected_keys(depth: int) -> set[str]:
    keys = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight",
            "norm.bias", "head.weight", "head.bias"}
    for i in range(depth):
        for name in ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
                     "attn.proj.bias", "ls1.gamma", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
                     "mlp.fc2.weight", "mlp.fc2.bias", "ls2.gamma"):
            keys.add(f"blocks.{i}.{name}")
    return keys


def architecture(shapes: dict[str, tuple[int, ...]], prefix: str = "") -> dict[str, int]:
    """Width, depth, patch, MLP width, position grid and classes, read from the tensors' shapes alone
    (a checkpoint's shapes are known before any weight is read)."""
    need = ("patch_embed.proj.weight", "pos_embed", "head.weight")
    missing = [prefix + k for k in need if k not in shapes]
    if missing:
        raise ValueError(f"not a ViT checkpoint: missing {', '.join(missing)}")
    depth = 1 + max((int(k.split(".")[1]) for k in shapes if k.startswith("blocks.") and k.split(".")[1].isdigit()),
                    default=-1)
    for k, ndim in (("patch_embed.proj.weight", 4), ("pos_embed", 3), ("head.weight", 2)):
        if len(shapes[k]) != ndim:
            raise ValueError(f"{prefix}{k} has {len(shapes[k])} dimensions, a ViT's has {ndim}")
    dim, _, patch, _ = shapes["patch_embed.proj.weight"]
    n_pos = shapes["pos_embed"][1] - 1
    grid = math.isqrt(max(n_pos, 0))
    if grid * grid != n_pos:
        raise ValueError(f"{prefix}pos_embed has {n_pos} patch positions, not a square grid")
    if depth == 0 or "blocks.0.mlp.fc1.weight" not in shapes:
        raise ValueError(f"not a ViT checkpoint: no {prefix}blocks.0.mlp.fc1.weight")
    return {"width": dim, "depth": depth, "patch": patch, "mlp": shapes["blocks.0.mlp.fc1.weight"][0], "grid": grid,
            "classes": shapes["head.weight"][0]}


def from_state_dict(state: dict, prefix: str = "", limits: dict | None = None) -> DinoV2ViT:
    """Build the network the tensors describe and load them strictly: every expected key present,
    no key left over, every shape equal. Raises ValueError naming what does not fit.

    `limits` (width, depth, mlp, grid: at most; patch: exactly; classes: exactly) are checked on
    the shapes alone, before anything is allocated."""
    sd = {}
    stray = []
    for k, v in state.items():
        if isinstance(k, str) and k.startswith(prefix):
            if not isinstance(v, torch.Tensor):
                raise ValueError(f"{k} is {type(v).__name__}, not a tensor")
            sd[k[len(prefix):]] = v
        else:
            stray.append(str(k)[:60])
    if stray:
        raise ValueError(f"unexpected keys without the {prefix!r} prefix: {', '.join(sorted(stray)[:5])}")
    arch = architecture({k: tuple(v.shape) for k, v in sd.items()}, prefix)
    if limits:
        check_limits(arch, limits)
    dim, depth, patch, grid, hidden, num_classes = (arch[k] for k in ("width", "depth", "patch", "grid", "mlp", "classes"))
    want = expected_keys(depth)
    extra, absent = sorted(set(sd) - want), sorted(want - set(sd))
    if extra or absent:
        parts = []
        if extra:
            parts.append(f"unexpected keys {', '.join(prefix + k for k in extra[:5])}" + (" ..." if len(extra) > 5 else ""))
        if absent:
            parts.append(f"missing keys {', '.join(prefix + k for k in absent[:5])}" + (" ..." if len(absent) > 5 else ""))
        raise ValueError("checkpoint does not match a DINOv2 ViT: " + "; ".join(parts))
    model = DinoV2ViT(int(dim), depth, int(patch), grid, int(hidden), int(num_classes))
    own = model.state_dict()
    bad = [f"{prefix}{k} {tuple(v.shape)} (expected {tuple(own[k].shape)})" for k, v in sd.items()
           if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise ValueError("checkpoint shapes do not fit: " + ", ".join(bad[:5]))
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return model.eval()
