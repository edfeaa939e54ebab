"""MegaDetector detections in (--detections), --no-detector and capture times without EXIF."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from patou.api import run
from patou.boxes.md_file import match
from patou.media import scan
from patou.timestamps import filename_time, parse_time_source

from heron import HERON, heron_boxes
from megadetector_check import megadetector_report


def md_file(path: Path, images: list[dict], **info) -> Path:
    data = {"info": {"format_version": "1.4", "detector": "md_v5a.0.0.pt", **info},
            "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"}, "images": images}
    path.write_text(json.dumps(data))
    return path


def heron_md(real: Path, path: Path, skip: tuple[str, ...] = ()) -> Path:
    return md_file(path, [{"file": name, "detections": [{"category": "1", "conf": p, "bbox": b}]}
                          for name, (b, p) in sorted(heron_boxes(real).items()) if name not in skip],
                   detector_metadata={"typical_detection_threshold": 0.25})


@pytest.fixture(scope="module")
def heron_run(real, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("heron")
    md = heron_md(real, tmp / "md.json")
    return run([real / HERON / "media"], tmp / "out", detections=md, log=lambda m: None), md


def test_md_boxes_make_every_heron_frame_non_empty_and_survive(real, heron_run):
    result, md = heron_run
    assert len(result.records) == 10
    # the bundled detector misses this night-IR burst (best box 0.11); MD's boxes find all 10 frames
    assert all(r.label not in (None, "empty") for r in result.records), [r.label for r in result.records]
    given = json.loads(md.read_text())
    written = json.loads((result.out / "megadetector.json").read_text())
    boxes_in = {e["file"]: e["detections"] for e in given["images"]}
    boxes_out = {e["file"]: e["detections"] for e in written["images"]}
    assert set(boxes_out) == set(boxes_in)
    for f, dets in boxes_in.items():
        out = boxes_out[f]
        assert [d["bbox"] for d in out] == [[round(v, 4) for v in d["bbox"]] for d in dets]
        assert [d["conf"] for d in out] == [round(d["conf"], 3) for d in dets]
        assert out[0]["classifications"], "patou's classification is added to each animal box"
    assert written["info"]["detector"] == "md_v5a.0.0.pt"
    info = json.loads((result.out / "run.json").read_text())
    assert info["models"]["detections"]["source"] == str(md)
    assert info["models"]["detections"]["detector"] == "md_v5a.0.0.pt"
    # the file's typical threshold is used when the user gave none, and run.json says so
    assert info["options"]["detection_threshold"] == 0.25
    assert "typical_detection_threshold" in info["options"]["detection_threshold_from"]


def test_megadetector_own_validator_accepts_the_output(real, heron_run):
    """megadetector-utils' validate_batch_results (tests/megadetector_check.py)."""
    result, _ = heron_run
    report = megadetector_report(result.out / "megadetector.json", real / HERON / "media")
    assert report["errors"] == [] and report["warnings"] == [], report


def test_person_and_vehicle_boxes_are_decided_without_the_classifier(real, tmp_path):
    names = sorted(heron_boxes(real))
    md = md_file(tmp_path / "md.json", [
        {"file": names[0], "detections": [{"category": "2", "conf": 0.93, "bbox": [0.3, 0.4, 0.2, 0.5]}]},
        {"file": names[1], "detections": [{"category": "3", "conf": 0.71, "bbox": [0.1, 0.5, 0.6, 0.4]}]},
        {"file": names[2], "detections": [{"category": "2", "conf": 0.3, "bbox": [0.3, 0.4, 0.2, 0.5]}]},
        {"file": names[3], "detections": []},
    ])
    media = real / HERON / "media"
    res = run([media / n for n in names[:4]], tmp_path / "out", detections=md, detection_threshold=0.2,
              log=lambda m: None)
    by = {r.path.name: r for r in res.records}
    assert (by[names[0]].label, by[names[0]].score) == ("human", 0.93)
    assert (by[names[1]].label, by[names[1]].score) == ("vehicle", 0.71)
    assert by[names[2]].label == "undefined" and by[names[2]].scores["human"] == 0.3  # below --threshold 0.5
    assert by[names[3]].label == "empty"  # MD saw nothing: no bundled detector, no classifier
    # no classifier call: every other class is exactly 0
    assert sum(by[names[0]].scores.values()) == 0.93
    written = json.loads((res.out / "megadetector.json").read_text())
    cats = {v: k for k, v in written["detection_categories"].items()}
    first = next(e for e in written["images"] if e["file"] == names[0])
    assert first["detections"][0]["category"] == cats["person"]


