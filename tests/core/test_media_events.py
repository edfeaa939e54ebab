"""Scanning, decoding odd files, EXIF time, event grouping and verdicts."""
import os
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from patou.decide import decide_event, decide_image
from patou.events import burst_key, group_events
from patou.media import decode, scan
from patou.record import Detection, ImageRecord

SN = "speciesnet-cameratrapai/test_data"
BORNEO = "camtrapR-borneo-thumbs/inst/pictures/sample_images_species_dir"
HERON = "camtrapdp-mica-heron/tests/testthat/fixtures/sample_camtrap_dp_data/media"


def _decode(path: Path) -> tuple[ImageRecord, Image.Image | None]:
    r = ImageRecord(path=path, root=path.parent)
    return r, decode(r)


def test_scan_is_recursive_case_insensitive_and_survives_loops(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ["a/x.JPG", "a/b/y.jpeg", "a/b/z.Png", "a/notes.txt", "a/.hidden.jpg"]:
        (tmp_path / name).write_bytes(b"x")
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "loop")
    records, problems = scan([tmp_path])
    assert sorted(r.rel for r in records) == ["a/b/y.jpeg", "a/b/z.Png", "a/x.JPG"]
    assert any("loop" in p for p in problems)
    assert {r.site for r in records} == {"a", "a/b"}
    records, _ = scan([tmp_path], site_depth=1)
    assert {r.site for r in records} == {"a"}


def test_scan_reports_missing_and_unreadable(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "p.jpg").write_bytes(b"x")
    locked.chmod(0)
    try:
        records, problems = scan([tmp_path / "nope", tmp_path])
    finally:
        locked.chmod(0o755)
    assert any("no such file" in p for p in problems)
    if os.geteuid() != 0:  # root reads anything
        assert any("cannot read folder" in p for p in problems)


def test_scan_excludes_results_folder(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "copy.jpg").write_bytes(b"x")
    (tmp_path / "keep.jpg").write_bytes(b"x")
    records, _ = scan([tmp_path], exclude=[tmp_path / "out"])
    assert [r.rel for r in records] == ["keep.jpg"]


@pytest.mark.parametrize("mode", ["L", "CMYK", "I;16", "RGBA", "P"])
def test_decode_odd_modes_gives_rgb(tmp_path, mode):
    rng = np.random.default_rng(0)
    if mode == "I;16":
        img = Image.fromarray((rng.random((40, 60)) * 60000).astype(np.uint16))
        assert img.mode.startswith("I;16")
        path = tmp_path / "x.png"
    else:
        img = Image.fromarray((rng.random((40, 60, 3)) * 255).astype(np.uint8)).convert(mode)
        path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    img.save(path)
    r, out = _decode(path)
    assert r.failure is None and out.mode == "RGB" and out.size == (60, 40)
    if mode == "I;16":  # rescaled, not clipped to white
        assert 50 < np.asarray(out).mean() < 200


def test_decode_failures_are_one_line_texts(tmp_path):
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    for name, expect in [("zero.jpg", "0 bytes"), ("text.jpg", "not an image")]:
        r, img = _decode(tmp_path / name)
        assert img is None and expect in r.failure and "\n" not in r.failure


def test_decode_real_odd_files(real):
    r, img = _decode(real / SN / "african_elephants_truncated_file.jpg")
    assert img is None and r.failure == "truncated image file"
    ref_r, ref = _decode(real / SN / "african_elephants.jpg")
    for name in ["african_elephants_bw.jpg", "african_elephants_cmyk.jpg"]:
        r, img = _decode(real / SN / name)
        assert r.failure is None and img.mode == "RGB" and img.size == ref.size
    # the EXIF-rotated copy comes out upright: same size as reported, width/height swapped or not
    r, img = _decode(real / SN / "african_elephants_with_exif_orientation.jpg")
    assert r.failure is None
    assert (img.width >= img.height) == (r.width >= r.height)
    with Image.open(real / SN / "african_elephants_with_exif_orientation.jpg") as raw:
        orientation = raw.getexif().get(0x0112, 1)
    assert orientation != 1  # the test file really is rotated by EXIF
    if orientation in (5, 6, 7, 8):
        assert (r.width, r.height) == (raw.height, raw.width)


