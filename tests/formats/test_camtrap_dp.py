"""Camtrap DP export on a real run: two site folders of real photos (bears, a blank, a vehicle,
a person, a wolf), exported, validated offline with frictionless against Camtrap DP 1.0."""
import csv
import json
import os
import shutil
import socket
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

import patou
from patou.cli import app
from patou.formats.camtrap_dp import TAXA, export_camtrap_dp, load_taxa
from patou.formats.camtrap_dp_deployments import TEMPLATE, MissingMetadata, parse_utc_offset
from patou.formats.camtrap_dp_validate import SCHEMA_DIR, report_lines, validate_package
from patou.corrections import save_corrections
from patou.results import load_run

SPECIESNET = "speciesnet-cameratrapai/test_data"
ENA24 = "zamba-ena24-small/tests/assets/images/ena24_small"
ANIML = "animl-py-southwest/examples/Southwest"
HUMAN = "StationB/B012_2021-05-27_human.jpg"
# media inside the package: Camtrap DP's filePath may not leave it (no "..")
OPTIONS = dict(sampling_design="targeted", contributors=["Ana Ruiz <ana@example.org>"], media="link")
OFFICIAL = Path(os.environ.get("PATOU_REAL_DATA", Path(__file__).resolve().parents[3] / "shared/data/camtrap-real")
                ).parent / "camtrap-dp-schemas"  # tdwg/camtrap-dp at tags 1.0, 1.0.1, 1.0.2 (test data)
VERSIONS = ("1.0", "1.0.1", "1.0.2")


def official_schemas(tmp_path, version):
    """A folder with the official table schemas of `version` and the official 1.0 profile (the
    version patou writes; the tables of 1.0.1 and 1.0.2 differ from 1.0 only in missingValues)."""
    if not OFFICIAL.is_dir():
        pytest.skip(f"official Camtrap DP schemas not found at {OFFICIAL}")
    d = tmp_path / f"official-{version}"
    d.mkdir(exist_ok=True)
    shutil.copy(OFFICIAL / "1.0" / "camtrap-dp-profile.json", d)
    for t in ("deployments", "media", "observations"):
        shutil.copy(OFFICIAL / version / f"{t}-table-schema.json", d)
    return d


def export(results, out, *args, **kwargs):
    """export_camtrap_dp, then the package is checked against the official schemas of every version."""
    result = export_camtrap_dp(results, out, *args, **kwargs)
    if OFFICIAL.is_dir():
        for v in VERSIONS:
            report = validate_package(out, official_schemas(out.parent, v))
            assert report.valid, (v, report_lines(report)[:5])
    return result


@pytest.fixture(scope="module")
def run_dir(real, tmp_path_factory):
    """A patou run over copies of real photos in two site folders (never inside the repo)."""
    tmp = tmp_path_factory.mktemp("camtrap")
    a, b = tmp / "photos" / "StationA", tmp / "photos" / "StationB"
    a.mkdir(parents=True)
    b.mkdir()
    for name in ("blank.jpg", "vehicle.jpg"):
        shutil.copy(real / SPECIESNET / name, a / name)
    shutil.copy(real / ANIML / "B012_2021-05-27_human.jpg", b)
    shutil.copy(real / ANIML / "IMAG0031_wolf.JPG", b)
    # The ENA24 bears carry no capture time, which Camtrap DP requires: the copies get one
    # (a burst 4-5 s apart, so one event).
    for n, t in (("8831", "10:00:00"), ("9455", "10:00:05"), ("8786", "10:00:09")):
        img = Image.open(real / ENA24 / f"{n}.jpg")
        exif = img.getexif()
        exif[0x0132] = f"2023:06:01 {t}"  # DateTime
        img.save(a / f"bear{n}.jpg", exif=exif, quality=95)
    # one more copy without a time: it must be left out with a warning, not invented
    shutil.copy(real / ENA24 / "4383.jpg", a / "fox_no_time.jpg")
    out = tmp / "results"
    patou.run([tmp / "photos"], out, log=lambda m: None)
    return out


