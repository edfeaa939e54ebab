"""`patou models install megadetector` (and DeepFaune's detector) from checkpoints in the publishers'
layouts (tests/data/yolo, made with yolov5 / ultralytics / MegaDetector's code by
tools/yolo_reference.py): installed through `--from`, then patou's Detector on the installed card
gives the publisher's raw predictions and final boxes on real photos; a file that does not fit, or
that would run code, installs nothing."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.torch, pytest.mark.slow]

from patou.models import registry  # noqa: E402
from patou.convert import install as inst  # noqa: E402
from patou.models.card import ModelCard  # noqa: E402
from patou.models.detector import Detector  # noqa: E402
from yolo_fixtures import DATA, MD_CATEGORIES, compare_boxes, info, photo, raw  # noqa: E402

# fixture -> (what the user types, the installed name)
INSTALLS = {
    "yolov5-p6-tiny": (("megadetector", None), "mdv5a"),
    "yolov5-p5-tiny": (("megadetector", "1000-spruce"), "mdv1000-spruce"),
    "yolov8-tiny": (("deepfaune-yolov8s_960", None), "deepfaune-yolov8s_960"),
    "yolov11-tiny": (("megadetector", "1000-sorrel"), "mdv1000-sorrel"),
    "yolov11l-tiny": (("megadetector", "1000-larch"), "mdv1000-larch"),
}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    old = os.environ.get(registry.MODELS_ENV)
    os.environ[registry.MODELS_ENV] = str(root)
    logs = {}
    try:
        for fixture, ((name, version), _) in INSTALLS.items():
            lines = []
            inst.install(name, version, from_file=DATA / f"{fixture}.pt", accept_licence=True, skip_self_check=True,
                         log=lines.append)
            logs[fixture] = lines
        yield root, logs
    finally:
        if old is None:
            os.environ.pop(registry.MODELS_ENV, None)
        else:
            os.environ[registry.MODELS_ENV] = old


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    d = tmp_path / "models"
    monkeypatch.setenv(registry.MODELS_ENV, str(d))
    return d


def _nothing_installed(root):
    assert not root.exists() or not [p for p in root.iterdir() if p.name != ".downloads"], list(root.iterdir())


@pytest.mark.parametrize("fixture", list(INSTALLS))
def test_installed_card_says_how_the_publisher_runs_it(installed, fixture):
    root, logs = installed
    name = INSTALLS[fixture][1]
    card = ModelCard.load(root / name)
    rec = info(fixture)
    assert card.task == "detection" and card.labels == ["animal", "person", "vehicle"]
    assert card.input_size == (rec["input_size"],) * 2 and card.resize == "letterbox-yolo" and card.pad_value == 114
    e = card.extra
    assert e["letterbox_stride"] == (64 if fixture == "yolov5-p6-tiny" else 32)
    assert e["head"] == ("yolov5" if fixture.startswith("yolov5") else "ultralytics")
    deepfaune = fixture == "yolov8-tiny"
    assert e["nms_iou"] == (0.7 if deepfaune else 0.45)
    assert e["typical_detection_threshold"] == {"mdv5a": 0.2, "deepfaune-yolov8s_960": 0.6}.get(name, 0.3)
    assert e["megadetector_version"] == {"mdv5a": "v5a.0.1", "mdv1000-spruce": "v1000.0.0-spruce",
                                         "mdv1000-sorrel": "v1000.0.0-sorrel", "mdv1000-larch": "v1000.0.0-larch",
                                         "deepfaune-yolov8s_960": None}[name]
    i = e["install"]
    assert i["sha256"] and i["md5_matches_publisher"] is (None if deepfaune else False)  # not the publisher's file
    assert i["conversion_check"]["max_relative_diff_raw"] <= 1e-3 and i["self_check"] == "skipped"
    assert "no code from the file runs" in " ".join(logs[fixture])
    assert any("licence" in line for line in logs[fixture])  # shown before anything else happens
    # the ONNX graph takes any input size
    shape = Detector(card, threads=1).session.get_inputs()[0].shape
    assert not isinstance(shape[2], int) and not isinstance(shape[3], int)


@pytest.mark.parametrize("fixture", list(INSTALLS))
def test_installed_detector_gives_the_publishers_predictions_and_boxes(installed, real, fixture):
    root, _ = installed
    rec, arrays = info(fixture), raw(fixture)
    card = ModelCard.load(root / INSTALLS[fixture][1])
    det = Detector(card, threads=1, min_conf=rec["threshold"])
    for k, p in enumerate(rec["photos"]):
        img = photo(real, p["photo"])
        x, g = det.preprocess(img)  # the publisher's letterbox, 0..1
        assert list(x.shape[1:]) == p["input_shape"]
        out = det.session.run(None, {det._input: x[None]})[0][0]
        idx, ref = arrays[k]
        assert np.abs(out[idx] - ref).max() <= 1e-3 * np.abs(ref).max()
        dets = det.detect(img)
        cmp = compare_boxes([(MD_CATEGORIES[b["category"]], b["conf"], b["bbox"]) for b in p["boxes"]],
                            [(d.category, d.conf, d.bbox) for d in dets], card.extra["nms_iou"])
        assert not cmp["unexplained"], (p["photo"], cmp)
        assert cmp["reference"] == 0 or cmp["matched"] > 0


def test_a_checkpoint_of_another_family_installs_nothing(models_dir):
    with pytest.raises(inst.InstallError, match="a ultralytics checkpoint, mdv5a is yolov5"):
        inst.install("megadetector", from_file=DATA / "yolov8-tiny.pt", accept_licence=True, skip_self_check=True,
                     log=lambda m: None)
    with pytest.raises(inst.InstallError, match="3 detection levels, mdv1000-redwood"):
        inst.install("megadetector", "1000-redwood", from_file=DATA / "yolov5-p5-tiny.pt", accept_licence=True,
                     skip_self_check=True, log=lambda m: None)
    with pytest.raises(inst.InstallError, match="metadata says v1000.0.0-sorrel, not v1000.0.0-larch|image size 960"):
        inst.install("megadetector", "1000-larch", from_file=DATA / "yolov11-tiny.pt", accept_licence=True,
                     skip_self_check=True, log=lambda m: None)
    _nothing_installed(models_dir)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_that_would_run_code_installs_nothing_and_runs_nothing(models_dir, tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "md_v5a.0.1.pt"
    torch.save({"model": _Payload(marker), "epoch": -1}, evil)
    with pytest.raises(inst.InstallError, match="no pickled model"):
        inst.install("megadetector", from_file=evil, accept_licence=True, log=lambda m: None)
    assert not marker.exists()
    _nothing_installed(models_dir)


def test_random_weights_fail_the_self_check(models_dir):
    with pytest.raises(inst.InstallError, match="self-check failed: no animal box >= 0.3"):
        inst.install("megadetector", "1000-sorrel", from_file=DATA / "yolov11-tiny.pt", accept_licence=True,
                     log=lambda m: None)
    _nothing_installed(models_dir)


def test_licence_must_be_accepted(models_dir):
    with pytest.raises(inst.InstallError, match="licence of mdv5a v5a.0.1 was not accepted"):
        inst.install("megadetector", from_file=DATA / "yolov5-p6-tiny.pt", confirm=lambda q: False, log=lambda m: None)
    with pytest.raises(inst.InstallError, match="no version '6'"):
        inst.install("megadetector", "6", from_file=DATA / "yolov5-p6-tiny.pt", accept_licence=True, log=lambda m: None)
    _nothing_installed(models_dir)


def test_int8_is_kept_only_when_it_keeps_the_fp32_boxes(models_dir, real):
    lines = []
    inst.install("megadetector", "1000-spruce", from_file=DATA / "yolov5-p5-tiny.pt", accept_licence=True,
                 skip_self_check=True, int8=True, check_dirs=[real / "speciesnet-cameratrapai"], log=lines.append)
    said = [line for line in lines if line.startswith("int8:")]
    assert len(said) == 1
    kept = (models_dir / "mdv1000-spruce-int8").is_dir()
    fig = said[0].split()[1].split("/")
    assert kept == (fig[0] == fig[1] and " 0 extra" in said[0])
    if kept:
        q = ModelCard.load(models_dir / "mdv1000-spruce-int8").extra["quantization"]
        assert q["weight_bits"] == 7 and q["validation"]["extra_int8_detections"] == 0
    assert sorted(p.name for p in models_dir.iterdir() if not p.name.startswith(".")) == \
        ["mdv1000-spruce"] + (["mdv1000-spruce-int8"] if kept else [])
    card = json.loads((models_dir / "mdv1000-spruce" / "mdv1000-spruce.json").read_text())
    assert card["name"] == "mdv1000-spruce"
