"""Videos in `patou run`: short real videos made with OpenCV from the real photos, mixed with a
photo and broken files; verdicts, outputs, resume and sorting."""
import csv
import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

import patou
from patou.cli import app
from patou.formats.megadetector import validate_megadetector_json
from patou.record import ImageRecord
from patou.results import load_run
from patou.video import VideoSampling, frame_numbers

from videos import ENA, SIZE, write_video

SN = "speciesnet-cameratrapai/test_data"
HERON = "camtrapdp-mica-heron/tests/testthat/fixtures/sample_camtrap_dp_data/media"
HERON_START = "2021-04-11T20:43:09"  # the burst's first EXIF time, written into the .MOV header


def set_mp4_creation_time(path: Path, iso: str) -> None:
    """Write a camera-style creation time into the MP4/MOV `mvhd` header (version 0)."""
    from datetime import datetime

    data = bytearray(path.read_bytes())
    at = data.find(b"mvhd")
    assert at > 0 and data[at + 4] == 0
    secs = int((datetime.fromisoformat(iso) - datetime(1904, 1, 1)).total_seconds())
    data[at + 8:at + 12] = secs.to_bytes(4, "big")
    path.write_bytes(bytes(data))


def _read(real: Path, rel: str, size=SIZE) -> np.ndarray:
    img = cv2.imread(str(real / rel))
    assert img is not None, rel
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def media(real, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("videos") / "media"
    (d / "broken").mkdir(parents=True)
    bear = _read(real, f"{ENA}/8831.jpg")
    # the bear walks a little: 3 s at 10 fps, shifted 3 px a frame
    write_video(d / "a_bear.mp4", [np.roll(bear, 3 * k, axis=1) for k in range(30)], fps=10)
    blanks = [_read(real, f"{SN}/{n}") for n in ("blank.jpg", "blank2.jpg", "blank3.jpg")]
    write_video(d / "blank.avi", [b for b in blanks for _ in range(10)], fps=10, fourcc="MJPG")
    herons = sorted((real / HERON).glob("*.JPG"))
    write_video(d / "heron.MOV", [_read(real, h.relative_to(real), (1024, 720)) for h in herons], fps=2)
    set_mp4_creation_time(d / "heron.MOV", HERON_START)
    shutil.copy(real / ENA / "9455.jpg", d / "photo_9455.jpg")
    (d / "broken" / "random.mp4").write_bytes(np.random.default_rng(0).bytes(20_000))
    (d / "broken" / "truncated.mp4").write_bytes((d / "a_bear.mp4").read_bytes()[:20_000])
    (d / "broken" / "empty.mkv").write_bytes(b"")
    return d


@pytest.fixture(scope="module")
def video_run(media, tmp_path_factory):
    out = tmp_path_factory.mktemp("video-run")
    result = patou.run([media], out=out, target="bear", log=lambda m: None)
    return result, {r.rel: r for r in result.records}, out


def _rows(path: Path) -> dict:
    with open(path, newline="", encoding="utf-8") as f:
        return {r["file"]: r for r in csv.DictReader(f)}


def test_deepfaune_frame_rule():
    s = VideoSampling()  # DeepFaune: 8 frames, one a second
    assert frame_numbers(900, 30.0, s) == [0, 30, 60, 90, 120, 150, 180, 210]
    assert frame_numbers(30, 10.0, s) == [0, 4, 8, 12, 16, 20, 24, 28]  # too short: closer together
    assert frame_numbers(5, 30.0, s) == [0, 1, 2, 3, 4]  # fewer frames than asked: all of them
    assert frame_numbers(0, 25.0, s) == [0, 25, 50, 75, 100, 125, 150, 175]  # length unknown
    assert frame_numbers(900, 30.0, VideoSampling(fps=3, frames=4)) == [0, 10, 20, 30]
    with pytest.raises(ValueError, match="video-fps"):
        VideoSampling(fps=0)
    with pytest.raises(ValueError, match="video-frames"):
        VideoSampling(frames=0)


@pytest.mark.slow
def test_video_verdicts(video_run):
    result, by, _ = video_run
    bear = by["a_bear.mp4"]
    assert bear.label == "bear" and bear.event_label == "bear", (bear.label, bear.scores)
    assert bear.target_score >= 0.5
    assert bear.frame_rate == 10.0 and bear.frames_processed == [0, 4, 8, 12, 16, 20, 24, 28]
    assert (bear.width, bear.height) == SIZE
    found = {d.frame_number for d in bear.detections}
    assert found <= set(bear.frames_processed) and len(found) >= 6  # the bear is seen in most frames
    blank = by["blank.avi"]
    assert blank.label == "empty" and blank.event_label == "empty", blank.detections
    assert blank.frames_processed == [0, 4, 8, 12, 16, 20, 24, 28]
    heron = by["heron.MOV"]
    assert heron.failure is None and heron.frames_processed == list(range(8))
    assert heron.timestamp.isoformat() == HERON_START
    assert by["photo_9455.jpg"].label == "bear" and by["photo_9455.jpg"].frames_processed is None


@pytest.mark.slow
def test_broken_videos_are_failure_rows(video_run):
    result, by, _ = video_run
    assert by["broken/random.mp4"].failure == "not a video OpenCV can read"
    assert by["broken/truncated.mp4"].failure  # cut before its index: unreadable
    assert by["broken/empty.mkv"].failure == "empty file (0 bytes)"
    assert result.counts["failures"] == 3 and result.exit_code == 0


@pytest.mark.slow
def test_outputs_one_row_per_video(media, video_run):
    result, by, out = video_run
    rows = _rows(out / "predictions.csv")
    files = sorted(p.relative_to(media).as_posix() for p in media.rglob("*") if p.is_file())
    assert sorted(rows) == files  # one row per file, video or photo
    assert rows["a_bear.mp4"]["frame_rate"] == "10.0" and rows["a_bear.mp4"]["frames_processed"] == "8"
    assert rows["a_bear.mp4"]["label"] == "bear" and rows["photo_9455.jpg"]["frames_processed"] == ""
    assert rows["heron.MOV"]["timestamp"] == HERON_START
    assert rows["broken/random.mp4"]["failure"] and rows["broken/random.mp4"]["label"] == ""

    md = json.loads((out / "megadetector.json").read_text())
    assert validate_megadetector_json(md) == []
    images = {im["file"]: im for im in md["images"]}
    v = images["a_bear.mp4"]
    assert v["frame_rate"] == 10.0 and v["frames_processed"] == [0, 4, 8, 12, 16, 20, 24, 28]
    assert v["detections"] and all(d["frame_number"] in v["frames_processed"] for d in v["detections"])
    assert images["blank.avi"]["frames_processed"] and "frame_rate" not in images["photo_9455.jpg"]
    assert images["broken/random.mp4"]["detections"] is None and "frame_rate" in images["broken/random.mp4"]

    # records.jsonl keeps the video fields (the review app and exports read them back)
    back = {r.rel: r for r in load_run(out).records}
    assert back["a_bear.mp4"].frames_processed == by["a_bear.mp4"].frames_processed
    assert [d.frame_number for d in back["a_bear.mp4"].detections] == [d.frame_number for d in by["a_bear.mp4"].detections]


@pytest.mark.slow
def test_resume_with_videos(media, video_run, tmp_path):
    _, _, out = video_run
    lines = (out / ".patou" / "checkpoint.jsonl").read_text().splitlines()
    kept = [lines[0]] + [ln for ln in lines[1:] if json.loads(ln)["path"].endswith(("a_bear.mp4", "blank.avi"))]
    assert len(kept) == 3
    (tmp_path / ".patou").mkdir()
    (tmp_path / ".patou" / "checkpoint.jsonl").write_text("\n".join(kept) + "\n")
    result = patou.run([media], out=tmp_path, target="bear", resume=True, log=lambda m: None)
    assert result.counts["resumed"] == 2
    assert (tmp_path / "predictions.csv").read_text() == (out / "predictions.csv").read_text()
    images = lambda p: json.loads((p / "megadetector.json").read_text())["images"]  # noqa: E731
    assert images(tmp_path) == images(out)


@pytest.mark.slow
def test_sampling_options_and_sorting_moves_videos(media, tmp_path):
    src = tmp_path / "card"
    src.mkdir()
    shutil.copy(media / "a_bear.mp4", src / "bear clip.mp4")
    shutil.copy(media / "blank.avi", src / "blank.avi")
    digest = hashlib.sha256((src / "bear clip.mp4").read_bytes()).hexdigest()
    result = patou.run([src], out=tmp_path / "out", video_fps=5, video_frames=3, sort="move",
                       sort_dir=tmp_path / "sorted", log=lambda m: None)
    by = {r.rel: r for r in result.records}
    assert by["bear clip.mp4"].frames_processed == [0, 2, 4]  # 10 fps / 5 -> every 2nd frame
    assert by["bear clip.mp4"].label == "bear" and by["blank.avi"].label == "empty"
    moved = tmp_path / "sorted" / "bear" / "bear clip.mp4"
    assert moved.is_file() and not (src / "bear clip.mp4").exists()
    assert hashlib.sha256(moved.read_bytes()).hexdigest() == digest
    assert (tmp_path / "sorted" / "empty" / "blank.avi").is_file()
    # another sampling is another analysis: the checkpoint says so instead of mixing them
    with pytest.raises(ValueError, match="other models or options"):
        patou.run([tmp_path / "sorted"], out=tmp_path / "out", resume=True, log=lambda m: None)


@pytest.mark.slow
def test_cli_video_options_and_old_records(media, video_run, tmp_path):
    from typer.testing import CliRunner

    res = CliRunner().invoke(app, ["run", str(media / "a_bear.mp4"), "--out", str(tmp_path),
                                   "--video-fps", "2", "--video-frames", "2", "-q"])
    assert res.exit_code == 0, res.output
    rows = _rows(tmp_path / "predictions.csv")
    assert rows["a_bear.mp4"]["frames_processed"] == "2" and rows["a_bear.mp4"]["label"] == "bear"
    opts = json.loads((tmp_path / "run.json").read_text())["options"]
    assert (opts["video_fps"], opts["video_frames"]) == (2.0, 2)
    # a record written before videos existed (no video keys) still loads, as a photo
    _, by, _ = video_run
    d = by["photo_9455.jpg"].to_json()
    for k in ("frame_rate", "frames_processed"):
        d.pop(k)
    for det in d["detections"]:
        det.pop("frame_number")
    old = ImageRecord.from_json(d)
    assert old.frames_processed is None and old.detections[0].frame_number is None


@pytest.mark.slow
def test_review_app_thumbnail_of_a_video_is_its_first_frame(media, tmp_path):
    from PIL import Image

    from patou.web.files import thumbnail

    thumb = thumbnail(tmp_path, media / "a_bear.mp4", 400)
    with Image.open(thumb) as im:
        assert max(im.size) == 400 and np.asarray(im.convert("L")).std() > 10
    assert thumbnail(tmp_path, media / "broken" / "random.mp4", 400) is None
