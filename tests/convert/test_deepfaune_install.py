"""Every DeepFaune version installed with `patou models install --from` from a checkpoint DeepFaune's own
code would load (tests/data/deepfaune/, made with timm by tools/deepfaune_reference.py), and the
installed ONNX, fp32 and int8, against what timm computed; DeepFaune's decision rule (temperatures, no
mirror, the event's mean logit) from the card, in `patou run`; files whose `args` hold more than
torch's safe loader reads install, files whose pickle would run code install nothing and run nothing."""
from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.torch, pytest.mark.slow]

torch = pytest.importorskip("torch")

from patou.models import registry  # noqa: E402
from patou.models.card import ModelCard  # noqa: E402
from patou.models.classifier import Classifier  # noqa: E402
from patou.models.runtime import cpu_session  # noqa: E402

DATA = Path(__file__).parents[1] / "data" / "deepfaune"
REF = json.loads((DATA / "reference.json").read_text())
VERSIONS = REF["versions"]
CROPS = np.load(DATA / "crops.npz")
TOL = 1e-4


def cli(models: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, registry.MODELS_ENV: str(models)}
    return subprocess.run([sys.executable, "-m", "patou.cli", *args], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL)


def network_input(card: ModelCard, size: int) -> np.ndarray:
    x = CROPS[f"crops_{size}"].astype(np.float32).transpose(0, 3, 1, 2)
    return (x - np.asarray(card.mean, np.float32).reshape(1, 3, 1, 1)) / np.asarray(card.std, np.float32).reshape(1, 3, 1, 1)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    """Each version's fixture installed by the CLI, with --int8, in a models folder of its own."""
    out = {}
    for v, r in VERSIONS.items():
        models = tmp_path_factory.mktemp(f"models-{v}")
        p = cli(models, "models", "install", "deepfaune", "--version", v, "--from", str(DATA / r["checkpoint"]),
                "--accept-licence", "--skip-self-check", "--int8")
        assert p.returncode == 0, p.stderr
        assert f"installed deepfaune {v}" in p.stderr and "also installed as deepfaune-int8" in p.stderr, p.stderr
        out[v] = models
    return out


@pytest.mark.parametrize("version", list(VERSIONS))
def test_installed_onnx_is_deepfaunes_network(installed, version):
    r = VERSIONS[version]
    card = ModelCard.load(installed[version] / "deepfaune")
    assert card.version == version and card.input_size == (r["crop"], r["crop"])
    assert card.extra["source_classes"] == list(registry.get("deepfaune").versions[version].classes)
    x = network_input(card, r["crop"])
    want, want_f = np.asarray(r["logits"]), np.asarray(r["features"])
    logits, feats = cpu_session(card.onnx_path).run(["logits", "features"], {"input": x})
    assert np.abs(logits - want).max() <= TOL and np.abs(feats - want_f).max() <= TOL
    assert logits.argmax(1).tolist() == r["top1"]
    int8 = ModelCard.load(installed[version] / "deepfaune-int8")
    q = cpu_session(int8.onnx_path).run(["logits"], {"input": x})[0]
    assert q.argmax(1).tolist() == r["top1"]  # int8 is not equal, but decides the same on these crops
    assert np.abs(q - want).max() < 0.2 * np.abs(want).max()


def test_the_card_carries_deepfaunes_decision_rule(installed):
    rules = {"1.1": (1.0, 1.0), "1.2": (1.0, 1.0), "1.3": (1.0, 1.0), "1.4": (1.10, 1.04), "1.5": (1.12, 1.10)}
    licences = {"1.1": "CC BY-NC-SA 4.0", "1.2": "CC BY-NC-SA 4.0", "1.3": "CC BY-SA 4.0", "1.4": "CC BY-SA 4.0",
                "1.5": "CC BY-SA 4.0"}
    for v, (t, te) in rules.items():
        card = ModelCard.load(installed[v] / "deepfaune")
        assert (card.extra["temperature"], card.extra["event_temperature"]) == (t, te), v
        assert card.extra["event_average"] == "logits" and card.extra["mirror"] is False
        assert card.licence.startswith(licences[v]) and card.resize == "square-clip"
        clf = Classifier(card, flip=True)
        assert clf.flip is False  # the card's no-mirror wins over the default
        assert clf.event_logit_scale == pytest.approx(t / te)


@pytest.mark.parametrize("version", ["1.4", "1.5"])
def test_patou_gives_deepfaunes_probabilities_for_the_same_crop(installed, version):
    """DeepFaune's image score: softmax(logits / temperature) of timm's logits, no mirror; patou's
    classifier on the same crops (what `patou run` calls for each box)."""
    r = VERSIONS[version]
    t = registry.get("deepfaune").versions[version].decision["temperature"]
    clf = Classifier(installed[version] / "deepfaune")  # flip=True asked, the card says no mirror
    got = clf.predict(list(CROPS[f"crops_{r['crop']}"]))
    want = softmax(np.asarray(r["logits"]) / t)
    assert np.abs(got - want).max() < 1e-5
    assert np.abs(got - softmax(np.asarray(r["logits"]))).max() > 1e-3  # the temperature is not 1: it shows
    # DeepFaune's sequence score: softmax of the images' mean logit at the event temperature
    from patou.decide import mean_scores

    te = registry.get("deepfaune").versions[version].decision["event_temperature"]
    scores = [dict(zip(clf.labels, (float(f"{float(x):.6g}") for x in p))) for p in got]  # as pipeline.py keeps them
    event = mean_scores(scores, clf.event_logit_scale)
    deepfaune = softmax(np.asarray(r["logits"]).mean(0) / te)
    assert max(abs(event[k] - deepfaune[i]) for i, k in enumerate(clf.labels)) < 1e-4
    plain_mean = np.mean([[s[k] for k in clf.labels] for s in scores], axis=0)
    assert np.abs(plain_mean - deepfaune).max() > 1e-3  # and it is not the mean of the probabilities


