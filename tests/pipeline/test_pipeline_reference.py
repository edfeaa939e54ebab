"""Speed work must not cost results: today's boxes and labels on the real images vs the reference
recorded before it (tests/pipeline_snapshot.py, tests/data/pipeline_reference.json)."""
from __future__ import annotations

import json

import pytest
from pipeline_snapshot import REFERENCE, differences, from_records, mpo_files, snapshot


@pytest.mark.parametrize("variant", ["float32", "fast"])
@pytest.mark.slow
def test_same_boxes_and_labels_as_the_reference(real, variant, request):
    ref = json.loads(REFERENCE.read_text())[variant]
    # float32: the session's `patou run` on the real images (run/test_run.py reads the same records)
    new = from_records(request.getfixturevalue("real_run")[0].records) if variant == "float32" \
        else snapshot(real, fast=True)
    assert len(ref) == 134 and sum(bool(v["boxes"]) for v in ref.values()) > 40  # the reference is not trivial
    mpo = mpo_files(real, ref)
    assert len(mpo) == 6  # the looser rule covers these and nothing else
    diffs = differences(ref, new, redecoded=mpo)
    assert not diffs, "\n".join(diffs)


def test_differences_reports_a_moved_box_a_new_box_and_a_changed_label():
    ref = json.loads(REFERENCE.read_text())["float32"]
    rel = next(k for k, v in ref.items() if v["boxes"] and v["boxes"][0][4] > 0.5)
    new = json.loads(json.dumps(ref))
    assert differences(ref, new) == []
    new[rel]["boxes"][0][0] += 0.5 * new[rel]["boxes"][0][2]  # shifted by half its width
    new[rel]["label"] = "wolf" if ref[rel]["label"] != "wolf" else "fox"
    d = differences(ref, new)
    assert any("lost" in x for x in d) and any("new box" in x for x in d) and any("label" in x for x in d)


@pytest.mark.slow
def test_images_side_by_side_give_the_same_records_in_input_order(real):
    """`patou run` analyses one image per core; the guard one at a time with every core. Same
    records either way (sessions on 1 or 2 threads: float rounding at most), finished in input order."""
    from patou.media import scan
    from patou.pipeline import Analyser, process

    records = {}
    for at_once in (1, 2):
        recs, _ = scan([real / "animl-py-southwest", real / "zamba-ena24-small"])
        recs = recs[:24]
        models = Analyser(threads=2, images_at_once=at_once)
        assert models.images_at_once == at_once
        done = []
        process(recs, models, 0.2, on_done=done.append)
        assert [r.path for r in done] == [r.path for r in recs]  # checkpoint and progress in input order
        records[at_once] = recs
    one, two = records[1], records[2]
    assert sum(bool(r.detections) for r in one) >= 12
    for a, b in zip(one, two):
        assert (a.failure, len(a.detections)) == (b.failure, len(b.detections)), a.path
        for x, y in zip(a.detections, b.detections):
            assert x.bbox == pytest.approx(y.bbox, abs=2e-4) and x.conf == pytest.approx(y.conf, abs=2e-4)
            if x.scores:
                assert max(x.scores, key=x.scores.get) == max(y.scores, key=y.scores.get)
                assert x.scores == pytest.approx(y.scores, abs=1e-3)