@pytest.fixture
def offline(monkeypatch):
    """Validation must not fetch the profile or schemas: any connection attempt fails the test."""
    def refuse(self, address, *a, **k):
        raise AssertionError(f"network access attempted: {address}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: refuse(None, host))


def _deployments_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, ["deploymentID", "latitude", "longitude", "utcOffset", "cameraModel", "featureType"])
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture
def deployments(tmp_path):
    return _deployments_csv(tmp_path / "my-deployments.csv", [
        {"deploymentID": "StationA", "latitude": "42.7913", "longitude": "0.7312", "utcOffset": "+01:00",
         "cameraModel": "Reconyx-HC600", "featureType": "trailGame"},
        {"deploymentID": "StationB", "latitude": "42.8004", "longitude": "0.7519", "utcOffset": "+01:00"},
    ])


def _read(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_missing_coordinates_are_asked_for_never_invented(run_dir, tmp_path):
    out = tmp_path / "pkg"
    with pytest.raises(MissingMetadata) as e:
        export_camtrap_dp(run_dir, out, **OPTIONS, utc_offset="+01:00", log=lambda m: None)
    msg = str(e.value)
    assert "latitude and longitude" in msg and "StationA" in msg and "StationB" in msg
    assert "--deployments" in msg and str(out / TEMPLATE) in msg
    assert not (out / "datapackage.json").exists()
    template = _read(out / TEMPLATE)
    assert [r["deploymentID"] for r in template] == ["StationA", "StationB"]
    assert all(r["latitude"] == "" and r["longitude"] == "" for r in template)
    assert template[0]["deploymentStart"].startswith("2015-11-30T") and template[0]["utcOffset"] == "+01:00"

    # One site given, the other still missing: only that one is named; a template the user
    # may be filling in is not overwritten.
    (out / TEMPLATE).write_text("deploymentID,latitude\nStationA,42.1\n", encoding="utf-8")
    partial = _deployments_csv(tmp_path / "partial.csv", [
        {"deploymentID": "StationA", "latitude": "42.7913", "longitude": "0.7312", "utcOffset": "+01:00"}])
    with pytest.raises(MissingMetadata) as e:
        export_camtrap_dp(run_dir, out, partial, **OPTIONS, log=lambda m: None)
    assert "deployment(s): StationB" in str(e.value) and "not overwritten" in str(e.value)
    assert (out / TEMPLATE).read_text(encoding="utf-8") == "deploymentID,latitude\nStationA,42.1\n"

    # Times without an offset, no sampling design, no contact: each one asked for.
    with pytest.raises(MissingMetadata) as e:
        export_camtrap_dp(run_dir, tmp_path / "pkg2", partial, log=lambda m: None)
    for needed in ("offset from UTC", "--sampling-design", "--contributor"):
        assert needed in str(e.value)


def test_export_validates_offline_and_a_broken_package_does_not(run_dir, deployments, tmp_path, offline):
    out = tmp_path / "pkg"
    warnings = []
    result = export(run_dir, out, deployments, **OPTIONS, log=warnings.append)
    assert result.valid is True and result.problems == []
    report = validate_package(out)
    assert report.valid, report_lines(report)
    assert any("fox_no_time.jpg" in w and "left out" in w for w in warnings)

    package = json.loads((out / "datapackage.json").read_text(encoding="utf-8"))
    assert package["profile"] == "https://raw.githubusercontent.com/tdwg/camtrap-dp/1.0/camtrap-dp-profile.json"
    assert {t["scientificName"]: t.get("taxonRank") for t in package["taxonomic"]}["Ursidae"] == "family"
    assert package["temporal"] == {"start": "2013-03-31", "end": "2023-06-01"}
    media = _read(out / "media.csv")
    assert len(media) == 7 and all(m["timestamp"].endswith("+01:00") for m in media)
    assert (out / media[0]["filePath"]).resolve().is_file()  # relative to the package
    deps = _read(out / "deployments.csv")
    assert [(d["deploymentID"], d["latitude"], d["cameraModel"]) for d in deps] == [
        ("StationA", "42.7913", "Reconyx-HC600"), ("StationB", "42.8004", "")]

    # The check can fail: a wrong latitude, a dangling foreign key, a missing required property.
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "deployments.csv").write_text(
        (broken / "deployments.csv").read_text(encoding="utf-8").replace("42.7913", "142.7913"), encoding="utf-8")
    obs = (broken / "observations.csv").read_text(encoding="utf-8")
    (broken / "observations.csv").write_text(obs.replace(",StationB,", ",StationZ,", 1), encoding="utf-8")
    report = validate_package(broken)
    lines = report_lines(report)
    assert not report.valid
    assert any("latitude" in line and "maximum" in line for line in lines)
    assert any("StationZ" in line for line in lines)
    del package["taxonomic"]
    (broken / "datapackage.json").write_text(json.dumps(package), encoding="utf-8")
    assert any("taxonomic" in line for line in report_lines(validate_package(broken)))


