"""`patou report`: camera-health rules on a synthetic season (each problem found by its own rule
and no other), RAI / occupancy / MaxN by hand, corrections over the model's labels, the page in
Chromium with every figure, the same page behind the review app's token, and a real run."""
from __future__ import annotations

import csv
import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

import patou
from patou.cli import app as cli
from patou.corrections import save_corrections
from patou.record import Detection, ImageRecord
from patou.report import Rules, build, write_report
from patou.report.count import animals_in
from report_season import START, Shot, make_results, season_plan

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")

# each camera of season_plan() and the rules that must flag it, no more, no fewer
EXPECTED = {
    "normal-a": set(), "normal-b": set(),
    "dies-day40": {"silent-end"},
    "gap-30": {"gap"},
    "clock-2000": {"clock-early", "clock-backwards"},  # the reset: dates in 2000, and time going back
    "burst-500": {"burst"},
    "no-night": {"no-night"},
    "clock-future": {"clock-future"},
}


@pytest.fixture(scope="module")
def season(tmp_path_factory) -> Path:
    return make_results(season_plan(), tmp_path_factory.mktemp("season"))


@pytest.fixture(scope="module")
def real_run(real, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report-real") / "results"
    patou.run([real], out, log=lambda m: None)
    return out


def rules_by_site(rep) -> dict[str, set[str]]:
    return {h.site.id: {f.rule for f in h.findings} for h in rep.health.sites}


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_each_problem_is_found_by_its_rule_and_no_other(season):
    rep = build(season)
    assert rules_by_site(rep) == EXPECTED
    found = {(f.site, f.rule): f for f in rep.health.findings}
    gap = found["gap-30", "gap"]
    assert (gap.start, gap.end) == ((START + timedelta(days=30)).date(), (START + timedelta(days=59)).date())
    silent = found["dies-day40", "silent-end"]
    assert silent.start == (START + timedelta(days=40)).date()  # the day after the last photo
    assert "50 days before the season's end" in silent.summary
    assert found["burst-500", "burst"].summary.startswith("5 day(s) with 300+ photos")
    assert found["clock-2000", "clock-early"].start.year == 2000
    assert found["clock-2000", "clock-backwards"].photos == 1  # one reset: one step back
    by_id = {h.site.id: h for h in rep.health.sites}
    # a wrong clock is not judged on times; its impossible dates give no camera-days
    assert by_id["clock-2000"].skipped == ["gap", "silent-end", "no-night"]
    assert by_id["clock-2000"].camera_days == 45 and by_id["clock-future"].camera_days == 0
    assert by_id["dies-day40"].camera_days == 40 and by_id["normal-a"].camera_days == 90

    # the rules' parameters move the flags, and only those
    loose = build(season, rules=Rules(gap_days=31, burst_photos=600))
    assert rules_by_site(loose) == {**EXPECTED, "gap-30": set(), "burst-500": set()}


@pytest.mark.slow
def test_deployments_csv_sets_camera_days_and_flags_photos_outside_it(season, tmp_path):
    deployments = tmp_path / "deployments.csv"
    deployments.write_text("deploymentID,deploymentStart,deploymentEnd\n"
                           "normal-a,2024-05-06T00:00:00,2024-07-29\n"  # set up 5 days after its first photo
                           "dies-day40,2024-05-01,2024-07-29\n"
                           "nowhere,2024-05-01,2024-07-29\n")  # matches no site: a warning, not an error
    rep = build(season, deployments)
    assert rules_by_site(rep) == {**EXPECTED, "normal-a": {"outside-deployment"}}
    by_id = {h.site.id: h for h in rep.health.sites}
    assert by_id["normal-a"].camera_days == 85 and by_id["normal-a"].effort_from == "deployments CSV"
    assert "before the deployment's end (2024-07-29)" in by_id["dies-day40"].findings[0].summary
    assert by_id["dies-day40"].camera_days == 90  # the effort the team set out: the silence is flagged, not taken off
    outside = by_id["normal-a"].findings[0]
    assert outside.end == (START + timedelta(days=4)).date() and outside.photos > 0
    assert any("nowhere" in w for w in rep.season.warnings)


def small_plan() -> dict[str, list[Shot]]:
    """Three sites whose numbers are worked out by hand in the test below."""
    day = lambda d, h=12: START + timedelta(days=d, hours=h)  # noqa: E731
    return {
        # camera-days 10 (day 0 .. day 9); 3 fox events, one photo with 2 foxes and a bird; 1 deer event
        "a": [Shot(day(0), "fox"), Shot(day(3), "fox", animals=2, others=1), Shot(day(3) + timedelta(seconds=3), "fox"),
              Shot(day(9, 22), "fox"), Shot(day(5), "deer")],
        # camera-days 5 (day 0 .. day 4); 2 deer events
        "b": [Shot(day(0, 3), "deer"), Shot(day(4, 23), "deer", animals=3)],
        # camera-days 2 (day 0 .. day 1); nothing but wind
        "c": [Shot(day(0)), Shot(day(1))],
    }


def test_rai_occupancy_and_maxn_equal_the_hand_count(tmp_path):
    out = make_results(small_plan(), tmp_path)
    written = write_report(out, tmp_path / "report.html", log=lambda m: None)
    rep = written.report
    assert rep.health.camera_days == 10 + 5 + 2
    species = {r["species"]: r for r in read_csv(written.csv_dir / "species.csv")}
    assert set(species) == {"fox", "deer"}
    fox, deer = species["fox"], species["deer"]
    assert (int(fox["events"]), int(fox["max_n"]), fox["sites"]) == (3, 2, "1")
    assert float(fox["rai"]) == round(100 * 3 / 17, 2) and float(fox["occupancy"]) == round(1 / 3, 3)
    assert (int(deer["events"]), int(deer["max_n"])) == (3, 3)
    assert float(deer["rai"]) == round(100 * 3 / 17, 2) and float(deer["occupancy"]) == round(2 / 3, 3)
    assert deer["site_list"] == "a; b"
    cells = {(r["species"], r["site"]): r for r in read_csv(written.csv_dir / "species_by_site.csv")}
    assert float(cells["fox", "a"]["rai"]) == 30.0 and int(cells["fox", "a"]["max_n"]) == 2
    assert float(cells["deer", "a"]["rai"]) == 10.0 and float(cells["deer", "b"]["rai"]) == 40.0
    assert int(cells["deer", "b"]["max_n"]) == 3
    headline = {r["measure"]: r["value"] for r in read_csv(written.csv_dir / "headline.csv")}
    assert headline["camera-days"] == "17" and headline["sites"] == "3" and headline["events"] == "8"
    night = {r["species"]: r for r in read_csv(written.csv_dir / "activity.csv")}
    assert night["fox"]["night_events"] == "1" and night["deer"]["night_events"] == "2"  # 22:00; 03:00 and 23:00
    assert rules_by_site(rep) == {"a": set(), "b": set(), "c": set()}


def test_corrected_labels_are_used_over_the_model(tmp_path):
    out = make_results(small_plan(), tmp_path)
    before = build(out)
    assert "nobody has corrected" in write_report(out, tmp_path / "r0.html", log=lambda m: None).html.read_text()
    b = [p.record for p in before.season.photos if p.site == "b"]
    late = max(b, key=lambda r: r.timestamp)  # the 3-deer event was a wolf pack, a reviewer says
    save_corrections(out, [(late.root, late.rel, "wolf")], verified_by="ana")
    written = write_report(out, tmp_path / "r1.html", log=lambda m: None)
    after = {r["species"]: r for r in read_csv(written.csv_dir / "species.csv")}
    assert int(after["deer"]["events"]) == 2 and int(after["wolf"]["events"]) == 1
    assert int(after["wolf"]["max_n"]) == 3  # the boxes of a photo a person named count as that species
    obs = [r for r in read_csv(written.csv_dir / "observations.csv") if r["label"] == "wolf"]
    assert [(r["site"], r["label_source"]) for r in obs] == [("b", "human")]
    html = written.html.read_text()
    assert "a person's label" in html and "1 photo(s) in 1 event(s) (wolf)" in html
    headline = {r["measure"]: r for r in read_csv(written.csv_dir / "headline.csv")}
    assert headline["share of photos reviewed"]["value"] == str(round(1 / 9, 3))


@pytest.mark.slow
def test_unsure_events_and_the_review_queue(season):
    rep = build(season)
    undefined = [o for o in rep.season.observations if o.label == "undefined"]
    low = [o for o in rep.season.observations if o.is_species and o.score < 0.75]
    assert undefined and low
    assert sum(u.undefined for u in rep.unsure) == len(undefined)
    assert sum(u.low_score for u in rep.unsure) == len(low)
    assert {u.species for u in rep.unsure} <= {"fox", "deer", "wild_boar", "badger", "bird"}


def test_animals_in_one_photo():
    fox = {"fox": 0.9, "bird": 0.1}
    bird = {"fox": 0.2, "bird": 0.8}
    r = ImageRecord(Path("/x/a.jpg"), Path("/x"), detections=[
        Detection((0, 0, 0.1, 0.1), 0.9, scores=fox), Detection((0.2, 0, 0.1, 0.1), 0.5, scores=fox),
        Detection((0.4, 0, 0.1, 0.1), 0.7, scores=bird), Detection((0.6, 0, 0.1, 0.1), 0.1, scores=fox)])
    r.scores = fox
    assert animals_in(r, 0.2) == 2  # the winning class's boxes at or above the threshold
    assert animals_in(r, 0.2, "bird") == 1
    assert animals_in(r, 0.2, "wolf") == 3  # a label no box has: every kept box
    video = ImageRecord(Path("/x/v.mp4"), Path("/x"), detections=[
        Detection((0, 0, 0.1, 0.1), 0.9, scores=fox, frame_number=n) for n in (0, 10, 10, 20)])
    assert animals_in(video, 0.2, "fox") == 2  # the busiest frame, not the sum over frames


@pytest.mark.slow
def test_cli_writes_the_page_and_refuses_to_overwrite_a_foreign_file(season, tmp_path):
    out = tmp_path / "season.html"
    res = CliRunner().invoke(cli, ["report", str(season), "--out", str(out), "--gap-days", "10"])
    assert res.exit_code == 0, res.output
    assert "6 site(s) flagged" in res.output
    assert {p.name for p in (tmp_path / "season-data").iterdir()} >= {"species.csv", "health.csv", "sites.csv",
                                                                     "activity.csv", "unsure.csv", "observations.csv"}
    again = CliRunner().invoke(cli, ["report", str(season), "--out", str(out)])  # its own page: replaced
    assert again.exit_code == 0, again.output
    notes = tmp_path / "notes.html"
    notes.write_text("<p>my field notes</p>")
    res = CliRunner().invoke(cli, ["report", str(season), "--out", str(notes)])
    assert res.exit_code == 2 and "not a page patou report wrote" in res.output
    assert notes.read_text() == "<p>my field notes</p>"
    mine = tmp_path / "mine-data"  # a folder of the user's own where the CSV would go
    mine.mkdir()
    (mine / "species.csv").write_text("my,own\n")
    res = CliRunner().invoke(cli, ["report", str(season), "--out", str(tmp_path / "mine.html")])
    assert res.exit_code == 2 and "not a folder patou report made" in res.output
    assert (mine / "species.csv").read_text() == "my,own\n" and not (tmp_path / "mine.html").exists()
    res = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert res.exit_code == 2 and "not a patou results folder" in res.output and "Traceback" not in res.output


def _open_in_chromium(html: Path, shot: Path) -> dict:
    """Open the page from disk, offline: which figures drew, and every URL it asked for."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium) for the browser test")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install -e '.[dev]')")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url))
        page.goto(html.as_uri())
        page.wait_for_function("Array.from(document.images).every(i => i.complete)")
        figs = page.evaluate("Object.fromEntries(Array.from(document.querySelectorAll('img.figure'))"
                             ".map(i => [i.id, i.naturalWidth]))")
        text = page.inner_text("body")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        pdf = page.pdf()  # it prints
        browser.close()
    return dict(figs=figs, asked=asked, text=text, pdf=pdf)


@pytest.mark.slow
@pytest.mark.browser
def test_the_page_opens_in_chromium_with_every_figure(season, tmp_path):
    written = write_report(season, tmp_path / "report.html", log=lambda m: None)
    seen = _open_in_chromium(written.html, ARTIFACTS / "report-synthetic.png")
    assert set(seen["figs"]) == {"fig-timeline", "fig-species", "fig-rai", "fig-activity", "fig-unsure"}
    assert all(w > 300 for w in seen["figs"].values()), seen["figs"]
    assert all(u.startswith(("file:", "data:")) for u in seen["asked"]), seen["asked"]  # nothing from the network
    assert "6 of 8 site(s) flagged" in seen["text"] and "no photo for 30 days" in seen["text"]
    assert f"patou serve {season.resolve()}" in seen["text"] and "?label=undefined&verified=no" in seen["text"]
    assert seen["pdf"].startswith(b"%PDF") and len(seen["pdf"]) > 50_000


@pytest.mark.slow
def test_served_report_is_the_same_page_behind_the_token(season):
    from fastapi.testclient import TestClient

    from patou.web import create_app
    from patou.web.runs import run_id

    app = create_app([season], season.parent / "runs")
    client = TestClient(app, base_url="http://127.0.0.1")
    rid = run_id(season)
    assert client.get(f"/runs/{rid}/report").status_code == 401  # no token, no page
    auth = {"Authorization": f"token {app.state.token}"}
    assert client.get(f"/runs/{rid}/report", headers={"Authorization": "token nope"}).status_code == 403
    page = client.get(f"/runs/{rid}/report", headers=auth)
    assert page.status_code == 200 and 'name="generator" content="patou report' in page.text
    assert page.text.count('class="figure"') == 5 and f'href="/runs/{rid}/report/species.csv"' in page.text
    assert f'href="/runs/{rid}?label=undefined&amp;verified=no"' in page.text  # the review queue, one click away
    served = client.get(f"/runs/{rid}/report/species.csv", headers=auth)
    assert served.status_code == 200 and served.text.splitlines()[0].startswith("species,events,max_n")
    written = write_report(season, season.parent / "written.html", log=lambda m: None)
    assert served.text == (written.csv_dir / "species.csv").read_text()
    assert client.get(f"/runs/{rid}/report/nothing.csv", headers=auth).status_code == 404
    assert client.get(f"/runs/{rid}/report/..%2Frun.json", headers=auth).status_code == 400
    assert f'href="/runs/{rid}/report"' in client.get(f"/runs/{rid}", headers=auth).text


# ------------------------------------------------------------------ the real photos
@pytest.mark.slow
def test_real_photos_health_and_counts(real_run, tmp_path):
    written = write_report(real_run, tmp_path / "real.html", log=lambda m: None)
    rep = written.report
    info = json.loads((real_run / "run.json").read_text())
    assert len(rep.season.photos) + rep.season.failures == info["counts"]["images"] == 134
    assert rep.season.events == info["counts"]["events"]
    flags = rules_by_site(rep)
    # camtrapR's Borneo sample is a real 2009 survey: the 2010 bound flags it (--earliest moves it)
    borneo = {s for s in flags if s.startswith("camtrapR-borneo-thumbs/")}
    assert len(borneo) == 12 and all(flags[s] == {"clock-early"} for s in borneo)
    # SpeciesNet's and animl's test folders mix photos of many cameras and years
    assert flags["speciesnet-cameratrapai/test_data"] == {"clock-early", "clock-backwards"}
    assert flags["animl-py-southwest/examples/Southwest"] == {"clock-backwards"}
    assert flags["camtrapdp-mica-heron/tests/testthat/fixtures/sample_camtrap_dp_data/media"] == set()
    assert flags["zamba-ena24-small/tests/assets/images/ena24_small"] == set()
    # --earliest 2005-01-01: the survey's clocks are right, and its times are judged (its species
    # folders hold one species' photos each, so some show gaps: read them as a station, --site-depth)
    y2005 = build(real_run, rules=Rules(earliest=datetime(2005, 1, 1).date()))
    assert not any(f.rule.startswith("clock") for f in y2005.health.findings if f.site in borneo)
    assert all(h.camera_days > 0 for h in y2005.health.sites if h.site.id in borneo)
    # every event counted once per label, and the species table adds up to the observations
    obs = read_csv(written.csv_dir / "observations.csv")
    species = read_csv(written.csv_dir / "species.csv")
    assert sum(int(r["events"]) for r in species) == sum(r["label"] not in ("empty", "undefined") for r in obs)
    seen = _open_in_chromium(written.html, ARTIFACTS / "report-real.png")
    # no species has 10 timed events at a site with a right clock: no activity plot, and the page says so
    assert set(seen["figs"]) == {"fig-timeline", "fig-species", "fig-rai", "fig-unsure"}
    assert all(w > 300 for w in seen["figs"].values())
    assert "No species has 10 or more timed events" in seen["text"]


@pytest.mark.slow
def test_real_run_with_a_correction_uses_it(real_run, tmp_path):
    copy = tmp_path / "results"
    copy.mkdir()
    for name in ("run.json", "records.jsonl"):
        shutil.copy(real_run / name, copy / name)
    before = build(copy)
    bears = [p for p in before.season.photos if p.label == "bear"]
    assert bears
    save_corrections(copy, [(p.record.root, p.record.rel, "wolf") for p in bears], verified_by="test")
    after = build(copy)
    events = lambda rep, label: sum(o.label == label for o in rep.season.observations)  # noqa: E731
    assert events(after, "bear") < events(before, "bear")
    assert events(after, "wolf") > events(before, "wolf")
    corrected = {p.record.rel for p in bears}
    touched = [o for o in after.season.observations if any(p.record.rel in corrected for p in o.photos)]
    assert touched and all(o.label == "wolf" and o.human for o in touched)
