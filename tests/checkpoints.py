"""A DeepFaune-layout checkpoint with a tiny ViT and random weights (convert/test_models_install,
run/test_hostile_inputs, tools/probe_hostile.py, benchmarks/hostile_sizes.py)."""
from __future__ import annotations

from pathlib import Path

import torch


def make_checkpoint(path, num_classes=38, depth=2, dim=64, hidden=128, grid=37, seed=0, extra_key=None,
                    backbone="vit_large_patch14_dinov2.lvd142m"):
    """DeepFaune's checkpoint layout ({'args', 'state_dict'} with 'base_model.' timm keys, a 518-px
    grid of 37x37 position embeddings), with a tiny ViT and random weights."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, s=0.05):
        return torch.randn(*shape, generator=g) * s

    def lin(out, fan_in, gain=1.6):  # scaled by fan-in, so a full-size ViT-L stays numerically sane
        return r(out, fan_in, s=gain / fan_in ** 0.5)

    sd = {"cls_token": r(1, 1, dim), "pos_embed": r(1, 1 + grid * grid, dim), "patch_embed.proj.weight": r(dim, 3, 14, 14),
          "patch_embed.proj.bias": r(dim), "norm.weight": 1 + r(dim), "norm.bias": r(dim),
          "head.weight": lin(num_classes, dim, gain=8.0), "head.bias": r(num_classes)}
    for i in range(depth):
        b = f"blocks.{i}."
        sd.update({b + "norm1.weight": 1 + r(dim), b + "norm1.bias": r(dim), b + "attn.qkv.weight": lin(3 * dim, dim),
                   b + "attn.qkv.bias": r(3 * dim), b + "attn.proj.weight": lin(dim, dim), b + "attn.proj.bias": r(dim),
                   b + "ls1.gamma": r(dim, s=0.5), b + "norm2.weight": 1 + r(dim), b + "norm2.bias": r(dim),
                   b + "mlp.fc1.weight": lin(hidden, dim), b + "mlp.fc1.bias": r(hidden),
                   b + "mlp.fc2.weight": lin(dim, hidden), b + "mlp.fc2.bias": r(dim), b + "ls2.gamma": r(dim, s=0.5)})
    if extra_key:
        sd[extra_key] = r(dim)
    ckpt = {"args": {"backbone": backbone, "num_classes": num_classes, "lr": 1e-4},
            "state_dict": {"base_model." + k: v for k, v in sd.items()}}
    torch.save(ckpt, path)
    return Path(path)


def make_dinov3_checkpoint(path, num_classes=40, depth=2, dim=128, hidden=512, registers=4, seed=0,
                           backbone="vit_large_patch16_dinov3.lvd1689m"):
    """DeepFaune 1.5's layout (timm's Eva keys for its DINOv3 ViT under 'base_model.'), random weights,
    without timm: the keys and shapes are convert/eva.py's, which tests/convert/test_deepfaune_reference.py
    proves equal to timm's on the fixtures timm made."""
    from patou.convert.eva import expected_shapes

    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in expected_shapes(dim, depth, 16, hidden, registers, num_classes).items():
        r = torch.randn(*shape, generator=g)
        leaf = k.rsplit(".", 1)[-1]
        if "norm" in k:
            sd[k] = 1 + 0.05 * r if leaf == "weight" else 0.05 * r
        elif leaf in ("bias", "cls_token", "reg_token") or leaf.startswith("gamma"):
            sd[k] = 0.05 * r if leaf == "bias" else 0.5 * r
        else:  # weights scaled by fan-in, so a full-size ViT-L stays numerically sane
            sd[k] = r * ((8.0 if k.startswith("head") else 1.6) / r[0].numel() ** 0.5)
    torch.save({"args": {"backbone": backbone, "num_classes": num_classes, "lr": 1e-4},
                "state_dict": {"base_model." + k: v for k, v in sd.items()}}, path)
    return Path(path)
