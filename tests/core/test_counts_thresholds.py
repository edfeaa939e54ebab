"""Counts (boxes of the winning class per photo, MaxN per event) and per-class thresholds."""
from __future__ import annotations

from pathlib import Path

import pytest

from patou.decide import Thresholds, decide_event, decide_image
from patou.record import Detection, ImageRecord

ROOT = Path("/x")


def _box(conf, frame=None, **scores):
    return Detection((0.1, 0.1, 0.2, 0.2), conf, scores=scores, frame_number=frame)


def _img(name, *boxes):
    return ImageRecord(path=ROOT / name, root=ROOT, detections=list(boxes))


def test_threshold_text_per_class_with_a_default():
    t = Thresholds.parse("bear=0.3,wolf=0.6,0.5")
    assert (t.of("bear"), t.of("wolf"), t.of("fox"), t.of(None)) == (0.3, 0.6, 0.5, 0.5)
    assert Thresholds.parse("bear=0.3").default == 0.5  # no default given: patou's 0.5
    assert Thresholds.parse("0.7") == Thresholds(0.7)
    assert Thresholds.parse(t.text()) == t and t.text() == "bear=0.3,wolf=0.6,0.5"
    # run.json keeps the number, or the text when classes have their own; both read back
    assert t.value() == "bear=0.3,wolf=0.6,0.5" and Thresholds(0.4).value() == 0.4
    assert Thresholds.from_options({"threshold": t.value()}) == t
    assert Thresholds.from_options({"threshold": 0.4}) == Thresholds(0.4) and Thresholds.from_options({}) == Thresholds()
    from patou.options import RunOptions

    assert RunOptions(threshold="0.6").threshold == 0.6  # the CLI's text of a plain number is that number
    assert RunOptions(threshold="bear=0.3,0.5").to_json()["threshold"] == "bear=0.3,0.5"
    with pytest.raises(ValueError, match="between 0 and 1"):
        RunOptions(threshold=1.5).check()
    for bad, why in (("bear=1.3", "between 0 and 1"), ("bear=x", "not a number"), ("0.3,0.4", "two defaults"),
                     ("=0.3", "names no class"), ("bear=0.3,bear=0.4", "twice"), ("", "no threshold")):
        with pytest.raises(ValueError, match=why):
            Thresholds.parse(bad)
    with pytest.raises(ValueError, match="lynx not a label of the model"):
        Thresholds.parse("lynx=0.2,0.5").check(["bear", "fox"])


def test_a_class_with_its_own_threshold():
    bear = _img("1.jpg", _box(0.9, bear=0.4, fox=0.35, other=0.25))
    fox = _img("2.jpg", _box(0.9, fox=0.45, bear=0.3, other=0.25))
    for r in (bear, fox):
        decide_image(r, 0.2, Thresholds.parse("bear=0.3,0.5"))
    assert (bear.label, fox.label) == ("bear", "undefined")  # 0.4 passes bear's 0.3; 0.45 fails fox's 0.5
    assert (bear.count, fox.count) == (1, None)


def test_counts_are_boxes_of_the_winning_class_at_or_above_its_threshold():
    # a sow and two cubs, one cub unsure, a fox in the corner, a faint box under the detection threshold
    r = _img("bears.jpg", _box(0.9, bear=0.9, fox=0.1), _box(0.7, bear=0.6, fox=0.4), _box(0.5, bear=0.45, fox=0.3, other=0.25),
             _box(0.6, fox=0.8, bear=0.2), _box(0.1, bear=0.95))
    decide_image(r, 0.2, 0.5)
    assert (r.label, r.count) == ("bear", 2)
    decide_image(r, 0.2, Thresholds.parse("bear=0.4,0.5"))
    assert r.count == 3
    empty = _img("empty.jpg", _box(0.05, bear=0.9))
    decide_image(empty, 0.2, 0.5)
    assert (empty.label, empty.count) == ("empty", 0)
    failed = _img("bad.jpg")
    failed.failure = "truncated"
    decide_image(failed, 0.2, 0.5)
    assert failed.count is None


def test_event_count_is_maxn():
    one = _img("1.jpg", _box(0.9, deer=0.8, fox=0.2))
    three = _img("2.jpg", _box(0.9, deer=0.8, fox=0.2), _box(0.8, deer=0.7, fox=0.3), _box(0.8, deer=0.6, fox=0.4))
    fox_frame = _img("3.jpg", _box(0.9, fox=0.9, deer=0.1), _box(0.9, fox=0.9, deer=0.1))
    blank = _img("4.jpg")
    event = [one, three, fox_frame, blank]
    for r in event:
        decide_image(r, 0.2, 0.5)
    assert [r.count for r in event] == [1, 3, 2, 0]
    decide_event(event, 0.5, detection_threshold=0.2)
    # deer wins the event ((0.8 + 0.8 + 0.1) / 3 ...); its MaxN is the 3 deer of photo 2, not the 2 foxes
    assert {r.event_label for r in event} == {"deer"}
    assert {r.event_count for r in event} == {3}
    decide_event([blank], 0.5, detection_threshold=0.2)
    assert blank.event_count == 0
    decide_event(event, 0.5)  # without the detection threshold nothing is counted (older callers)
    assert one.event_count is None


def test_a_videos_count_is_its_busiest_frame():
    v = _img("v.mp4", _box(0.9, 0, wolf=0.9), _box(0.9, 5, wolf=0.9), _box(0.8, 5, wolf=0.8), _box(0.9, 10, fox=0.9))
    v.frames_processed = [0, 5, 10]
    decide_image(v, 0.2, 0.5)
    assert (v.label, v.count) == ("wolf", 2)


def test_old_records_without_counts_still_load():
    r = _img("1.jpg", _box(0.9, deer=0.8))
    decide_image(r, 0.2, 0.5)
    d = r.to_json()
    assert d["count"] == 1
    old = {k: v for k, v in d.items() if k not in ("count", "event_count", "source_label", "source_score")}
    back = ImageRecord.from_json({**old, "a_field_from_a_later_patou": 1})
    assert back.count is None and back.label == "deer"
    assert ImageRecord.from_json(d).count == 1
