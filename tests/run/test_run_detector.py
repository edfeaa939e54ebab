"""`patou run --detector NAME`: an installed detector (here the small-width YOLOv5 P6 fixture installed as
mdv5a, random weights) replaces the bundled one on real photos; its person and vehicle boxes are
labelled without the classifier; megadetector.json names it as MegaDetector's tools expect and their
own validator accepts it."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.torch, pytest.mark.slow]

import patou  # noqa: E402
from patou.convert.install import install  # noqa: E402
from patou.models import registry  # noqa: E402
from megadetector_check import megadetector_report  # noqa: E402
from yolo_fixtures import DATA  # noqa: E402

FOLDER = "speciesnet-cameratrapai/test_data"


@pytest.fixture(scope="module")
def detector_run(real, tmp_path_factory):
    import os

    models = tmp_path_factory.mktemp("models")
    old = os.environ.get(registry.MODELS_ENV)
    os.environ[registry.MODELS_ENV] = str(models)
    try:
        install("megadetector", from_file=DATA / "yolov5-p6-tiny.pt", accept_licence=True, skip_self_check=True,
                log=lambda m: None)
        out = tmp_path_factory.mktemp("run")
        result = patou.run([real / FOLDER], out=out, detector="mdv5a", log=lambda m: None)
        bundled = patou.run([real / FOLDER], out=tmp_path_factory.mktemp("bundled"), log=lambda m: None)
        yield result, bundled
    finally:
        if old is None:
            os.environ.pop(registry.MODELS_ENV, None)
        else:
            os.environ[registry.MODELS_ENV] = old


def test_the_installed_detector_gives_the_boxes(detector_run):
    result, bundled = detector_run
    ok = [r for r in result.records if not r.failure]
    assert len(ok) == len([r for r in bundled.records if not r.failure]) > 10
    cats = {d.category for r in ok for d in r.detections}
    assert cats <= {"animal", "person", "vehicle"} and {"person", "vehicle"} & cats  # MD's three classes
    # not the bundled detector's boxes (that one only knows animals)
    assert {d.category for r in bundled.records for d in r.detections} == {"animal"}
    for r in ok:
        for d in r.detections:
            if d.category in ("person", "vehicle"):  # labelled at the detector's confidence, no classifier call
                want = {"person": "human", "vehicle": "vehicle"}[d.category]
                assert max(d.scores, key=d.scores.get) == want and d.scores[want] == pytest.approx(d.conf, abs=1e-6)
    info = json.loads((result.out / "run.json").read_text())
    assert info["options"]["detector"] == "mdv5a"
    assert info["options"]["detection_threshold"] == 0.2  # MDv5's typical threshold, from the card
    assert "--detector mdv5a" in info["options"]["detection_threshold_from"]
    assert info["models"]["detector"]["name"] == "mdv5a"


def test_megadetector_json_names_the_detector(detector_run):
    result, _ = detector_run
    md = json.loads((result.out / "megadetector.json").read_text())
    assert md["info"]["detector"] == "md_v5a.0.1.pt"
    meta = md["info"]["detector_metadata"]
    assert meta == {"megadetector_version": "v5a.0.1", "typical_detection_threshold": 0.2,
                    "conservative_detection_threshold": 0.05}
    assert md["detection_categories"] == {"1": "animal", "2": "person", "3": "vehicle"}


def test_megadetector_own_validator_accepts_it(real, detector_run):
    result, _ = detector_run
    report = megadetector_report(result.out / "megadetector.json", real / FOLDER)
    assert report["errors"] == [] and report["warnings"] == [], report


def test_unknown_or_wrong_detector_is_one_line(tmp_path, monkeypatch, real):
    monkeypatch.setenv(registry.MODELS_ENV, str(tmp_path / "none"))
    with pytest.raises(ValueError, match="--detector mdv5a: no such folder, and no installed detector"):
        patou.run([real / FOLDER], out=tmp_path / "o", detector="mdv5a", log=lambda m: None)
    p = subprocess.run([sys.executable, "-m", "patou.cli", "run", str(real / FOLDER), "--out", str(tmp_path / "o2"),
                        "--detector", "mdv5a"], capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, registry.MODELS_ENV: str(tmp_path / "none")})
    assert p.returncode == 2 and "mdv5a" in p.stderr and "Traceback" not in p.stderr
    with pytest.raises(ValueError, match="--detector and --no-detector exclude each other"):
        patou.run([real / FOLDER], out=tmp_path / "o3", detector="x", no_detector=True, log=lambda m: None)
