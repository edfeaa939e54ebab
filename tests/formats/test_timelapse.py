"""megadetector.json as Timelapse and MegaDetector's tools read it: the batch format 1.6 rules,
for photos and videos, on a real run; and the validator rejects files that break them."""
import copy
import json
import shutil

import cv2
import numpy as np
import pytest

import patou
from patou.formats.megadetector import validate_megadetector_json
from videos import ENA, SIZE, write_video

SN = "speciesnet-cameratrapai/test_data"


@pytest.fixture(scope="module")
def md(real, tmp_path_factory) -> dict:
    """megadetector.json of a real run: photos (a bear, a blank, a truncated file) and two videos."""
    d = tmp_path_factory.mktemp("timelapse") / "card"
    (d / "cam1").mkdir(parents=True)
    for rel in (f"{ENA}/8831.jpg", f"{SN}/blank.jpg", f"{SN}/african_elephants_truncated_file.jpg"):
        shutil.copy(real / rel, d / "cam1")
    bear = cv2.resize(cv2.imread(str(real / ENA / "9455.jpg")), SIZE)
    write_video(d / "cam1" / "bear.mp4", [np.roll(bear, 2 * k, axis=0) for k in range(20)], fps=10)
    (d / "cam1" / "broken.avi").write_bytes(b"RIFF" + bytes(3000))
    out = tmp_path_factory.mktemp("timelapse-out")
    patou.run([d], out=out, log=lambda m: None)
    # loaded from disk as a reader would: types are what JSON made of them
    return json.loads((out / "megadetector.json").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_real_run_follows_the_format(md):
    assert validate_megadetector_json(md) == []
    assert md["info"]["format_version"] == "1.6"
    assert all(k.isdigit() and isinstance(v, str) for k, v in md["detection_categories"].items())
    assert all(k.isdigit() and isinstance(v, str) for k, v in md["classification_categories"].items())
    images = {im["file"]: im for im in md["images"]}
    assert set(images) == {f"cam1/{n}" for n in ("8831.jpg", "blank.jpg", "african_elephants_truncated_file.jpg",
                                                  "bear.mp4", "broken.avi")}
    photo, video = images["cam1/8831.jpg"], images["cam1/bear.mp4"]
    for entry in (photo, video):
        assert entry["detections"]
        for d in entry["detections"]:
            assert isinstance(d["conf"], float) and isinstance(d["category"], str)
            x, y, w, h = d["bbox"]
            assert 0 <= x <= x + w <= 1.0001 and 0 <= y <= y + h <= 1.0001
            assert all(isinstance(c[0], str) for c in d.get("classifications", []))
    assert isinstance(video["frame_rate"], float) and video["frame_rate"] > 0
    assert all(isinstance(n, int) for n in video["frames_processed"])
    assert {d["frame_number"] for d in video["detections"]} <= set(video["frames_processed"])
    assert "frame_number" not in photo["detections"][0] and "frame_rate" not in photo
    assert images["cam1/blank.jpg"]["detections"] == [] or all(
        d["conf"] < 0.2 for d in images["cam1/blank.jpg"]["detections"])
    for failed in ("cam1/african_elephants_truncated_file.jpg", "cam1/broken.avi"):
        assert isinstance(images[failed]["failure"], str) and images[failed]["detections"] is None
    assert "frame_rate" in images["cam1/broken.avi"]  # required for any video, even a failed one


def test_format_documents_own_shape_is_valid():
    """A file shaped like the format document's example (optional parts included) passes."""
    data = {
        "info": {"format_version": "1.6", "detector": "md_v5a.0.0.pt", "classifier": "x",
                 "detection_completion_time": "2024-01-01 10:00:00",
                 "detector_metadata": {"megadetector_version": "v5a.0.0", "typical_detection_threshold": 0.2,
                                       "conservative_detection_threshold": 0.05},
                 "summary_report": "<p>html</p>"},
        "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"},
        "classification_categories": {"0": "fox", "3": "bear"},
        "classification_category_descriptions": {"0": "animalia;vulpes", "3": "animalia;ursus"},
        "images": [
            {"file": "a/img.jpg", "detections": [
                {"category": "1", "conf": 0.9, "bbox": [0.0, 0.2, 0.15, 0.3], "classifications": [["3", 0.9], ["0", 0.1]]},
                {"category": "1", "conf": 0.06, "bbox": [0.05, 0.18, 0.36, 0.46]}]},
            {"file": "a/clip.MP4", "frame_rate": 20, "frames_processed": [0, 20, 40],
             "detections": [{"category": "2", "conf": 0.87, "bbox": [0.1, 0.2, 0.3, 0.4], "frame_number": 0},
                            {"category": "2", "conf": 0.77, "bbox": [0.1, 0.2, 0.3, 0.4], "frame_number": 20}]},
            {"file": "a/empty.jpg", "detections": []},
            {"file": "a/ok.jpg", "detections": [], "failure": None},
            {"file": "a/bad.jpg", "failure": "Failure image access", "detections": None},
            {"file": "a/bad2.jpg", "failure": "Failure image access"},
        ],
    }
    assert validate_megadetector_json(data) == []


def _video(d):
    return next(im for im in d["images"] if im["file"].endswith(".mp4"))


def _failed_video(d):
    return next(im for im in d["images"] if im["file"].endswith(".avi"))


# Rules beyond the photo cases of test_outputs.py: videos, info, categories, descriptions.
BROKEN = {
    "video without frame_rate": lambda d: _video(d).pop("frame_rate"),
    "zero frame_rate": lambda d: _video(d).update(frame_rate=0),
    "string frame_rate": lambda d: _video(d).update(frame_rate="10"),
    "failed video without frame_rate": lambda d: _failed_video(d).pop("frame_rate"),
    "video without frames_processed": lambda d: _video(d).pop("frames_processed"),
    "frames_processed of floats": lambda d: _video(d).update(frames_processed=[0.0, 4.0]),
    "frame listed twice": lambda d: _video(d)["frames_processed"].append(_video(d)["frames_processed"][0]),
    "video box without frame_number": lambda d: _video(d)["detections"][0].pop("frame_number"),
    "frame_number not processed": lambda d: _video(d)["detections"][0].update(frame_number=3),
    "negative frame_number": lambda d: _video(d)["detections"][0].update(frame_number=-1),
    "pixel bbox": lambda d: _video(d)["detections"][0].update(bbox=[100.0, 50.0, 200.0, 100.0]),
    "numeric format_version": lambda d: d["info"].update(format_version=1.6),
    "no info": lambda d: d.pop("info"),
    "no detection_categories": lambda d: d.pop("detection_categories"),
    "blank category name": lambda d: d["detection_categories"].update({"1": " "}),
    "negative category id": lambda d: d.update(detection_categories={"-1": "animal"}),
    "descriptions for other ids": lambda d: d.update(classification_category_descriptions={"99": "x"}),
    "detector not a string": lambda d: d["info"].update(detector=5),
    "threshold outside [0, 1]": lambda d: d["info"]["detector_metadata"].update(typical_detection_threshold=20),
    "failure not a string": lambda d: _failed_video(d).update(failure=1),
    "classification conf above 1": lambda d: _video(d)["detections"][0].update(classifications=[["0", 1.5]]),
    "images not a list": lambda d: d.update(images={}),
}


@pytest.mark.parametrize("name", BROKEN)
def test_validator_rejects(md, name):
    data = copy.deepcopy(md)
    BROKEN[name](data)
    assert validate_megadetector_json(data), f"validator missed: {name}"