def test_observations_follow_the_run_and_the_taxonomy(run_dir, deployments, tmp_path):
    out = tmp_path / "pkg"
    export(run_dir, out, deployments, **OPTIONS, log=lambda m: None)
    run, tax = load_run(run_dir), load_taxa()
    event_label = {r.event_id: r.event_label for r in run.records if r.event_id}
    rows = _read(out / "observations.csv")
    events = [o for o in rows if o["observationLevel"] == "event"]
    assert len(events) == len({r.event_id for r in run.records if r.timestamp and r.event_id})
    for o in events:
        label = event_label[o["eventID"]]
        assert o["observationType"] == tax[label]["observationType"]
        assert o["scientificName"] == tax[label]["scientificName"]
        assert o["classificationMethod"] == "machine"
        assert "efficientnet_lite0_imagenet v1" in o["classifiedBy"] and "patou " in o["classifiedBy"]
        assert o["observationTags"] == f"patouLabel:{label}"
    types = {o["observationType"] for o in events}
    assert {"animal", "blank", "vehicle"} <= types  # the real bears, blank and vehicle photos
    bears = [o for o in events if o["scientificName"] == "Ursidae"]
    assert bears and int(bears[0]["count"]) >= 1 and 0.5 <= float(bears[0]["classificationProbability"]) <= 1
    assert bears[0]["eventStart"] < bears[0]["eventEnd"]  # a 9-second burst
    blank = next(o for o in events if o["observationType"] == "blank")
    assert blank["scientificName"] == blank["count"] == ""

    media_ids = {m["mediaID"] for m in _read(out / "media.csv")}
    boxes = [o for o in rows if o["observationLevel"] == "media"]
    assert boxes and all(o["mediaID"] in media_ids for o in boxes)
    for o in boxes:
        x, y, w, h = (float(o[k]) for k in ("bboxX", "bboxY", "bboxWidth", "bboxHeight"))
        assert 0 <= x <= 1 and 0 <= y <= 1 and 0 < w <= 1 - x + 1e-9 and 0 < h <= 1 - y + 1e-9


