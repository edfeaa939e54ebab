"""patou's DeepFaune networks against DeepFaune's own, built with timm (the reference implementation).

tests/data/deepfaune/ is made by `tools/deepfaune_reference.py fixtures` in the reference environment
(timm 1.0.31, never a dependency of patou): for every version, the network `timm.create_model` builds
for DeepFaune's backbone in a reduced width (same timm class, same class token / registers / RoPE /
position grid), random weights, saved in DeepFaune's checkpoint layout, and timm's logits and features
on real crops cut as DeepFaune cuts them (crops.npz holds those pixels). Here patou's plain-torch
networks read the same files and must compute the same numbers."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.torch

torch = pytest.importorskip("torch")

from patou.convert import eva  # noqa: E402
from patou.models import registry  # noqa: E402

DATA = Path(__file__).parents[1] / "data" / "deepfaune"
REF = json.loads((DATA / "reference.json").read_text())
VERSIONS = REF["versions"]
CLASSES = {"1.1": registry._DF_26, "1.2": registry._DF_30, "1.3": registry._DF_34, "1.4": registry._DF_38,
           "1.5": registry._DF_40}
TOL = 1e-4
MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)  # DeepFaune's Normalize
STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)


def crops(size: int) -> np.ndarray:
    return np.load(DATA / "crops.npz")[f"crops_{size}"]


def deepfaune_input(size: int) -> torch.Tensor:
    """DeepFaune's ToTensor + Normalize of the recorded crops."""
    return torch.from_numpy((crops(size).astype(np.float32).transpose(0, 3, 1, 2) / 255.0 - MEAN) / STD)


def torch_network(version: str, sd: dict):
    """patou's plain-torch network for a version's state_dict, sized for its crop."""
    r = VERSIONS[version]
    if r["backbone"].startswith("vit_large_patch16_dinov3"):
        model = eva.from_state_dict(sd, prefix="base_model.")
    else:
        from patou.convert import vit

        model = vit.from_state_dict(sd, prefix="base_model.")
    assert model.blocks[0].heads == r["create_model"]["num_heads"]  # what timm was told, read from 64-wide heads
    model.set_input_size(r["crop"])
    return model


def state_dict(version: str) -> dict:
    return torch.load(DATA / VERSIONS[version]["checkpoint"], map_location="cpu", weights_only=True)["state_dict"]


def test_fixtures_are_in_deepfaunes_layout_and_small():
    for v, r in VERSIONS.items():
        ck = torch.load(DATA / r["checkpoint"], map_location="cpu", weights_only=True)
        assert ck["args"]["backbone"] == r["backbone"] and ck["args"]["num_classes"] == r["num_classes"], v
        assert all(k.startswith("base_model.") for k in ck["state_dict"]), v
        assert {t.dtype for t in ck["state_dict"].values()} == {torch.float16}  # as DeepFaune 1.5 may store them
        assert len(ck["state_dict"]["base_model.head.bias"]) == len(CLASSES[v]) == r["num_classes"], v
    assert sum(p.stat().st_size for p in DATA.iterdir()) < 3 * 2**20


def test_the_dinov3_fixture_has_the_real_structure():
    """Narrow, but what makes DINOv3 DINOv3: 4 registers, no position embedding, LayerScale, patch 16."""
    sd = state_dict("1.5")
    arch = eva.architecture({k[len("base_model."):]: tuple(t.shape) for k, t in sd.items()})
    assert arch["registers"] == 4 and arch["patch"] == 16 and arch["classes"] == 40
    assert not any("pos_embed" in k for k in sd) and "base_model.blocks.0.gamma_1" in sd
    assert "base_model.blocks.0.attn.qkv.bias" not in sd and "base_model.blocks.0.attn.q_bias" not in sd


@pytest.mark.parametrize("version", list(VERSIONS))
def test_patou_network_computes_what_timm_computes(version):
    r = VERSIONS[version]
    model = torch_network(version, state_dict(version))
    with torch.no_grad():
        logits, features = (t.numpy() for t in model(deepfaune_input(r["crop"])))
    want, want_f = np.asarray(r["logits"]), np.asarray(r["features"])
    assert np.abs(want).max() > 5  # logits of a scale where a 1e-4 agreement means something
    assert np.abs(logits - want).max() <= TOL, np.abs(logits - want).max()
    assert np.abs(features - want_f).max() <= TOL
    assert logits.argmax(1).tolist() == r["top1"]