def test_unlisted_missing_and_failed_entries(real, tmp_path):
    names = sorted(heron_boxes(real))
    entries = [{"file": n, "detections": [{"category": "1", "conf": 0.9, "bbox": [0.4, 0.6, 0.15, 0.3]}]}
               for n in names[:7]]
    entries += [{"file": names[7], "failure": "Failure image access"},
                {"file": "gone/RCNX9999.JPG", "detections": []}]
    md = md_file(tmp_path / "md.json", entries)
    logs = []
    res = run([real / HERON / "media"], tmp_path / "out", detections=md, log=logs.append)
    by = {r.rel: r for r in res.records}
    assert len(res.records) == 10  # only what is on disk: an entry never becomes a record of its own
    assert "gone/RCNX9999.JPG" not in by
    assert by[names[7]].failure == "MegaDetector: Failure image access"
    for n in names[8:]:  # not listed: analysed by the bundled detector
        assert by[n].failure is None and by[n].label is not None and by[n].width == 2048
    assert any("2 not listed are analysed with the bundled detector" in m for m in logs), logs
    assert [m for m in logs if "match no input" in m] == [
        f"warning: --detections {md}: entries that match no input file, ignored (not analysed, not sorted, "
        "not opened) (1): 'gone/RCNX9999.JPG'"]
    rows = list(csv.DictReader(open(res.out / "predictions.csv")))
    assert sum(bool(r["failure"]) for r in rows) == 1


def test_ambiguous_file_name_is_an_error_naming_both(real, tmp_path):
    src = real / HERON / "media" / "20210531082538-RCNX0031.JPG"
    (tmp_path / "in" / "c").mkdir(parents=True)
    os.symlink(src, tmp_path / "in" / "c" / src.name)
    md = md_file(tmp_path / "md.json", [{"file": f"{d}/{src.name}", "detections": []} for d in ("a", "b")])
    records, _ = scan([tmp_path / "in"])
    with pytest.raises(ValueError, match=r"matches both 'a/20210531082538-RCNX0031.JPG' and 'b/2021"):
        match(md, records)
    # a path under the input root wins over the name
    md2 = md_file(tmp_path / "md2.json", [{"file": f"{d}/{src.name}", "detections": []} for d in ("a", "c")])
    given, notes = match(md2, records)
    assert list(given.by_path) == [str(records[0].path)]
    assert any("match no input file, ignored (not analysed, not sorted, not opened) (1)" in n for n in notes)


def test_resume_reuses_results_only_with_the_same_file(real, tmp_path):
    md = heron_md(real, tmp_path / "md.json")
    first = run([real / HERON / "media"], tmp_path / "out", detections=md, log=lambda m: None)
    logs = []
    again = run([real / HERON / "media"], tmp_path / "out", detections=md, resume=True, log=logs.append)
    assert any("resuming: 10 of 10" in m for m in logs)
    assert [r.label for r in again.records] == [r.label for r in first.records]
    other = heron_md(real, tmp_path / "md2.json", skip=(sorted(heron_boxes(real))[0],))
    with pytest.raises(ValueError, match="other models or options"):
        run([real / HERON / "media"], tmp_path / "out", detections=other, resume=True, log=lambda m: None)


def test_no_detector_classifies_crops_as_whole_images(real, tmp_path):
    """Crops a real detector made (the example's boxes): the bundled detector finds little in them,
    --no-detector gives each one box covering it."""
    media = real / HERON / "media"
    crops = tmp_path / "crops"
    crops.mkdir()
    for name, (b, _) in heron_boxes(real).items():
        with Image.open(media / name) as im:
            w, h = im.size
            im.crop((int(b[0] * w), int(b[1] * h), int((b[0] + b[2]) * w), int((b[1] + b[3]) * h))).save(crops / name)
    res = run([crops], tmp_path / "out", no_detector=True, log=lambda m: None)
    assert len(res.records) == 10
    for r in res.records:
        assert [(d.bbox, d.conf) for d in r.detections] == [((0.0, 0.0, 1.0, 1.0), 1.0)]
        assert r.label != "empty" and r.scores
    info = json.loads((res.out / "run.json").read_text())
    assert info["options"]["no_detector"] is True
    with pytest.raises(ValueError, match="exclude each other"):
        run([crops], tmp_path / "o2", no_detector=True, detections=tmp_path / "x.json", log=lambda m: None)


