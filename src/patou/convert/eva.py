"""A DINOv3 ViT (timm's `Eva` as `vit_*_patch16_dinov3` builds it) in plain torch, for converting checkpoints.

DeepFaune 1.5 is `timm.create_model("vit_large_patch16_dinov3.lvd1689m", global_pool="token")`: patch
embedding, a class token and 4 register tokens, no absolute position embedding but rotary ones (RoPE,
DINOv3's variant: patch centres normalised to [-1, 1] per axis, periods 100 ** (2k / (head_dim / 2)),
"rotate half" layout) applied to the patch tokens' queries and keys only, pre-norm blocks without a qkv
bias and with LayerScale `gamma_1`/`gamma_2`, a final norm, and a linear head on the class token.
Parameter names are timm's, so a checkpoint maps key for key (`from_state_dict`, strict); the
architecture is read from the tensors' shapes, the head count (not in the tensors) from DINOv3's head
width of 64 (ViT-S/B/L/H+; ViT-L/16 has 16 heads), as convert/vit.py does for DINOv2.

The RoPE tables are computed once for a fixed input size (`set_input_size`), as timm computes them for a
dynamic image size, so the exported graph holds them as constants. Used at install time only (torch is
never imported for inference).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from patou.convert.checkpoint import check_limits, mismatches, strip_prefix

HEAD_DIM = 64  # every DINOv3 ViT up to H+ has 64-wide attention heads (the 7B's are 128: not converted here)
EPS = 1e-5  # timm's LayerNorm eps for the DINOv3 ViTs
ROPE_TEMPERATURE = 100.0  # DINOv3's RoPE base
MLP_RATIO = 4


def rope_tables(grid: tuple[int, int], head_dim: int, temperature: float = ROPE_TEMPERATURE) -> tuple[torch.Tensor, torch.Tensor]:
    """(sin, cos), each (H * W, head_dim), for a grid of patches: timm's RotaryEmbeddingDinoV3 without
    its training-time augmentations, in the same float32 operations so the tables are bit for bit its own."""
    n = head_dim // 4  # a frequency per axis for each quarter of the head
    exponents = 2.0 * torch.arange(n, dtype=torch.float32) / (head_dim // 2)
    periods = temperature ** exponents
    axes = [(torch.arange(0.5, s, dtype=torch.float32) + 0.0) / float(s) for s in grid]  # patch centres in [0, 1]
    coords = 2.0 * torch.stack(torch.meshgrid(axes, indexing="ij"), dim=-1) - 1.0  # (H, W, 2) in [-1, 1]
    angles = 2 * math.pi * coords.flatten(0, -2)[:, :, None] / periods[None, None, :]
    angles = angles.flatten(1)  # (HW, head_dim / 2): the row frequencies, then the column ones
    return torch.cat([angles.sin()] * 2, dim=-1), torch.cat([angles.cos()] * 2, dim=-1)


def _rotate(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=EPS)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.attn.proj = nn.Linear(dim, dim)
        self.gamma_1 = nn.Parameter(torch.ones(dim))
        self.norm2 = nn.LayerNorm(dim, eps=EPS)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, hidden)
        self.mlp.fc2 = nn.Linear(hidden, dim)
        self.gamma_2 = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor, prefix: int) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.attn.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        # the class and register tokens have no position: only the patch tokens are rotated
        q = torch.cat([q[:, :, :prefix], _rotate(q[:, :, prefix:], sin, cos)], dim=2)
        k = torch.cat([k[:, :, :prefix], _rotate(k[:, :, prefix:], sin, cos)], dim=2)
        a = (q * (1.0 / math.sqrt(d // self.heads))) @ k.transpose(-2, -1)
        y = (a.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, d)
        x = x + self.gamma_1 * self.attn.proj(y)
        return x + self.gamma_2 * self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class DinoV3Eva(nn.Module):
    """`forward` returns (logits, features), features = the normed class token the head reads."""

    def __init__(self, dim: int, depth: int, patch: int, heads: int, hidden: int, registers: int, num_classes: int):
        super().__init__()
        if dim % heads or (dim // heads) % 4:
            raise ValueError(f"width {dim} with {heads} heads: the head width must be a multiple of 4 (RoPE)")
        self.patch, self.heads = patch, heads
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.reg_token = nn.Parameter(torch.zeros(1, registers, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=EPS)
        self.head = nn.Linear(dim, num_classes)
        self.grid: tuple[int, int] | None = None

    @property
    def prefix(self) -> int:
        return 1 + self.reg_token.shape[1]

    def set_input_size(self, image_size: int) -> None:
        """Compute the RoPE tables for `image_size` (square), once: the exported graph has a fixed input."""
        if image_size % self.patch:
            raise ValueError(f"input size {image_size} is not a multiple of the patch {self.patch}")
        g = image_size // self.patch
        sin, cos = rope_tables((g, g), self.head.in_features // self.heads)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.grid = (g, g)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.patch_embed.proj(x)
        if self.grid is None or tuple(x.shape[-2:]) != self.grid:
            raise ValueError(f"input gives a {tuple(x.shape[-2:])} patch grid, the RoPE tables are for {self.grid}"
                             " (call set_input_size first)")
        x = x.flatten(2).transpose(1, 2)
        b = x.shape[0]
        x = torch.cat([self.cls_token.expand(b, -1, -1), self.reg_token.expand(b, -1, -1), x], dim=1)
        for blk in self.blocks:
            x = blk(x, self.rope_sin, self.rope_cos, self.prefix)
        features = self.norm(x)[:, 0]
        return self.head(features), features


def architecture(shapes: dict[str, tuple[int, ...]], prefix: str = "") -> dict[str, int]:
    """Width, depth, patch, MLP width, registers and classes, read from the tensors' shapes alone
    (a checkpoint's shapes are known before any weight is read)."""
    need = ("patch_embed.proj.weight", "reg_token", "head.weight", "blocks.0.mlp.fc1.weight")
    missing = [prefix + k for k in need if k not in shapes]
    if missing:
        raise ValueError(f"not a DINOv3 ViT checkpoint: missing {', '.join(missing)}")
    pe = shapes["patch_embed.proj.weight"]
    if len(pe) != 4 or pe[1] != 3 or pe[2] != pe[3]:
        raise ValueError(f"{prefix}patch_embed.proj.weight {pe}: not a square RGB patch embedding")
    depth = 1 + max(int(k.split(".")[1]) for k in shapes if k.startswith("blocks.") and k.split(".")[1].isdigit())
    reg, head, fc1 = shapes["reg_token"], shapes["head.weight"], shapes["blocks.0.mlp.fc1.weight"]
    if len(reg) != 3 or len(head) != 2 or len(fc1) != 2:
        raise ValueError(f"{prefix}reg_token, head.weight or blocks.0.mlp.fc1.weight of an unexpected rank")
    return {"width": pe[0], "depth": depth, "patch": pe[2], "mlp": fc1[0], "registers": reg[1], "classes": head[0]}


def expected_shapes(width: int, depth: int, patch: int, mlp: int, registers: int, classes: int) -> dict[str, tuple]:
    """Every key of timm's state_dict for this architecture (non-persistent buffers excluded), with its shape."""
    dim, hidden, num_classes = width, mlp, classes
    out = {"cls_token": (1, 1, dim), "reg_token": (1, registers, dim), "patch_embed.proj.weight": (dim, 3, patch, patch),
           "patch_embed.proj.bias": (dim,), "norm.weight": (dim,), "norm.bias": (dim,),
           "head.weight": (num_classes, dim), "head.bias": (num_classes,)}
    for i in range(depth):
        b = f"blocks.{i}."
        out.update({b + "gamma_1": (dim,), b + "gamma_2": (dim,), b + "norm1.weight": (dim,), b + "norm1.bias": (dim,),
                    b + "attn.qkv.weight": (3 * dim, dim), b + "attn.proj.weight": (dim, dim), b + "attn.proj.bias": (dim,),
                    b + "norm2.weight": (dim,), b + "norm2.bias": (dim,), b + "mlp.fc1.weight": (hidden, dim),
                    b + "mlp.fc1.bias": (hidden,), b + "mlp.fc2.weight": (dim, hidden), b + "mlp.fc2.bias": (dim,)})
    return out


def from_state_dict(state: dict, prefix: str = "", limits: dict | None = None) -> DinoV3Eva:
    """Build the network the tensors describe and load them strictly: every expected key present, no
    key left over, every shape equal. Raises ValueError naming what does not fit. `limits` (a registry
    entry's network: width, depth, mlp at most; patch, classes, registers exactly) are checked on the
    shapes alone, before anything is allocated."""
    sd = strip_prefix(state, prefix)
    bad = [prefix + k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{bad[0][:60]} is not a tensor")
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    arch = architecture(shapes, prefix)
    if limits:
        check_limits(arch, limits)
    problems = mismatches(shapes, expected_shapes(**arch), prefix)
    if problems:
        raise ValueError("checkpoint does not match a DINOv3 ViT: " + "; ".join(problems))
    model = DinoV3Eva(arch["width"], arch["depth"], arch["patch"], max(arch["width"] // HEAD_DIM, 1), arch["mlp"],
                      arch["registers"], arch["classes"])
    # checkpoints may be stored in fp16 (DeepFaune 1.5 says so); the network computes in fp32
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return model.eval()
