"""`patou run --engine ray` on a local Ray with 2 workers writes what the local engine writes."""
import json

import cv2
import numpy as np
import pytest

import patou
from videos import ENA, SIZE, write_video

pytestmark = [pytest.mark.slow, pytest.mark.ray]

ray = pytest.importorskip("ray", reason="Ray not installed (pip install 'patou[ray]')")

SN = "speciesnet-cameratrapai/test_data"
SW = "animl-py-southwest/examples/Southwest"


def _inputs(real, tmp_path):
    photos = sorted((real / ENA).glob("*.jpg"))[:8] + [
        real / SN / "american_black_bear.jpg", real / SN / "blank.jpg",
        real / SN / "african_elephants_truncated_file.jpg"]
    bear = cv2.resize(cv2.imread(str(real / ENA / "8831.jpg")), SIZE)
    video = write_video(tmp_path / "bear.mp4", [np.roll(bear, 3 * k, axis=1) for k in range(20)], fps=10)
    return photos + [video]  # 12 files: 11 photos (one truncated) and a video


def _outputs(out):
    md = json.loads((out / "megadetector.json").read_text())
    for k in ("detection_completion_time", "classification_completion_time"):
        md["info"].pop(k)  # timings
    return (out / "predictions.csv").read_text(), md, (out / "records.jsonl").read_text()


def test_ray_engine_matches_local(real, tmp_path):
    inputs = _inputs(real, tmp_path)
    local = patou.run(inputs, out=tmp_path / "local", target="bear", log=lambda m: None)
    on_ray = patou.run(inputs, out=tmp_path / "ray", target="bear", engine="ray", workers=2, log=lambda m: None)
    assert not ray.is_initialized()  # the run shut down the Ray it started
    csv_l, md_l, rec_l = _outputs(tmp_path / "local")
    csv_r, md_r, rec_r = _outputs(tmp_path / "ray")
    assert len(md_r["images"]) == 12 and csv_r.count("\n") == 13
    assert csv_r == csv_l
    assert md_r == md_l
    assert rec_r == rec_l
    info = json.loads((tmp_path / "ray" / "run.json").read_text())["options"]
    assert info["engine"] == "ray" and info["ray"]["workers"] == 2
    assert on_ray.counts == local.counts and on_ray.counts["failures"] == 1
    # results streamed into the checkpoint as they came back: --resume works after a Ray run too
    lines = (tmp_path / "ray" / ".patou" / "checkpoint.jsonl").read_text().splitlines()
    assert sorted(json.loads(ln)["path"] for ln in lines[1:]) == sorted(str(p) for p in inputs)


def test_engine_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="--engine"):
        patou.run([tmp_path], out=tmp_path / "o", engine="spark", log=lambda m: None)
    with pytest.raises(ValueError, match="need --engine ray"):
        patou.run([tmp_path], out=tmp_path / "o", workers=2, log=lambda m: None)