def test_every_parameter_matters():
    """The fixture's weights are away from their init: zeroing LayerScale, a register token or the
    final norm's bias each moves the logits (so the comparison above exercised them)."""
    sd = state_dict("1.5")
    x = deepfaune_input(224)
    base = torch_network("1.5", sd)(x)[0].detach()
    for key in ("base_model.blocks.1.gamma_2", "base_model.reg_token", "base_model.norm.bias",
                "base_model.blocks.0.attn.proj.bias"):
        changed = dict(sd)
        changed[key] = torch.zeros_like(sd[key])
        got = torch_network("1.5", changed)(x)[0].detach()
        assert (got - base).abs().max() > 1e-2, key


@pytest.mark.parametrize("kind", ["unexpected", "missing", "misshapen", "dinov2"])
def test_eva_loads_strictly(kind):
    sd = dict(state_dict("1.5"))
    if kind == "unexpected":
        sd["base_model.blocks.0.attn.q_bias"] = torch.zeros(128)
        match = "unexpected keys base_model.blocks.0.attn.q_bias"
    elif kind == "missing":
        del sd["base_model.blocks.1.gamma_2"]
        match = "missing keys base_model.blocks.1.gamma_2"
    elif kind == "misshapen":
        sd["base_model.blocks.0.mlp.fc2.bias"] = torch.zeros(129)
        match = r"base_model.blocks.0.mlp.fc2.bias \(129,\) \(expected \(128,\)\)"
    else:  # a DINOv2 checkpoint is not a DINOv3 one
        sd = state_dict("1.4")
        match = "missing base_model.reg_token"
    with pytest.raises(ValueError, match=match):
        eva.from_state_dict(sd, prefix="base_model.")


def test_rope_needs_its_input_size():
    model = torch_network("1.5", state_dict("1.5"))
    with pytest.raises(ValueError, match="patch grid"):
        model(torch.zeros(1, 3, 240, 240))
    with pytest.raises(ValueError, match="not a multiple of the patch 16"):
        model.set_input_size(230)


def test_class_orders():
    entry = registry.REGISTRY["deepfaune"]
    v14 = entry.versions["1.4"].classes
    assert [c for c in registry._DF_40 if c not in ("mongoose", "arctic fox")] == list(v14)
    assert registry._DF_40.index("mongoose") == v14.index("lynx") + 1
    assert registry._DF_40[registry._DF_40.index("fox") + 1] == "arctic fox"
    assert len(registry._DF_30) == 30 and registry._DF_30[:4] == ("badger", "ibex", "beaver", "red deer")
    assert len(set(registry._DF_30)) == 30 and set(registry._DF_30) <= set(v14)


def test_taxonomy_maps_every_class_of_every_version():
    from patou.models.card import ASSETS

    bundled = set(json.loads((ASSETS / "efficientnet_lite0_imagenet.json").read_text())["labels"])
    tax = registry.read_class_table(registry.DEEPFAUNE_CLASSES)
    for classes in (registry._DF_26, registry._DF_30, registry._DF_34, registry._DF_38, registry._DF_40):
        assert set(classes) <= set(tax)
    assert {t.group for t in tax.values()} <= bundled  # coarse groups are the bundled model's labels
    assert len({t.label for t in tax.values()}) == len(tax)
    assert tax["arctic fox"].label == "arctic_fox" and tax["arctic fox"].group == "fox"
    assert tax["arctic fox"].row["scientificName"] == "Vulpes lagopus"
    assert tax["mongoose"].row["taxonRank"] == "family" and tax["mongoose"].row["scientificName"] == "Herpestidae"


def test_patous_square_clip_crop_is_deepfaunes_crop(real):
    """patou's card crop (square-clip, bicubic) against the crops DeepFaune's own code cut from the
    same photos (one of them clipped by the image edge): DeepFaune rounds the box to whole pixels,
    patou resamples the exact box, so the two differ by less than DeepFaune's crop moved by one pixel."""
    from PIL import Image, ImageOps

    from patou.models.classifier import crop

    for size in (182, 224):
        for i, meta in enumerate(REF[f"crops_{size}"]):
            img = ImageOps.exif_transpose(Image.open(real / meta["photo"])).convert("RGB")
            got = crop(img, meta["box"], size, margin=0.0, mode="square-clip", resample=Image.Resampling.BICUBIC)
            diff = np.abs(got.astype(int) - crops(size)[i].astype(int)).mean()
            assert diff <= 1.1 * meta["one_pixel_shift_mean_abs_diff"], (meta["photo"], diff)
            # the bundled model's rule (square-pad, a margin) is another crop altogether
            other = crop(img, meta["box"], size, margin=0.1, mode="square-pad", resample=Image.Resampling.BICUBIC)
            assert np.abs(other.astype(int) - crops(size)[i].astype(int)).mean() > 3 * diff
