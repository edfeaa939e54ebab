"""Output writers (CSV, XLSX, MegaDetector JSON) and the file sorter."""
from __future__ import annotations

import copy
import csv
import errno
import hashlib
import json
import os
import re
import shutil
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from patou.formats.megadetector import validate_megadetector_json, write_megadetector_json
from patou.sort import plan_sort, sort_files
from patou.formats.tables import BASE_COLUMNS, atomic_output, build_rows, write_csv, write_xlsx
from patou.record import EMPTY, UNDEFINED, Detection, ImageRecord

CLASSES = ["badger", "red_fox", "roe_deer"]
CARD = {"name": "mdv5a", "file": "md_v5a.0.0.onnx", "version": "5a",
        "labels": ["animal", "person", "vehicle"], "extra": {}}


def make_records(a: Path, b: Path) -> list[ImageRecord]:
    """Two roots, three sites, three events, an empty, an undefined, a failure, several boxes."""
    ev1 = dict(event_id="site1-0001", event_label="red_fox", event_score=0.75, event_target_score=0.7, event_count=1)
    return [
        # given out of order on purpose: outputs sort by root, then rel
        ImageRecord(b / "cam/bad.jpg", b, site="cam", failure="cannot identify image file"),
        ImageRecord(a / "site1/IMG_0002.JPG", a, site="site1", timestamp=datetime(2024, 5, 1, 6, 0, 5),
                    width=1920, height=1080, label=EMPTY, score=0.97, target_score=0.0, count=0, **ev1),
        ImageRecord(a / "site1/IMG_0001.JPG", a, site="site1", timestamp=datetime(2024, 5, 1, 6, 0, 0),
                    width=1920, height=1080,
                    detections=[Detection((0.1, 0.2, 0.3, 0.4), 0.91, scores={"red_fox": 0.8, "badger": 0.15,
                                                                               "roe_deer": 0.005}),
                                Detection((0.5, 0.5, 0.1, 0.1), 0.12, scores={"badger": 0.6, "red_fox": 0.4})],
                    label="red_fox", score=0.8123456, target_score=0.81234, count=1, **ev1),
        ImageRecord(a / "site2/IMG_0003.JPG", a, site="site2", timestamp=datetime(2024, 5, 2, 22, 0, 0),
                    width=1920, height=1080,
                    detections=[Detection((0.2, 0.2, 0.2, 0.2), 0.3, scores={"red_fox": 0.34, "badger": 0.33,
                                                                             "roe_deer": 0.33})],
                    label=UNDEFINED, score=0.34, target_score=0.34, event_id="site2-0001",
                    event_label=UNDEFINED, event_score=0.34, event_target_score=0.34),
        ImageRecord(b / "cam/IMG_9.JPG", b, site="cam", width=640, height=480,
                    # box slightly past the right/bottom edges: the MD writer must clip it
                    detections=[Detection((0.9, 0.5, 0.2, 0.6), 0.55, scores={"roe_deer": 0.9, "red_fox": 0.1})],
                    label="roe_deer", score=0.9, target_score=0.1, event_id="cam-0001", count=1,
                    event_label="roe_deer", event_score=0.88, event_target_score=0.1, event_count=1),
    ]


A, B = Path("/data/cams/A"), Path("/data/cams/B")


@pytest.fixture
def records() -> list[ImageRecord]:
    return make_records(A, B)


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return rows[0], [dict(zip(rows[0], r)) for r in rows[1:]]


# ---------------------------------------------------------------- CSV / XLSX

