"""`patou train | evaluate | export` end to end on a small bear-vs-other set of real photos.

Two epochs at 128 px: these tests check that the commands fit together (split, cache, model
folder, `patou run --model`, report, int8), not how good a model 14 photos make.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

pytestmark = [pytest.mark.slow, pytest.mark.torch]

pytest.importorskip("torch", reason="torch not installed (pip install -e '.[train]')")
pytest.importorskip("sklearn", reason="scikit-learn not installed (pip install -e '.[train]')")

from patou.cli import app  # noqa: E402
from patou.models.card import ModelCard  # noqa: E402

Z = "zamba-ena24-small/tests/assets/images/ena24_small/"
S = "speciesnet-cameratrapai/test_data/"
A = "animl-py-southwest/examples/Southwest/"
TREE = {  # site/label -> real photos (symlinked: nothing is copied)
    "ena/bear": [Z + "8786.jpg", Z + "8831.jpg", Z + "9455.jpg"],
    "ena/other": [Z + "2999.jpg", Z + "4383.jpg", Z + "49.jpg", Z + "6039.jpg", Z + "352.jpg", Z + "2480.jpg"],
    "nacti/bear": [S + "american_black_bear.jpg"],
    "nacti/other": [S + "domestic_dog.jpg", S + "domestic_cattle.jpg", S + "human.jpg"],
    "sw/other": [A + "2021-06-30_SYFR0218_cougar.JPG", A + "IMAG0107_deer.JPG", A + "IMAG0031_wolf.JPG"],
    "nacti/empty": [S + "blank.jpg"],
}
FAST = ["--epochs", "2", "--head-epochs", "1", "--image-size", "128", "--batch-size", "8", "--val-fraction", "0.3",
        "--quiet"]
runner = CliRunner()


def _invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def data(real, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for folder, rels in TREE.items():
        (root / folder).mkdir(parents=True)
        for rel in rels:
            (root / folder / Path(rel).name).symlink_to(real / rel)
    return root


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    base = tmp_path_factory.mktemp("model")
    out, cache = base / "model", base / "cache"
    result = _invoke("train", data, "--out", out, "--cache-dir", cache, *FAST)
    assert result.exit_code == 0, result.output
    return out, cache


def test_train_writes_a_model_folder_patou_run_can_load(trained):
    out, _ = trained
    card = ModelCard.load(out)
    assert card.labels == ["bear", "other"] and card.input_size == (128, 128)
    assert card.extra["verification"]["top1_agreement"] >= 0.99  # ONNX checked against torch
    assert card.extra["training"]["split_by"] == "event" and card.extra["training"]["train_counts"]["bear"] >= 1
    with open(out / "history.csv", newline="") as f:
        history = list(csv.DictReader(f))
    assert [h["phase"] for h in history] == ["head", "fine-tune"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labels"] == ["bear", "other"] and 0 <= metrics["best"]["val_bal_acc"] <= 1


def test_split_keeps_every_event_on_one_side_and_holds_out_both_classes(trained):
    out, _ = trained
    with open(out / "split.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    sides: dict[str, set] = {}
    for r in rows:
        sides.setdefault(r["event_id"], set()).add(r["side"])
    assert all(len(s) == 1 for s in sides.values()), sides
    val = {r["label"] for r in rows if r["side"] == "val"}
    assert {"bear", "other"} <= val, val
    assert sum(r["label"] == "empty" for r in rows) == 1  # kept for evaluation, trains nothing


def test_second_training_reuses_the_cached_crops(data, trained, tmp_path):
    from patou.train.crops import CropCache
    from patou.train.labels import collect

    _, cache_dir = trained
    images, _ = collect(data)

    class NoDetector:  # any detection now would mean the cache missed
        card = ModelCard.load(Path(__import__("patou.models.detector", fromlist=["x"]).DEFAULT_CARD))

        def detect(self, img):
            raise AssertionError("detector called: the crop cache missed")

    cache = CropCache(cache_dir, detector=NoDetector(), margin=0.1)
    crops, _ = cache.crops_for(images)
    assert cache.counts["computed"] == 0 and cache.counts["cached"] == len(images) - 1 and crops


def test_patou_run_uses_the_trained_labels(trained, data, tmp_path):
    out, _ = trained
    res = _invoke("run", data / "ena", "--model", out, "--out", tmp_path / "run", "--target", "bear", "--quiet")
    assert res.exit_code == 0, res.output
    with open(tmp_path / "run" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9
    assert {r["label"] for r in rows} <= {"bear", "other", "empty", "undefined"}
    assert all(r["target_score"] != "" for r in rows)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["models"]["classifier"]["labels"] == ["bear", "other"]


def test_evaluate_writes_metrics_and_readable_figures(trained, data, tmp_path):
    out, _ = trained
    rep = tmp_path / "report"
    res = _invoke("evaluate", data, "--model", out, "--out", rep, "--quiet")
    assert res.exit_code == 0, res.output
    m = json.loads((rep / "metrics.json").read_text())
    for level in ("image", "event"):
        assert set(m[level]["per_class"]) == {"bear", "other", "empty"}
        assert m[level]["per_class"]["bear"]["support"] == 4
        assert m[level]["target"]["label"] == "bear"
    assert m["image"]["n"] == sum(len(v) for v in TREE.values())
    for png in ("confusion_matrix.png", "pr_curve.png"):
        with Image.open(rep / png) as im:
            a = np.asarray(im.convert("L"))
        assert min(a.shape) > 200 and a.std() > 10, png  # a real picture, not a blank canvas
    text = (rep / "report.md").read_text()
    assert "## Worst mistakes" in text and "confusion_matrix.png" in text


def test_evaluate_folds_labels_the_model_lacks_into_other(data, tmp_path, trained):
    out, _ = trained
    odd = tmp_path / "odd"
    (odd / "lynx").mkdir(parents=True)
    (odd / "lynx" / "x.jpg").symlink_to(next((data / "ena" / "other").iterdir()))
    res = _invoke("evaluate", odd, "--model", out, "--out", tmp_path / "r", "--level", "image", "--quiet")
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["image"]["per_class"]["other"]["support"] == 1 and m["event"] is None


def test_export_int8_is_compared_on_the_validation_split_and_runs(trained, data, tmp_path):
    out, cache = trained
    int8 = tmp_path / "int8"
    from patou.train.job import export_int8

    card = export_int8(out, data, int8, cache_dir=cache, log=lambda m: None)
    v = card.extra["quantization"]["validation"]
    assert v["crops"] >= 2 and v["target"] == "bear"
    assert v["top1_agreement"] >= 0.5 and v["size_mb_int8"] < 0.5 * v["size_mb_fp32"]
    assert {"accuracy_fp32", "accuracy_int8", "target_recall_fp32", "target_recall_int8", "speedup"} <= v.keys()
    res = _invoke("run", data / "nacti", "--model", int8, "--out", tmp_path / "run8", "--quiet")
    assert res.exit_code == 0, res.output


def test_train_refuses_a_single_class_clearly(real, tmp_path):
    one = tmp_path / "one" / "bear"
    one.mkdir(parents=True)
    (one / "a.jpg").symlink_to(real / TREE["ena/bear"][0])
    res = _invoke("train", tmp_path / "one", "--out", tmp_path / "m", "--cache-dir", tmp_path / "c", *FAST)
    assert res.exit_code == 2 and "error" in res.output


def test_export_without_int8_or_calibration_explains(trained, tmp_path):
    out, _ = trained
    res = _invoke("export", "--model", out, "--out", tmp_path / "x")
    assert res.exit_code == 2 and "--int8" in res.output
    res = _invoke("export", "--model", out, "--out", tmp_path / "x", "--int8")
    assert res.exit_code == 2 and "--calibration" in res.output


def test_head_only_from_the_rollup_and_on_an_installed_backbone(trained, data, tmp_path, monkeypatch):
    """--mode head on the cached crops: a roll-up start at the bundled margin; then an installed
    ONNX model (built here, two outputs + card) as the frozen backbone, composed into one ONNX."""
    import torch

    _, cache = trained
    res = _invoke("train", data, "--out", tmp_path / "head", "--cache-dir", cache, "--mode", "head",
                  "--val-fraction", "0.3", "--quiet")
    assert res.exit_code == 0, res.output
    card = ModelCard.load(tmp_path / "head")
    assert card.extra["init"] == "rollup" and card.extra["init_from_rollup"] == ["bear", "other"]
    assert card.extra["mode"] == "head" and card.extra["crop_margin"] == 0.0
    fit = card.extra["head_fit"]  # the convex correction, and what the grouped CV chose
    assert fit["method"] == "convex" and fit["correction"] in ("default", "bias", "linear")
    assert (tmp_path / "head" / "history_head.csv").is_file()
    assert any((cache / "features").rglob("*.npy"))  # the features were cached beside the crops

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 6, 5, stride=4)
            self.fc = torch.nn.Linear(6, 3)

        def forward(self, x):
            f = torch.relu(self.conv(x)).mean((2, 3))
            return self.fc(f), f

    models = tmp_path / "models" / "tiny"
    models.mkdir(parents=True)
    torch.onnx.export(Tiny().eval(), torch.zeros(1, 3, 96, 96), str(models / "model.onnx"), dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["logits", "features"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}, "features": {0: "batch"}})
    ModelCard(name="tiny", task="classification", file="model.onnx", input_size=(96, 96), labels=["a", "b", "c"],
              mean=(127.0,) * 3, std=(128.0,) * 3, resize="square-pad",
              extra={"features_output": "features", "feature_dim": 6}).save(models / "model.json")
    monkeypatch.setenv("PATOU_MODELS", str(models.parent))
    res = _invoke("train", data, "--out", tmp_path / "tinyhead", "--cache-dir", cache, "--backbone", "tiny",
                  "--val-fraction", "0.3", "--quiet")
    assert res.exit_code == 0, res.output
    card = ModelCard.load(tmp_path / "tinyhead")
    assert card.labels == ["bear", "other"] and card.extra["backbone"] == "tiny" and card.extra["init"] == "random"
    assert card.input_size == (96, 96) and card.extra["verification"]["max_abs_logit_diff"] < 1e-3
    res = _invoke("run", data / "nacti", "--model", tmp_path / "tinyhead", "--out", tmp_path / "run", "--quiet")
    assert res.exit_code == 0, res.output
    res = _invoke("train", data, "--out", tmp_path / "bad", "--cache-dir", cache, "--backbone", "nosuch", "--quiet")
    assert res.exit_code != 0 and "nosuch" in res.output and "Traceback" not in res.output