def test_decode_uses_draft_and_reads_exif_time(real):
    r, img = _decode(real / HERON / "20210531082538-RCNX0031.JPG")
    assert (r.width, r.height) == (2048, 1440)
    assert 1024 <= max(img.size) < 2048  # reduced by draft, never below what the models need
    assert r.timestamp == datetime(2021, 4, 11, 20, 43, 9)


def test_decode_drafts_mpo_files_like_jpegs(real):
    """MPO (a JPEG plus an appended preview frame) is DCT-scaled too, not decoded at 12 MP."""
    path = real / "animl-py-southwest/examples/Southwest/2021-05-28_SYFR0041_deer.JPG"
    with Image.open(path) as raw:
        assert raw.format == "MPO" and raw.size == (4032, 3024)
    r, img = _decode(path)
    assert (r.width, r.height) == (4032, 3024) and img.mode == "RGB"
    assert img.size == (2016, 1512)  # 1/2 scale: the largest DCT scale keeping >= 1024 px
    with Image.open(path) as raw:  # the same picture as the full decode, shrunk
        full = np.asarray(raw.convert("RGB").resize(img.size, Image.Resampling.BOX), dtype=np.int16)
    assert np.abs(full - np.asarray(img, dtype=np.int16)).mean() < 3


def test_burst_key():
    assert burst_key("100002_1") == burst_key("100002_5") == "100002"
    assert burst_key("StationA__2009-04-21__00-40-00(1)") == "StationA__2009-04-21__00-40-00"
    assert burst_key("IMG0001") is None  # a camera counter is not a burst


def test_events_by_time_gap_and_filename_fallback(tmp_path):
    t0 = datetime(2024, 5, 1, 3, 0, 0)
    def rec(name, site, dt=None):
        return ImageRecord(path=tmp_path / site / name, root=tmp_path, site=site, timestamp=dt)
    rs = [
        rec("a.jpg", "s1", t0), rec("b.jpg", "s1", t0 + timedelta(seconds=15)),
        rec("c.jpg", "s1", t0 + timedelta(seconds=34)),  # 19 s after b: same event (chained)
        rec("d.jpg", "s1", t0 + timedelta(seconds=60)),  # 26 s gap: new event
        rec("e.jpg", "s2", t0 + timedelta(seconds=1)),  # other site: never joins s1
        rec("100002_1.jpg", "s1"), rec("100002_2.jpg", "s1"), rec("IMG0001.jpg", "s1"), rec("IMG0002.jpg", "s1"),
    ]
    bad = rec("z.jpg", "s1", t0)
    bad.failure = "truncated image file"
    events = group_events(rs + [bad], gap=20)
    sets = sorted(sorted(r.path.name for r in ev) for ev in events)
    assert sets == sorted([["a.jpg", "b.jpg", "c.jpg"], ["d.jpg"], ["e.jpg"], ["100002_1.jpg", "100002_2.jpg"],
                           ["IMG0001.jpg"], ["IMG0002.jpg"]])
    assert bad.event_id is None
    ids = [r.event_id for r in rs]
    group_events(list(reversed(rs)), gap=20)
    assert [r.event_id for r in rs] == ids  # ids do not depend on input order (resume relies on it)


def test_heron_burst_is_one_event(real):
    records, _ = scan([real / HERON])
    for r in records:
        decode(r)
    events = group_events(records, gap=20)
    assert len(records) == 10 and len(events) == 1


