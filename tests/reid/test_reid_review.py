"""`patou run --reid-gallery`: candidates beside the run, shown and confirmed in the review app."""
from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from patou.cli import app as cli
from patou.reid import runs as reid_runs
from patou.web import create_app
from patou.web.runs import run_id

TOKEN = "reid-test-token-" + "y" * 24


def _photos(real: Path, label: str, n: int) -> list[Path]:
    with open(real / "LABELS.csv", newline="") as f:
        return [real / r["path"] for r in csv.DictReader(f) if r["label_norm"] == label][:n]


@pytest.fixture(scope="module")
def reid_run(real, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reidrun")
    bears, foxes = _photos(real, "bear", 3), _photos(real, "fox", 2)
    gallery = tmp / "known"
    for ind, files in {"bear_a": bears[:1], "bear_b": bears[1:2], "fox_a": foxes[:1]}.items():
        (gallery / ind).mkdir(parents=True)
        for p in files:
            (gallery / ind / p.name).symlink_to(p)
    photos = tmp / "photos"
    photos.mkdir()
    for p in [bears[0], bears[2], foxes[1]]:  # bears[0] is in the gallery: it must find itself
        (photos / p.name).symlink_to(p)
    out = tmp / "out"
    r = CliRunner().invoke(cli, ["run", str(photos), "--out", str(out), "--quiet", "--reid-gallery", str(gallery),
                                 "--threads", "2"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    app = create_app([out], tmp / "runs", token=TOKEN)
    client = TestClient(app, base_url="http://127.0.0.1", cookies={"patou_token": TOKEN})
    anon = TestClient(app, base_url="http://127.0.0.1")
    return dict(tmp=tmp, out=out, gallery=gallery, photos=photos, bear=bears[0], client=client, anon=anon,
                rid=run_id(out))


def test_run_writes_candidates_with_the_run_keys(reid_run):
    cands = reid_runs.load_candidates(reid_run["out"])
    assert cands, "no image got candidates"
    own = cands[(str(reid_run["photos"]), reid_run["bear"].name)]
    assert own[0]["individual_id"] == "bear_a" and float(own[0]["score"]) == pytest.approx(1.0, abs=1e-3)
    for rows in cands.values():
        assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
        assert len({r["individual_id"] for r in rows}) == len(rows) <= 3
    info = json.loads((reid_run["out"] / reid_runs.INFO).read_text())
    assert info["individuals"] == 3 and info["new_individual_threshold"] is None
    # the run's own outputs are untouched by re-identification
    assert (reid_run["out"] / "predictions.csv").is_file() and (reid_run["out"] / "records.jsonl").is_file()


def test_review_page_shows_candidates_and_confirms(reid_run):
    c, rid = reid_run["client"], reid_run["rid"]
    run = json.loads(c.get(f"/api/runs/{rid}").text)
    event = run["events"][0]["event_id"]
    page = c.get(f"/runs/{rid}/events/{event}")
    assert page.status_code == 200 and "Who is this?" in page.text
    url = f"/runs/{rid}/reid/0/{reid_run['bear'].name}"
    page = c.get(url)
    assert page.status_code == 200
    assert "bear_a" in page.text and "not confirmed yet" in page.text
    thumb = c.get(f"/runs/{rid}/reid-gallery/bear_a/{reid_run['bear'].name}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert c.get(f"/runs/{rid}/reid-gallery/bear_a/..%2f..%2fout/run.json").status_code in (400, 403, 404)
    assert c.get(f"/runs/{rid}/reid/0/nothing.jpg").status_code == 404
    assert reid_run["anon"].get(url).status_code == 401  # the app's token covers the reid pages too
    assert reid_run["anon"].get(f"/runs/{rid}/reid-gallery/bear_a/{reid_run['bear'].name}").status_code == 401

    r = c.post(f"/runs/{rid}/reid/confirm", data={"root": str(reid_run["photos"]), "file": reid_run["bear"].name,
                                                   "individual_id": "bear_a", "verified_by": "tester"},
               follow_redirects=False)
    assert r.status_code == 303
    done = reid_runs.load_confirmations(reid_run["out"])
    k = (str(reid_run["photos"]), reid_run["bear"].name)
    assert done[k]["individual_id"] == "bear_a" and done[k]["verified_by"] == "tester"
    assert done[k]["gallery_file"].endswith(reid_run["bear"].name)
    assert "confirmed: <strong>bear_a" in c.get(url).text
    # a photo the run did not rank cannot be confirmed
    assert c.post(f"/runs/{rid}/reid/confirm", data={"root": "/x", "file": "y.jpg", "individual_id": "bear_a"}
                  ).status_code == 404

    r = c.post(f"/runs/{rid}/export/reid-confirmed")
    assert r.status_code == 200 and r.json()["rows"] == 1
    with open(reid_run["out"] / reid_runs.EXPORT, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["individual_id"] == "bear_a" and Path(rows[0]["path"]).name == reid_run["bear"].name


def test_export_adds_confirmed_photos_to_a_known_dir_without_overwriting(reid_run, tmp_path):
    reid_runs.confirm(reid_run["out"], str(reid_run["photos"]), reid_run["bear"].name, "bear_a", "t")
    known = tmp_path / "known"
    (known / "bear_a").mkdir(parents=True)
    mine = known / "bear_a" / reid_run["bear"].name
    mine.write_bytes(b"a user's own file")
    said = []
    path, n = reid_runs.export_confirmed(reid_run["out"], known, log=said.append)
    assert n >= 1 and mine.read_bytes() == b"a user's own file"
    assert any("not overwritten" in s for s in said)
    reid_runs.confirm(reid_run["out"], str(reid_run["photos"]), reid_run["bear"].name, None)
    assert (str(reid_run["photos"]), reid_run["bear"].name) not in reid_runs.load_confirmations(reid_run["out"])