@pytest.mark.parametrize("name, expected", [
    ("20210531082538-RCNX0031.JPG", "2021-05-31T08:25:38"),
    ("2024-06-01 12-00-00.jpg", "2024-06-01T12:00:00"),
    ("IMG_20240601_120000.jpg", "2024-06-01T12:00:00"),
    ("CAM3_2023_12_24T23.59.07(2).JPG", "2023-12-24T23:59:07"),
    ("RCNX0031.JPG", None),
    ("20211399082538.jpg", None),  # month 13: not a date
    ("IMG_120240601120000.jpg", None),  # inside a longer number
])
def test_filename_times(name, expected):
    t = filename_time(name)
    assert (t.isoformat() if t else None) == expected


def test_time_source_option_is_checked():
    assert parse_time_source("exif, filename ,mtime") == ["exif", "filename", "mtime"]
    for bad in ("exif,gps", "", "exif,exif"):
        with pytest.raises(ValueError, match="--time-source"):
            parse_time_source(bad)


def test_photos_without_exif_get_times_from_their_names(real, tmp_path):
    """The heron frames re-saved without EXIF (as many transfers do): the file names still hold the time."""
    bare = tmp_path / "site1"
    bare.mkdir()
    for p in sorted((real / HERON / "media").iterdir())[:4]:
        with Image.open(p) as im:
            im.save(bare / p.name, quality=90)  # Pillow writes no EXIF unless asked
        os.utime(bare / p.name, (1_700_000_000, 1_700_000_000))
    res = run([tmp_path], tmp_path / "out", no_detector=True, log=lambda m: None)
    assert [r.timestamp_source for r in res.records] == ["filename"] * 4
    assert [r.timestamp.isoformat() for r in res.records][:2] == ["2021-05-31T08:25:38", "2021-05-31T08:25:38"]
    assert len({r.event_id for r in res.records}) == 1  # 3 s apart: one event, by time
    rows = list(csv.DictReader(open(res.out / "predictions.csv")))
    assert [r["timestamp_source"] for r in rows] == ["filename"] * 4

    exif_only = run([tmp_path], tmp_path / "out2", no_detector=True, time_source="exif", log=lambda m: None)
    assert all(r.timestamp is None and r.timestamp_source is None for r in exif_only.records)
    from patou.formats.camtrap_dp import export_camtrap_dp

    with pytest.raises(ValueError, match=r"4 of 4 file names hold a date.*--time-source exif,filename"):
        export_camtrap_dp(tmp_path / "out2", tmp_path / "dp", validate=False, log=lambda m: None)

    mtime = run([tmp_path], tmp_path / "out3", no_detector=True, time_source="mtime,exif", log=lambda m: None)
    assert {r.timestamp_source for r in mtime.records} == {"mtime"}
    assert {r.timestamp.timestamp() for r in mtime.records} == {1_700_000_000}


def test_cli_options_and_their_errors(real, tmp_path):
    from typer.testing import CliRunner

    from patou.cli import app

    runner = CliRunner()
    media = real / HERON / "media"
    md = heron_md(real, tmp_path / "md.json")
    r = runner.invoke(app, ["run", str(media), "--out", str(tmp_path / "out"), "--detections", str(md), "-q"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(tmp_path / "out" / "predictions.csv")))
    assert len(rows) == 10 and all(row["label"] != "empty" and row["timestamp_source"] == "exif" for row in rows)
    (tmp_path / "bad.json").write_text('{"images": 3}')
    for args, msg in ((["--detections", str(tmp_path / "bad.json")], "not a MegaDetector batch file"),
                      (["--detections", str(tmp_path / "none.json")], "cannot read"),
                      (["--time-source", "exif,gps"], "--time-source"),
                      (["--detector-size", "1000"], "--detector-size 1000")):
        r = runner.invoke(app, ["run", str(media), "--out", str(tmp_path / "o2"), *args])
        assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output, (args, r.output)