def test_csv_columns_and_values(records, tmp_path):
    out = write_csv(records, tmp_path / "out" / "images.csv", detection_threshold=0.2)
    header, rows = read_csv(out)
    assert header == BASE_COLUMNS + ["failure"]
    assert [(r["root"], r["file"]) for r in rows] == [
        (str(A), "site1/IMG_0001.JPG"), (str(A), "site1/IMG_0002.JPG"), (str(A), "site2/IMG_0003.JPG"),
        (str(B), "cam/IMG_9.JPG"), (str(B), "cam/bad.jpg")]
    fox, empty, undef, deer, bad = rows
    # 0.91 counts, 0.12 is under the threshold; the max still reports the best box
    assert fox["detections"] == "1" and fox["max_detection_conf"] == "0.91"
    assert fox["score"] == "0.8123" and fox["timestamp"] == "2024-05-01T06:00:00"
    assert fox["event_id"] == "site1-0001" and fox["event_label"] == "red_fox" and fox["event_score"] == "0.75"
    assert fox["width"] == "1920" and fox["failure"] == ""
    assert (fox["count"], fox["event_count"], empty["count"], undef["count"]) == ("1", "1", "0", "")
    assert empty["label"] == EMPTY and empty["detections"] == "0" and empty["max_detection_conf"] == ""
    assert undef["label"] == UNDEFINED and undef["site"] == "site2"
    assert deer["timestamp"] == "" and deer["event_id"] == "cam-0001"
    assert bad["failure"] == "cannot identify image file"
    assert bad["detections"] == "" and bad["label"] == "" and bad["width"] == ""


def test_target_columns_only_with_target(records, tmp_path):
    header, _ = read_csv(write_csv(records, tmp_path / "plain.csv", 0.2))
    assert "target_score" not in header and "event_target_score" not in header
    header, rows = read_csv(write_csv(records, tmp_path / "t.csv", 0.2, target="red_fox"))
    assert header[-3:] == ["target_score", "event_target_score", "failure"]
    assert rows[0]["target_score"] == "0.8123" and rows[0]["event_target_score"] == "0.7"
    assert rows[-1]["target_score"] == ""  # the failure


def test_csv_write_is_atomic(records, tmp_path):
    out = tmp_path / "images.csv"
    out.write_text("old")
    write_csv(records, out, 0.2)
    assert out.read_text().startswith("file,root,")
    assert os.listdir(tmp_path) == ["images.csv"]  # no temp file left behind
    with pytest.raises(RuntimeError):
        with atomic_output(out) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert out.read_text().startswith("file,root,") and os.listdir(tmp_path) == ["images.csv"]


def _sheet_rows(ws) -> list[list]:
    return [list(r) for r in ws.iter_rows(values_only=True)]