def test_borneo_events_per_station(real):
    records, _ = scan([real / BORNEO], site_depth=1)
    for r in records:
        assert decode(r) is not None, r.failure
    assert {r.site for r in records} == {"StationA", "StationB", "StationC"}
    events = group_events(records, gap=20)
    for ev in events:
        assert len({r.site for r in ev}) == 1  # an event never spans stations
        times = sorted(r.timestamp for r in ev)
        assert (times[-1] - times[0]).total_seconds() <= 20 * (len(ev) - 1)
    by_name = {r.rel: r for r in records}
    # same minute, same station: one event; minute resolution means 17:47..17:49 needs a wider gap
    assert by_name["StationB/MNE/StationB__2009-04-28__17-48-00(1).JPG"].event_id == \
        by_name["StationB/MNE/StationB__2009-04-28__17-48-00(3).JPG"].event_id
    assert by_name["StationB/MNE/StationB__2009-04-28__17-47-00(1).JPG"].event_id != \
        by_name["StationB/MNE/StationB__2009-04-28__17-48-00(1).JPG"].event_id
    group_events(records, gap=120)
    visit = {r.event_id for r in records if "2009-04-28__17-4" in r.rel}
    assert len(visit) == 1 and sum("2009-04-28__17-4" in r.rel for r in records) == 8
    assert len({r.event_id for r in records}) < len(events)


def _box(conf, **scores):
    return Detection((0.1, 0.1, 0.2, 0.2), conf, scores=scores)


def test_decide_image_and_event():
    root = Path("/x")
    empty = ImageRecord(path=root / "1.jpg", root=root, detections=[_box(0.1, bear=0.9, fox=0.1)])
    bear = ImageRecord(path=root / "2.jpg", root=root, detections=[_box(0.9, bear=0.7, fox=0.3), _box(0.5, bear=0.2, fox=0.8)])
    unsure = ImageRecord(path=root / "3.jpg", root=root, detections=[_box(0.6, bear=0.45, fox=0.55)])
    for r in (empty, bear, unsure):
        decide_image(r, detection_threshold=0.2, threshold=0.6, target="bear")
    assert (empty.label, empty.score, empty.target_score) == ("empty", 0.9, 0.0)
    assert (bear.label, bear.score, bear.target_score) == ("fox", 0.8, 0.7)  # best box wins; target is max
    assert unsure.label == "undefined" and unsure.score == 0.55
    decide_event([empty, bear, unsure], threshold=0.6, target="bear")
    # mean of the non-empty images only: fox (0.8+0.55)/2 = 0.675
    assert bear.event_label == empty.event_label == "fox"
    assert bear.event_score == pytest.approx(0.675)
    assert bear.event_target_score == pytest.approx((0.7 + 0.45) / 2)
    decide_event([empty], threshold=0.6)
    assert empty.event_label == "empty"


def test_event_mean_over_logits_is_the_publishers_rule():
    """With the card's logit rule (DeepFaune: the softmax of the images' mean logit at the event
    temperature), decide_event computes it from the images' probabilities alone."""
    rng = np.random.default_rng(0)
    labels = ["bear", "fox", "wolf", "deer"]
    t, te = 1.12, 1.10
    logits = rng.normal(0, 6, (3, 4))
    root = Path("/x")
    records = []
    for i, z in enumerate(logits):
        p = np.exp(z / t) / np.exp(z / t).sum()
        scores = {k: float(f"{float(x):.6g}") for k, x in zip(labels, p.astype(np.float32))}  # as the pipeline keeps them
        records.append(ImageRecord(path=root / f"{i}.jpg", root=root, detections=[_box(0.9, **scores)]))
    for r in records:
        decide_image(r, detection_threshold=0.2, threshold=0.5)
    decide_event(records, threshold=0.5, logit_scale=t / te)
    z = logits.mean(0) / te
    want = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    assert records[0].event_label == labels[int(want.argmax())]
    assert records[0].event_score == pytest.approx(float(want.max()), abs=1e-6)
    mean = np.mean([[r.scores[k] for k in labels] for r in records], axis=0)
    decide_event(records, threshold=0.5)  # the default: the mean of the probabilities, another number
    assert records[0].event_score == pytest.approx(float(mean.max())) and abs(mean.max() - want.max()) > 1e-3
