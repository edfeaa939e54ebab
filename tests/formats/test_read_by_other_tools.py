"""Other tools read patou's files of the 134 real photos: CamTrapTools (`ingest`, `import` of
megadetector.json, `events`; `labels` on the Camtrap DP export) and MegaDetector's own validator."""
from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from patou.formats.camtrap_dp import export_camtrap_dp, load_taxa
from patou.formats.camtrap_dp_deployments import MissingMetadata
from patou.formats.megadetector import validate_megadetector_json

from megadetector_check import megadetector_report

pytestmark = pytest.mark.slow
CTT = Path(sys.executable).parent / "camtraptools"


def _ctt(*args) -> str:
    if importlib.util.find_spec("camtraptools") is None:
        pytest.skip("CamTrapTools not installed (pip install camtraptools; it is in the dev extra)")
    p = subprocess.run([str(CTT), *map(str, args)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return p.stdout


def _csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _expected_taxon(row: dict) -> str | None:
    """What the seven SpeciesNet fields can say of a label's taxon (Caprinae, a subfamily: Bovidae)."""
    if row["observationType"] != "animal" or not row.get("scientificName"):
        return None
    if row.get("taxonRank") in ("species", "genus", "family", "order", "class"):
        return row["scientificName"]
    return row.get("family") or None


def test_megadetector_json_carries_every_class_as_a_taxon(real_run):
    result, _, out = real_run
    data = json.loads((out / "megadetector.json").read_text())
    assert validate_megadetector_json(data) == []
    cats, desc = data["classification_categories"], data["classification_category_descriptions"]
    assert set(desc) == set(cats) and all(d.count(";") == 6 for d in desc.values())
    by_label = {cats[k]: desc[k] for k in cats}
    assert by_label["fox"].split(";")[4] == "vulpes" and by_label["human"].endswith(";homo;sapiens;human")
    assert data["info"]["classifier"].startswith("efficientnet_lite0_imagenet v1 (patou ")
    assert data["info"]["classifier_metadata"]["classifier_version"] == "1"
    assert data["info"]["classifier_metadata"]["typical_classification_threshold"] == 0.5


def test_megadetector_own_validator_accepts_the_real_run(real, real_run):
    _, _, out = real_run
    report = megadetector_report(out / "megadetector.json", real)
    assert report["errors"] == [] and report["warnings"] == [], report


def test_camtraptools_imports_species_as_named_taxa(real, real_run, tmp_path):
    """Before issue 26, all 155 of CamTrapTools' observations were "unidentified animal"."""
    _, by_rel, out = real_run
    pkg = tmp_path / "ctt"
    _ctt("ingest", real, "--out", pkg)
    _ctt("import", pkg, out / "megadetector.json")
    events = _ctt("events", pkg)
    media = {m["mediaID"]: m["filePath"] for m in _csv(pkg / "media.csv")}
    obs = [o for o in _csv(pkg / "observations.csv") if o["observationLevel"] == "media" and o["mediaID"]]
    tax = load_taxa()
    checked, named = 0, set()
    for o in obs:
        r = by_rel.get(media[o["mediaID"]])
        if r is None or o["observationType"] != "animal" or not o["bboxX"]:
            continue
        box = min(r.detections, key=lambda d: sum(abs(a - float(o[k])) for a, k in zip(
            d.bbox, ("bboxX", "bboxY", "bboxWidth", "bboxHeight"))))
        label = box.top()[0]
        # CamTrapTools takes each box's top class: its taxon must be the one patou's table gives
        assert (o["scientificName"] or None) == _expected_taxon(tax[label]), (media[o["mediaID"]], label, o)
        checked += 1
        named.add(o["scientificName"])
    assert checked >= 20 and {"Vulpes", "Felidae", "Canis familiaris", "Aves"} <= named, named
    assert "Vulpes" in events and "Canis familiaris" in events  # the events table names them too


def test_camtraptools_labels_read_every_observation_of_the_camtrap_dp_export(real, real_run, tmp_path):
    _, _, out = real_run
    pkg = tmp_path / "package"
    with pytest.raises(MissingMetadata, match="latitude and longitude"):  # asked for, with a template to fill in
        export_camtrap_dp(out, pkg, media="link", utc_offset="+00:00", sampling_design="opportunistic",
                          contributors=["Check <c@example.org>"], log=lambda m: None, validate=False)
    template = pkg / "deployments-template.csv"
    rows = _csv(template)
    filled = tmp_path / "deployments.csv"
    with open(filled, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows({**r, "latitude": "45.0", "longitude": "1.0"} for r in rows)  # placeholders: files, not maps
    template.unlink()
    result = export_camtrap_dp(out, pkg, filled, media="link", utc_offset="+00:00", sampling_design="opportunistic",
                               contributors=["Check <c@example.org>"], log=lambda m: None)
    assert result.valid, result.problems
    obs = _csv(pkg / "observations.csv")
    events = [o for o in obs if o["observationLevel"] == "event"]
    animal = [o for o in events if o["observationType"] == "animal"]
    assert animal and all(o["count"] and int(o["count"]) >= 1 for o in animal)  # MaxN on every animal event
    ctt = tmp_path / "ctt"
    _ctt("ingest", real, "--out", ctt)
    said = _ctt("labels", ctt, pkg, "--out", tmp_path / "truth.csv")
    media = {m["mediaID"]: m for m in _csv(pkg / "media.csv")}
    truth = {t["filePath"] for t in _csv(tmp_path / "truth.csv")}
    # every photo that one of patou's observations names (a taxon, blank, a person, a vehicle) is read
    named = {o["mediaID"] for o in obs if o["observationLevel"] == "media" and (
        o["observationType"] in ("blank", "human", "vehicle") or o["scientificName"])}
    for o in events:
        if o["observationType"] in ("blank", "human", "vehicle") or o["scientificName"]:
            named |= {mid for mid, m in media.items() if m["deploymentID"] == o["deploymentID"]
                      and o["eventStart"] <= m["timestamp"] <= o["eventEnd"]}
    expected = {media[m]["filePath"].removeprefix("media/") for m in named}
    assert expected and expected <= truth, sorted(expected - truth)[:5]
    assert f"matched {len(truth)} of the package's" in said