def test_xlsx_sheets(records, tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    records.append(ImageRecord(A / "=SUM(1,2).jpg", A, site="x", failure="odd\x01name"))
    out = write_xlsx(records, tmp_path / "report.xlsx", 0.2, target="red_fox")
    wb = openpyxl.load_workbook(out)
    assert wb.sheetnames == ["images", "events", "counts"]

    img = wb["images"]
    header, rows = build_rows(records, 0.2, "red_fox")
    got = _sheet_rows(img)
    # same rows as the CSV builds, None as empty cells (the odd record is checked below)
    assert [r for r in got if r[0] != "=SUM(1,2).jpg"] == [header] + [r for r in rows if r[0] != "=SUM(1,2).jpg"]
    assert img.freeze_panes == "A2" and all(c.font.b for c in img[1])
    assert img.column_dimensions["A"].width >= len("site1/IMG_0001.JPG")
    odd = [r for r in got if r[0] == "=SUM(1,2).jpg"]
    assert odd and odd[0][-1] == "oddname"  # control character dropped
    assert [c for c in img["A"] if c.value == "=SUM(1,2).jpg"][0].data_type == "s"  # text, not a formula

    ev = _sheet_rows(wb["events"])
    assert ev[0] == ["event_id", "site", "first_timestamp", "last_timestamp", "n_images", "n_nonempty",
                     "event_label", "event_score", "event_count", "event_target_score", "files"]
    by_id = {r[0]: r for r in ev[1:]}
    assert set(by_id) == {"site1-0001", "site2-0001", "cam-0001"}
    e1 = by_id["site1-0001"]
    assert e1[1:8] == ["site1", "2024-05-01T06:00:00", "2024-05-01T06:00:05", 2, 1, "red_fox", 0.75]
    assert e1[8] == 1 and e1[9] == 0.7 and e1[10] == "site1/IMG_0001.JPG, site1/IMG_0002.JPG"
    assert [r[0] for r in ev[1:]] == ["site1-0001", "site2-0001", "cam-0001"]  # by time, untimed last

    counts = {r[0]: r[1:] for r in _sheet_rows(wb["counts"])[1:]}
    # images, events, animals (the sum of the events' MaxN)
    assert counts == {"red_fox": [1, 1, 1], EMPTY: [1, 0, 0], UNDEFINED: [1, 1, 0], "roe_deer": [1, 1, 1]}
    assert wb["counts"]["A1"].font.b


def test_xlsx_without_target(records, tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    wb = openpyxl.load_workbook(write_xlsx(records, tmp_path / "r.xlsx", 0.2))
    assert "target_score" not in _sheet_rows(wb["images"])[0]
    assert "event_target_score" not in _sheet_rows(wb["events"])[0]


# ---------------------------------------------------------------- MegaDetector JSON

def write_md(records, path, roots=(A, B)) -> dict:
    write_megadetector_json(records, path, CARD, CLASSES, "patou-test-classifier", roots)
    return json.loads(path.read_text())


def test_md_json_format(records, tmp_path):
    data = write_md(records, tmp_path / "md.json")
    assert validate_megadetector_json(data) == []
    info = data["info"]
    assert info["format_version"] == "1.6" and info["detector"] == "md_v5a.0.0.onnx"
    assert info["classifier"] == "patou-test-classifier"
    for k in ("detection_completion_time", "classification_completion_time"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", info[k])
    assert info["detector_metadata"]["typical_detection_threshold"] == 0.2
    assert data["detection_categories"] == {"1": "animal", "2": "person", "3": "vehicle"}
    assert data["classification_categories"] == {"0": "badger", "1": "red_fox", "2": "roe_deer"}

    ims = {im["file"]: im for im in data["images"]}
    # two roots: paths relative to their common folder /data/cams
    assert set(ims) == {"A/site1/IMG_0001.JPG", "A/site1/IMG_0002.JPG", "A/site2/IMG_0003.JPG",
                        "B/cam/IMG_9.JPG", "B/cam/bad.jpg"}
    assert ims["B/cam/bad.jpg"] == {"file": "B/cam/bad.jpg", "failure": "cannot identify image file",
                                    "detections": None}
    assert ims["A/site1/IMG_0002.JPG"]["detections"] == []
    d1, d2 = ims["A/site1/IMG_0001.JPG"]["detections"]
    assert d1 == {"category": "1", "conf": 0.91, "bbox": [0.1, 0.2, 0.3, 0.4],
                  "classifications": [["1", 0.8], ["0", 0.15]]}  # roe_deer 0.005 < 0.01 dropped
    assert d2["conf"] == 0.12  # low boxes are kept: users threshold later
    x, y, w, h = ims["B/cam/IMG_9.JPG"]["detections"][0]["bbox"]
    assert (x, y) == (0.9, 0.5) and x + w <= 1.0 and y + h <= 1.0


def test_md_json_single_root_uses_rel(records, tmp_path):
    only_a = [r for r in records if r.root == A]
    data = write_md(only_a, tmp_path / "md.json", roots=[A])
    assert sorted(im["file"] for im in data["images"]) == [r.rel for r in sorted(only_a, key=lambda r: r.rel)]
    assert validate_megadetector_json(data) == []


def _first_det(d):
    return next(im for im in d["images"] if im.get("detections"))["detections"][0]


BROKEN = {
    "bbox past the edge": lambda d: _first_det(d).update(bbox=[0.8, 0.1, 0.5, 0.1]),
    "negative bbox": lambda d: _first_det(d).update(bbox=[-0.1, 0.1, 0.2, 0.1]),
    "bbox of 3": lambda d: _first_det(d).update(bbox=[0.1, 0.1, 0.2]),
    "int category": lambda d: _first_det(d).update(category=1),
    "unknown category": lambda d: _first_det(d).update(category="9"),
    "conf above 1": lambda d: _first_det(d).update(conf=1.5),
    "int conf": lambda d: _first_det(d).update(conf=1),
    "missing format_version": lambda d: d["info"].pop("format_version"),
    "old format_version": lambda d: d["info"].update(format_version="1.5"),
    "failure with a detections list": lambda d: next(im for im in d["images"] if "failure" in im)
    .update(detections=[]),
    "null detections without failure": lambda d: d["images"][0].update(detections=None),
    "duplicate file": lambda d: d["images"].append(copy.deepcopy(d["images"][0])),
    "unknown class id": lambda d: _first_det(d).update(classifications=[["7", 0.9]]),
    "unsorted classes": lambda d: _first_det(d).update(classifications=[["0", 0.1], ["1", 0.8]]),
    "int-keyed categories": lambda d: d.update(detection_categories={1: "animal"}),
    "no images": lambda d: d.pop("images"),
}


@pytest.mark.parametrize("name", BROKEN)
def test_md_validator_catches(records, tmp_path, name):
    data = write_md(records, tmp_path / "md.json")
    assert validate_megadetector_json(data) == []
    BROKEN[name](data)
    assert validate_megadetector_json(data), f"validator missed: {name}"


# ---------------------------------------------------------------- sorting

def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def files_under(*dirs: Path) -> list[Path]:
    return sorted(p for d in dirs if d.exists() for p in d.rglob("*") if p.is_file() and not p.is_symlink())


def digests(*dirs: Path) -> Counter:
    return Counter(sha(p) for p in files_under(*dirs))


@pytest.fixture
def tree(tmp_path):
    """Real files for make_records under tmp_path/in/A and tmp_path/in/B, each with distinct bytes."""
    a, b = tmp_path / "in" / "A", tmp_path / "in" / "B"
    recs = make_records(a, b)
    for i, r in enumerate(recs):
        r.path.parent.mkdir(parents=True, exist_ok=True)
        r.path.write_bytes(os.urandom(1000 + i) + r.rel.encode())
        os.utime(r.path, (1_600_000_000, 1_600_000_000 + i))  # an old mtime the copy must keep
    return recs, (a, b), tmp_path / "sorted"


EXPECTED = {"red_fox/site1/IMG_0001.JPG", "red_fox/site1/IMG_0002.JPG",  # the empty frame follows its event
            "undefined/site2/IMG_0003.JPG", "roe_deer/cam/IMG_9.JPG", "failed/cam/bad.jpg"}


def rels(d: Path) -> set[str]:
    return {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file() or p.is_symlink()}


def test_plan(tree):
    recs, _, out = tree
    plan = plan_sort(recs, out)
    assert {dst.relative_to(out).as_posix() for _, dst in plan} == EXPECTED
    assert {src for src, _ in plan} == {r.path for r in recs}


def test_copy_keeps_sources_and_mtime(tree):
    recs, roots, out = tree
    before = {r.path: sha(r.path) for r in recs}
    rep = sort_files(plan_sort(recs, out), "copy", log=lambda m: None)
    assert (rep.done, rep.skipped, rep.clashes, rep.errors) == (5, 0, 0, 0) and rep.ok
    assert rels(out) == EXPECTED
    for src, dst in plan_sort(recs, out):
        assert sha(src) == before[src] == sha(dst)
        assert dst.stat().st_mtime == src.stat().st_mtime
        assert not os.path.samefile(src, dst)  # a real copy, not a link
    assert not [p for p in out.rglob(".*")]  # no temp files left
    again = sort_files(plan_sort(recs, out), "copy", log=lambda m: None)
    assert (again.done, again.skipped) == (0, 5)


def test_move_loses_nothing(tree):
    recs, roots, out = tree
    before = digests(*roots)
    rep = sort_files(plan_sort(recs, out), "move", log=lambda m: None)
    assert (rep.done, rep.errors, rep.clashes) == (5, 0, 0)
    assert files_under(*roots) == []
    assert digests(*roots, out) == before and rels(out) == EXPECTED
    assert (out / "red_fox/site1/IMG_0001.JPG").stat().st_mtime == 1_600_000_000 + 2


def test_link(tree):
    recs, roots, out = tree
    rep = sort_files(plan_sort(recs, out), "link", log=lambda m: None)
    assert rep.done == 5 and rels(out) == EXPECTED
    for src, dst in plan_sort(recs, out):
        assert dst.is_symlink() and Path(os.readlink(dst)) == src.resolve() and src.is_file()
    assert sort_files(plan_sort(recs, out), "link", log=lambda m: None).skipped == 5


@pytest.mark.parametrize("mode", ["move", "copy", "link"])
def test_clash_leaves_source(tree, mode):
    recs, roots, out = tree
    src = roots[0] / "site1/IMG_0001.JPG"
    dst = out / "red_fox/site1/IMG_0001.JPG"
    dst.parent.mkdir(parents=True)
    dst.write_bytes(b"someone else's photo")
    src_sha = sha(src)
    logged = []
    rep = sort_files(plan_sort(recs, out), mode, log=logged.append)
    assert rep.clashes == 1 and rep.done == 4 and not rep.ok
    assert len(logged) == 1 and "clash" in logged[0] and str(src) in logged[0]
    assert src.is_file() and sha(src) == src_sha
    assert dst.read_bytes() == b"someone else's photo" and not dst.is_symlink()


@pytest.mark.parametrize("how", ["hardlink", "copy"])
def test_rerun_after_interrupted_move(tree, how):
    recs, roots, out = tree
    before = digests(*roots)
    src = roots[0] / "site1/IMG_0001.JPG"
    dst = out / "red_fox/site1/IMG_0001.JPG"
    dst.parent.mkdir(parents=True)
    # killed after placing dst, before unlinking src (same-fs link, or cross-device copy)
    os.link(src, dst) if how == "hardlink" else shutil.copy2(src, dst)
    rep = sort_files(plan_sort(recs, out), "move", log=lambda m: None)
    assert (rep.done, rep.skipped, rep.clashes, rep.errors) == (4, 1, 0, 0)
    assert not src.exists() and files_under(*roots) == []
    assert digests(out) == before  # each file exactly once
    again = sort_files(plan_sort(recs, out), "move", log=lambda m: None)
    assert (again.done, again.skipped) == (0, 5) and digests(out) == before


def _no_link_for_sources(monkeypatch, err=errno.EXDEV):
    """os.link fails like a cross-device link for source files; temp->dst links still work."""
    real_link = os.link

    def fake(src, dst, *a, **k):
        if ".patou-part" not in os.fspath(src):
            raise OSError(err, os.strerror(err))
        return real_link(src, dst, *a, **k)
    monkeypatch.setattr(os, "link", fake)


def test_cross_device_move_verifies_and_moves(tree, monkeypatch):
    recs, roots, out = tree
    before = digests(*roots)
    _no_link_for_sources(monkeypatch)
    rep = sort_files(plan_sort(recs, out), "move", log=lambda m: None)
    assert (rep.done, rep.errors) == (5, 0)
    assert files_under(*roots) == [] and digests(out) == before
    dst = out / "red_fox/site1/IMG_0001.JPG"
    assert dst.stat().st_nlink == 1 and dst.stat().st_mtime == 1_600_000_000 + 2


def test_cross_device_move_keeps_source_on_bad_copy(tree, monkeypatch):
    recs, roots, out = tree
    before = {r.path: sha(r.path) for r in recs}
    _no_link_for_sources(monkeypatch)
    real_copy2 = shutil.copy2

    def corrupting_copy2(src, dst, **k):
        real_copy2(src, dst, **k)
        with open(dst, "ab") as f:
            f.write(b"bit rot")
    monkeypatch.setattr(shutil, "copy2", corrupting_copy2)
    logged = []
    rep = sort_files(plan_sort(recs, out), "move", log=logged.append)
    assert rep.errors == 5 and rep.done == 0
    assert all("checksum" in m for m in logged)
    assert {r.path: sha(r.path) for r in recs} == before
    assert files_under(out) == []  # no partial or temp file left


def test_filesystem_without_hard_links(tree, monkeypatch):
    """exFAT-like: every os.link fails; move and copy fall back to check-then-rename, still no clobber."""
    recs, roots, out = tree
    before = digests(*roots)
    monkeypatch.setattr(os, "link", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EPERM, "no links")))
    blocker = out / "roe_deer/cam/IMG_9.JPG"
    blocker.parent.mkdir(parents=True)
    blocker.write_bytes(b"other")
    rep = sort_files(plan_sort(recs, out), "move", log=lambda m: None)
    assert (rep.done, rep.clashes, rep.errors) == (4, 1, 0)
    assert blocker.read_bytes() == b"other" and (roots[1] / "cam/IMG_9.JPG").is_file()
    assert digests(*roots, out) - Counter([sha(blocker)]) == before


def test_dry_run_touches_nothing(tree):
    recs, roots, out = tree
    snap = {p: (sha(p), p.stat().st_mtime) for p in files_under(*roots)}
    logged = []
    rep = sort_files(plan_sort(recs, out), "move", dry_run=True, log=logged.append)
    assert rep.planned == 5 and rep.done == 0
    assert len(logged) == 5 and all(m.startswith("MOVE ") and " -> " in m for m in logged)
    assert not out.exists()
    assert {p: (sha(p), p.stat().st_mtime) for p in files_under(*roots)} == snap


def test_sort_dir_inside_root_and_unsafe_labels(tree):
    recs, roots, _ = tree
    out = roots[0] / "sorted"  # inside input root A
    old = out / "red_fox/site1/IMG_0001.JPG"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"sorted by an earlier run")
    recs.append(ImageRecord(old, roots[0], event_label="red_fox"))
    recs[1].event_label = "../../evil"
    plan = plan_sort(recs, out)
    assert old not in {src for src, _ in plan}
    base = out.resolve()
    assert all(Path(os.path.abspath(dst)).is_relative_to(base) for _, dst in plan)
    assert len(plan) == 5