def test_a_saved_correction_becomes_a_human_classification(run_dir, deployments, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(run_dir, results)
    run = load_run(results)
    person = next(r for r in run.records if r.rel == HUMAN)
    assert person.event_label != "human"  # the default model has no person class
    save_corrections(results, [(person.root, HUMAN, "human")], verified_by="Ana Ruiz")

    out = tmp_path / "pkg"
    result = export(results, out, deployments, **{**OPTIONS, "media": None}, media_url="https://example.org/media",
                    data_license="CC0-1.0", media_license="CC-BY-4.0", log=lambda m: None)
    assert result.valid, result.problems
    assert result.counts["human_verified_events"] == 1
    rows = [o for o in _read(out / "observations.csv") if o["eventID"] == person.event_id]
    event = next(o for o in rows if o["observationLevel"] == "event")
    assert event["observationType"] == "human" and event["classificationMethod"] == "human"
    assert event["classifiedBy"] == "Ana Ruiz" and event["classificationTimestamp"].endswith("Z")
    assert event["classificationProbability"] == ""
    media = {m["fileName"]: m for m in _read(out / "media.csv")}
    assert media["B012_2021-05-27_human.jpg"]["filePublic"] == "false"  # people stay private
    assert media["bear8831.jpg"]["filePath"] == "https://example.org/media/StationA/bear8831.jpg"
    assert media["bear8831.jpg"]["filePublic"] == "true"


def test_cli_asks_then_exports(run_dir, deployments, tmp_path):
    runner = CliRunner()
    out = tmp_path / "pkg"
    r = runner.invoke(app, ["export-camtrap-dp", str(run_dir), "--out", str(out)])
    assert r.exit_code == 2 and "latitude and longitude" in r.output and TEMPLATE in r.output
    r = runner.invoke(app, ["export-camtrap-dp", str(run_dir), "--out", str(out), "--deployments", str(deployments),
                            "--media", "copy",
                            "--sampling-design", "targeted", "--contributor", "Ana Ruiz <ana@example.org>"])
    assert r.exit_code == 0, r.output
    assert "valid Camtrap DP 1.0 package" in r.output


def test_shipped_files_and_small_parsers():
    profile = (SCHEMA_DIR / "camtrap-dp-profile.json").read_bytes()
    assert len(profile) == 20241 and b'"pattern": "1\\\\.0"' in profile
    from patou.models.card import ASSETS, ModelCard

    labels = ModelCard.load(ASSETS / "efficientnet_lite0_imagenet.json").labels
    assert set(load_taxa()) == set(labels) | {"empty", "undefined"}  # every label of the bundled model
    assert load_taxa(TAXA)["bear"]["scientificName"] == "Ursidae"
    assert parse_utc_offset("+01:00", "x").utcoffset(None).total_seconds() == 3600
    assert parse_utc_offset("UTC-5", "x").utcoffset(None).total_seconds() == -5 * 3600
    with pytest.raises(ValueError, match="not understood"):
        parse_utc_offset("CET", "--utc-offset")


def test_the_camtrap_dp_example_dataset_validates_against_the_shipped_schemas(real, tmp_path, offline):
    """The table schemas are patou's transcription of Camtrap DP 1.0 (see camtrap_dp_schema/README.md):
    the official example package (MICA sample, 4 deployments, 423 media, 549 observations, written
    for 1.0.2) has the same columns in the same order and validates against them."""
    example = real / "camtrapdp-mica-heron/tests/testthat/fixtures/sample_camtrap_dp_data"
    for table in ("deployments", "media", "observations"):
        with open(example / f"{table}.csv", newline="", encoding="utf-8") as f:
            header = next(csv.reader(f))
        schema = json.loads((SCHEMA_DIR / f"{table}-table-schema.json").read_text(encoding="utf-8"))
        assert header == [fd["name"] for fd in schema["fields"]], table
    for table in ("deployments", "observations"):
        shutil.copy(example / f"{table}.csv", tmp_path)
    # Three exifData cells of the example are two JSON objects glued together, not one object:
    # an upstream data slip that frictionless rightly reports; blank them, keep everything else.
    media = _read(example / "media.csv")
    bad = []
    for n, m in enumerate(media, 2):
        try:
            json.loads(m["exifData"] or "{}")
        except ValueError:
            bad.append(n)
            m["exifData"] = ""
    assert bad == [236, 238, 240]
    with open(tmp_path / "media.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, list(media[0]))
        w.writeheader()
        w.writerows(media)
    descriptor = (example / "datapackage.json").read_text(encoding="utf-8").replace("/camtrap-dp/1.0.2/", "/camtrap-dp/1.0/")
    (tmp_path / "datapackage.json").write_text(descriptor, encoding="utf-8")
    report = validate_package(tmp_path)
    assert report.valid, report_lines(report)[:10]
    rows = {t.name: t.stats["rows"] for t in report.tasks}
    assert (rows["deployments"], rows["media"], rows["observations"]) == (4, 423, 549)


def test_media_stay_inside_the_package_or_are_urls(run_dir, deployments, tmp_path):
    opts = {**OPTIONS, "media": None}
    with pytest.raises(ValueError, match=r"outside the package folder.*--media copy or --media link.*--media-url"):
        export_camtrap_dp(run_dir, tmp_path / "pkg", deployments, **opts, log=lambda m: None)
    with pytest.raises(ValueError, match="not both"):
        export_camtrap_dp(run_dir, tmp_path / "pkg", deployments, **OPTIONS, media_url="https://x.org/m")
    out = tmp_path / "copied"
    export(run_dir, out, deployments, **{**OPTIONS, "media": "copy"}, log=lambda m: None)
    media = _read(out / "media.csv")
    photos = run_dir.parent / "photos"
    for m in media:  # the input tree, inside the package, the same bytes
        assert m["filePath"].startswith("media/Station") and ".." not in m["filePath"]
        assert (out / m["filePath"]).read_bytes() == (photos / m["filePath"][len("media/"):]).read_bytes()
    # a re-export finds its copies in place; a different file under the name is never overwritten
    (out / media[0]["filePath"]).write_bytes(b"not the photo")
    warnings = []
    export(run_dir, out, deployments, **{**OPTIONS, "media": "copy"}, log=warnings.append)
    assert (out / media[0]["filePath"]).read_bytes() == b"not the photo"
    assert any("clash" in w and media[0]["fileName"] in w for w in warnings), warnings


def test_shipped_schemas_equal_the_official_ones_field_by_field(tmp_path):
    """patou's transcribed table schemas against tdwg/camtrap-dp's files of 1.0, 1.0.1 and 1.0.2:
    same fields in the same order, same type, format, constraints (incl. patterns) and unit."""
    for version in VERSIONS:
        official = official_schemas(tmp_path, version)
        for table in ("deployments", "media", "observations"):
            ours = json.loads((SCHEMA_DIR / f"{table}-table-schema.json").read_text(encoding="utf-8"))
            theirs = json.loads((official / f"{table}-table-schema.json").read_text(encoding="utf-8"))
            assert [f["name"] for f in ours["fields"]] == [f["name"] for f in theirs["fields"]], (version, table)
            for a, b in zip(ours["fields"], theirs["fields"]):
                for key in ("type", "format", "constraints", "unit"):
                    assert a.get(key) == b.get(key), (version, table, a["name"], key)
            for key in ("primaryKey", "foreignKeys"):
                assert ours.get(key) == theirs.get(key), (version, table, key)
            if version == "1.0":
                assert ours["missingValues"] == theirs["missingValues"]
    # the profile patou ships is the official 1.0 file, byte for byte
    assert (SCHEMA_DIR / "camtrap-dp-profile.json").read_bytes() == (OFFICIAL / "1.0" / "camtrap-dp-profile.json").read_bytes()


def test_counts_are_the_runs_maxn_or_a_persons_count_and_people_are_blurred(real, run_dir, deployments, tmp_path):
    """Event observations carry the run's MaxN (event_count); a reviewer's own count wins; with
    --media copy --blur-humans the photo of a person is blurred in the package, not in the input."""
    pytest.importorskip("jpeglib")
    import numpy as np

    results = tmp_path / "results"
    shutil.copytree(run_dir, results)
    run = load_run(results)
    person = next(r for r in run.records if r.rel == HUMAN)
    save_corrections(results, [(person.root, HUMAN, "human", 2)], verified_by="Ana Ruiz")
    before = person.path.read_bytes()
    out = tmp_path / "pkg"
    with pytest.raises(ValueError, match="--blur-humans works with --media copy only"):
        export_camtrap_dp(results, out, deployments, **OPTIONS, blur_humans=True, log=lambda m: None)
    result = export(results, out, deployments, **{**OPTIONS, "media": "copy"}, blur_humans=True, log=lambda m: None)
    assert result.valid, result.problems
    rows = _read(out / "observations.csv")
    maxn = {r.event_id: r.event_count for r in run.records if r.event_id}
    machine = [o for o in rows if o["observationLevel"] == "event" and o["classificationMethod"] == "machine"]
    animals = [o for o in machine if o["observationType"] == "animal"]
    assert animals and all(int(o["count"]) == maxn[o["eventID"]] >= 1 for o in animals)
    human = next(o for o in rows if o["observationLevel"] == "event" and o["eventID"] == person.event_id)
    assert (human["observationType"], human["count"], human["classificationMethod"]) == ("human", "2", "human")
    # the copy in the package is blurred inside the person's box, the original untouched
    assert person.path.read_bytes() == before
    copy = next((out / "media").rglob(person.path.name))
    a = np.asarray(Image.open(person.path).convert("L"), dtype=np.int16)
    b = np.asarray(Image.open(copy).convert("L"), dtype=np.int16)
    x, y, w, h = max((d for d in person.detections if d.conf >= 0.2), key=lambda d: d.conf).bbox
    H, W = a.shape
    inside = (slice(int(y * H) + 8, int((y + h) * H) - 8), slice(int(x * W) + 8, int((x + w) * W) - 8))
    assert np.abs(a[inside] - b[inside]).mean() > 5  # changed
    outside = np.ones_like(a, bool)
    outside[max(0, int(y * H) - 200):int((y + h) * H) + 200, max(0, int(x * W) - 200):int((x + w) * W) + 200] = False
    assert np.array_equal(a[outside], b[outside])
    others = [p for p in (out / "media").rglob("*.jpg") if p.name != person.path.name]
    assert others and all(p.read_bytes() == next(r.path for r in run.records if r.path.name == p.name).read_bytes()
                          for p in others)