def test_patou_run_uses_the_cards_rule(installed, real, tmp_path):
    """`patou run --model deepfaune` (v1.5) on real photos with the recorded boxes: each image's score
    is the softmax of the logits at the card's temperature, without mirror, and the event's score the
    softmax of its images' mean logit at the event temperature."""
    photos = tmp_path / "photos"
    photos.mkdir()
    images = []
    for meta in REF["crops_224"]:
        src = real / meta["photo"]
        os.symlink(src, photos / src.name)
        images.append({"file": src.name, "detections": [{"category": "1", "conf": 0.9, "bbox": meta["box"]}]})
    md = tmp_path / "md.json"
    md.write_text(json.dumps({"info": {"format_version": "1.4"}, "detection_categories": {"1": "animal"},
                              "images": images}))
    out = tmp_path / "out"
    p = cli(installed["1.5"], "run", str(photos), "--out", str(out), "--model", "deepfaune", "--detections", str(md),
            "--event-gap", "1e9", "--quiet", "--threads", "1")
    assert p.returncode == 0, p.stderr
    from patou.media import decode
    from patou.record import ImageRecord
    from patou.results import load_run

    records = load_run(out).records
    assert len(records) == 4 and all(r.scores for r in records)
    clf = Classifier(installed["1.5"] / "deepfaune")
    t, te = clf.temperature, clf.card.extra["event_temperature"]
    for rec in records:
        img = decode(ImageRecord(path=photos / Path(rec.rel).name, root=photos))
        logits = clf.raw([clf.crop_box(img, rec.detections[0].bbox)])[0]
        want = softmax(logits / t)
        assert max(abs(rec.scores[k] - want[i]) for i, k in enumerate(clf.labels)) < 2e-6, rec.rel
    events = {}
    for rec in records:
        events.setdefault(rec.event_id, []).append(rec)
    several = [ev for ev in events.values() if len(ev) > 1]
    assert several, "no event of several images to check"
    for ev in several:
        z = np.mean([[math.log(r.scores[k]) * t for k in clf.labels] for r in ev], axis=0)
        want = softmax(z / te)
        assert ev[0].event_score == pytest.approx(float(want.max()), abs=1e-4)


def _with_args(tmp_path: Path, args, name: str) -> Path:
    ck = torch.load(DATA / VERSIONS["1.5"]["checkpoint"], map_location="cpu", weights_only=True)
    ck["args"] = args
    path = tmp_path / name
    torch.save(ck, path)
    return path


def test_args_with_a_namespace_a_path_and_a_numpy_scalar_install(tmp_path):
    args = {"backbone": "vit_large_patch16_dinov3.lvd1689m", "num_classes": np.int64(40),
            "data": pathlib.PosixPath("/data/deepfaune/train"), "opt": argparse.Namespace(lr=np.float32(1e-4), epochs=30)}
    path = _with_args(tmp_path, args, "namespace.pt")
    models = tmp_path / "models"
    p = cli(models, "models", "install", "deepfaune", "--from", str(path), "--accept-licence", "--skip-self-check")
    assert p.returncode == 0, p.stderr
    said = [ln for ln in p.stderr.splitlines() if "inert unpickler" in ln]
    assert len(said) == 1 and "argparse.Namespace" in said[0] and "pathlib.PosixPath" in said[0], p.stderr
    card = ModelCard.load(models / "deepfaune")
    x = network_input(card, 224)
    logits = cpu_session(card.onnx_path).run(["logits"], {"input": x})[0]
    assert np.abs(logits - np.asarray(VERSIONS["1.5"]["logits"])).max() <= TOL


class _Run:
    """Unpickled normally, this would call func(*args)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def test_a_checkpoint_whose_pickle_would_run_code_installs_nothing_and_runs_nothing(tmp_path):
    marker = tmp_path / "PWNED"
    args = {"backbone": "vit_large_patch16_dinov3.lvd1689m", "num_classes": 40,
            "opt": argparse.Namespace(hook=_Run(os.system, f"touch {marker}"))}
    path = _with_args(tmp_path, args, "evil.pt")
    models = tmp_path / "models"
    p = cli(models, "models", "install", "deepfaune", "--from", str(path), "--accept-licence", "--skip-self-check")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: --from {path}: refused, it holds ") and "system" in last, p.stderr
    assert not marker.exists()
    assert not models.exists() or [q.name for q in models.iterdir()] == []