def test_symlinked_folder_in_sort_dir_is_not_followed(tree):
    recs, roots, out = tree
    elsewhere = out.parent / "elsewhere"
    elsewhere.mkdir()
    out.mkdir()
    (out / "red_fox").symlink_to(elsewhere, target_is_directory=True)
    rep = sort_files(plan_sort(recs, out), "copy", log=lambda m: None)
    assert rep.errors == 2 and rep.done == 3
    assert list(elsewhere.iterdir()) == []


def test_same_name_from_two_roots_clashes(tmp_path):
    recs = []
    for name in ("A", "B"):
        p = tmp_path / name / "x/same.jpg"
        p.parent.mkdir(parents=True)
        p.write_bytes(b"same bytes")  # identical content must still not merge two inputs
        recs.append(ImageRecord(p, tmp_path / name, event_label="fox"))
    rep = sort_files(plan_sort(recs, tmp_path / "out"), "move", log=lambda m: None)
    assert (rep.done, rep.clashes) == (1, 1)
    assert (tmp_path / "B/x/same.jpg").is_file() and (tmp_path / "out/fox/x/same.jpg").is_file()


def test_copy_sort_real_images(real, tmp_path):
    media = sorted((real / "camtrapdp-mica-heron").rglob("media/*.JPG"))[:3]
    assert len(media) == 3
    root = real / "camtrapdp-mica-heron"
    recs = [ImageRecord(p, root, event_label="grey_heron") for p in media]
    before = {p: (sha(p), p.stat().st_mtime) for p in media}
    rep = sort_files(plan_sort(recs, tmp_path / "sorted"), "copy", log=lambda m: None)
    assert (rep.done, rep.errors) == (3, 0)
    for p in media:
        dst = tmp_path / "sorted/grey_heron" / p.relative_to(root)
        assert sha(dst) == before[p][0] and dst.stat().st_mtime == before[p][1]
    assert {p: (sha(p), p.stat().st_mtime) for p in media} == before  # sources untouched
