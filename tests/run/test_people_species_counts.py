"""A run end to end on real photos with people: SpeciesNet's predictions as boxes (its labels kept
beside patou's), --sort copy --blur-humans, per-class thresholds, counts, and format-1 folders."""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from typer.testing import CliRunner

import patou
from patou.blur import MARGIN, high_frequency_energy
from patou.cli import app
from patou.results import load_run

pytestmark = pytest.mark.slow
SN = "speciesnet-cameratrapai/test_data"
ANIML = "animl-py-southwest/examples/Southwest"
PEOPLE = {f"{SN}/human.jpg": "walker", f"{ANIML}/B012_2021-05-27_human.jpg": "shoulder"}
OTHERS = {f"{SN}/domestic_dog.jpg": "dog", f"{SN}/domestic_cattle.jpg": "cattle"}
DOG = "2f6f2e61-c1b8-4d2b-9d7b-5c6d9f6e1a11;mammalia;carnivora;canidae;canis;familiaris;domestic dog"
HUMAN = "990ae9dd-7a59-4344-afcb-1b7b21368000;mammalia;primates;hominidae;homo;sapiens;human"


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _rows(path: Path) -> dict[str, dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return {r["file"]: r for r in csv.DictReader(f)}


def _inside(a, b) -> bool:
    """Box b lies within box a (a box blurred over another is one field, not two)."""
    return a[0] <= b[0] and a[1] <= b[1] and b[0] + b[2] <= a[0] + a[2] and b[1] + b[3] <= a[1] + a[3]


@pytest.fixture(scope="module")
def photos(real, tmp_path_factory):
    """Copies of two photos of people and two of animals, and the bundled run on them."""
    tmp = tmp_path_factory.mktemp("people")
    cams = tmp / "cams"
    for rel, name in {**PEOPLE, **OTHERS}.items():
        (cams / name).mkdir(parents=True)
        shutil.copy2(real / rel, cams / name / Path(rel).name)
    bundled = patou.run([cams], tmp / "bundled", log=lambda m: None)
    return tmp, cams, {r.rel: r for r in bundled.records}


@pytest.fixture(scope="module")
def speciesnet_file(photos):
    """What SpeciesNet's run_model writes (README layout), with the bundled detector's boxes: those
    of a photo of a person as `human` boxes (category 2; the walker's two boxes are both him), the
    others as animals."""
    tmp, cams, by_rel = photos
    preds = []
    for rel, r in sorted(by_rel.items()):
        person = rel.split("/")[0] in PEOPLE.values()
        dets = sorted((d for d in r.detections if d.conf >= 0.2), key=lambda d: -d.conf)
        out = [{"category": "2" if person else "1", "label": "human" if person else "animal",
                "conf": round(d.conf, 4), "bbox": [round(v, 4) for v in d.bbox]} for d in dets]
        preds.append({"filepath": f"/mnt/sd/{rel}", "model_version": "4.0.1a", "detections": out,
                      "prediction": HUMAN if person else DOG, "prediction_score": 0.9 if person else 0.8,
                      "prediction_source": "classifier"})
    f = tmp / "speciesnet.json"
    f.write_text(json.dumps({"predictions": preds}))
    return f


def test_speciesnet_boxes_labels_and_blurred_copies(photos, speciesnet_file, tmp_path):
    tmp, cams, by_rel = photos
    before = {p: _sha(p) for p in cams.rglob("*.jpg")}
    sort_dir = tmp_path / "sorted"
    res = patou.run([cams], tmp_path / "out", detections=speciesnet_file, sort="copy", sort_dir=sort_dir,
                    blur_humans=True, log=lambda m: None)
    rows = _rows(res.out / "predictions.csv")
    # SpeciesNet's boxes were used (its person boxes decided as `human`), its own label kept for comparison
    for rel, r in by_rel.items():
        assert rows[rel]["speciesnet_label"] == ("human" if rel.split("/")[0] in PEOPLE.values() else "domestic dog")
    people = [rel for rel in rows if rel.split("/")[0] in PEOPLE.values()]
    for rel in people:  # decided without the classifier, at the file's confidence; every person box counted
        conf = float(rows[rel]["max_detection_conf"])
        if conf >= 0.5:
            assert rows[rel]["label"] == "human" and rows[rel]["count"] == rows[rel]["detections"], rows[rel]
        else:  # the walker at 0.49: `undefined`, and his copy is blurred all the same (below)
            assert rows[rel]["label"] == "undefined" and rows[rel]["count"] == "", rows[rel]
    assert {rows[rel]["label"] for rel in people} == {"human", "undefined"}
    info = json.loads((res.out / "run.json").read_text())
    assert info["models"]["detections"]["format"] == "speciesnet" and info["options"]["blur_humans"] is True
    md = json.loads((res.out / "megadetector.json").read_text())
    assert md["info"]["detector"] == "SpeciesNet 4.0.1a"
    assert res.counts["sort"]["done"] == 4 and res.counts["sort"]["errors"] == 0
    assert {p: _sha(p) for p in cams.rglob("*.jpg")} == before  # the originals are only read

    for rel in people:  # the copies of people: blurred where the person is, the rest the original's
        r = next(x for x in res.records if x.rel == rel)
        copy = sort_dir / r.event_label / rel
        with Image.open(r.path) as a_im, Image.open(copy) as b_im:
            a_up, b_up = ImageOps.exif_transpose(a_im), ImageOps.exif_transpose(b_im)
            a, b = np.asarray(a_up.convert("RGB")), np.asarray(b_up.convert("RGB"))
            h, w = a.shape[:2]
            outside = np.ones((h, w), bool)
            for person in (d for d in r.detections if d.category == "human" and d.conf >= 0.2):
                x, y, bw, bh = person.bbox
                px = (max(0, int((x - MARGIN * bw) * w)), max(0, int((y - MARGIN * bh) * h)),
                      min(w, int((x + bw + MARGIN * bw) * w)), min(h, int((y + bh + MARGIN * bh) * h)))
                if not any(o is not person and o.category == "human" and o.conf >= 0.2 and _inside(o.bbox, person.bbox)
                           for o in r.detections):
                    assert high_frequency_energy(b_up, px) < 0.05 * high_frequency_energy(a_up, px), (rel, person)
                outside[max(0, px[1] - 32):px[3] + 32, max(0, px[0] - 32):px[2] + 32] = False
            assert np.array_equal(a[outside], b[outside])
            assert not np.array_equal(a[~outside], b[~outside])
    for rel in rows:
        if rel not in people:
            r = next(x for x in res.records if x.rel == rel)
            assert _sha(sort_dir / r.event_label / rel) == before[r.path]  # animals: a plain copy

    # a second run finds its own blurred copies in place (blurring is deterministic)
    again = patou.run([cams], tmp_path / "out2", detections=speciesnet_file, sort="copy", sort_dir=sort_dir,
                      blur_humans=True, log=lambda m: None)
    assert (again.counts["sort"]["done"], again.counts["sort"]["skipped"], again.counts["sort"]["clashes"]) == (0, 4, 0)


def test_blur_is_refused_with_move_and_link_in_one_line(photos, tmp_path):
    _, cams, _ = photos
    runner = CliRunner()
    for mode in ("move", "link"):
        r = runner.invoke(app, ["run", str(cams), "--out", str(tmp_path / mode), "--sort", mode,
                                "--sort-dir", str(tmp_path / "s"), "--blur-humans"])
        assert r.exit_code != 0 and "--blur-humans works with --sort copy only" in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
        assert not (tmp_path / "s").exists()
    r = runner.invoke(app, ["run", str(cams), "--out", str(tmp_path / "x"), "--blur-humans"])
    assert r.exit_code != 0 and "--blur-humans needs --sort copy" in r.output


def test_per_class_thresholds_decide_and_are_recorded(photos, tmp_path):
    tmp, cams, by_rel = photos
    dog = next(r for r in by_rel.values() if r.rel.startswith("dog/"))
    assert dog.label == "dog" and dog.score < 0.99
    res = patou.run([cams], tmp_path / "out", threshold="dog=0.99,0.5", log=lambda m: None)
    got = {r.rel: r for r in res.records}
    assert got[dog.rel].label == "undefined" and got[dog.rel].count is None
    for rel, r in by_rel.items():  # the other classes keep the default 0.5
        if r.label not in ("dog", None):
            assert got[rel].label == r.label
    info = json.loads((res.out / "run.json").read_text())
    assert info["options"]["threshold"] == "dog=0.99,0.5"
    assert load_run(res.out).info["options"]["threshold"] == "dog=0.99,0.5"
    md = json.loads((res.out / "megadetector.json").read_text())
    assert md["info"]["classifier_metadata"]["class_thresholds"] == {"dog": 0.99}
    r = CliRunner().invoke(app, ["run", str(cams), "--out", str(tmp_path / "bad"), "--threshold", "lynx=0.2,0.5"])
    assert r.exit_code != 0 and "lynx not a label of the model" in r.output and "Traceback" not in r.output


def test_a_format_1_folder_is_read_with_its_counts_made_from_its_boxes(photos, tmp_path):
    tmp, _, _ = photos
    old = tmp_path / "old"
    shutil.copytree(tmp / "bundled", old)
    new = load_run(old)
    info = json.loads((old / "run.json").read_text())
    info["results_version"] = 1
    (old / "run.json").write_text(json.dumps(info))
    lines = [json.loads(x) for x in (old / "records.jsonl").read_text().splitlines()]
    for d in lines:
        for k in ("count", "event_count", "source_label", "source_score"):
            d.pop(k, None)
    (old / "records.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines))
    back = load_run(old)
    assert [(r.rel, r.count, r.event_count) for r in back.records] == [(r.rel, r.count, r.event_count) for r in new.records]
    assert any(r.count for r in back.records)
    info["results_version"] = 9
    (old / "run.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="reads formats 1, 2"):
        load_run(old)
