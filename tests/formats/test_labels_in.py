"""--labels FILE: Timelapse CSV, COCO Camera Traps, Wildlife Insights, Camtrap DP and plain CSVs as
the truth of `patou evaluate` and `patou train`."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from patou.formats.jsonfile import read_json
from patou.formats.labels_in import match_labels, read_label_file
from patou.formats.taxa import NameIndex, load_table
from patou.media import scan
from patou.train.labels import collect, normalise_label

HERON = "camtrapdp-mica-heron/tests/testthat/fixtures/sample_camtrap_dp_data"
SKIP = {"", "unidentified", "human;vehicle"}  # no label, or two: not one truth per photo


def _write_csv(path: Path, header: list[str], rows: list[list], delimiter: str = ",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


def _photo(path: Path) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 24), (90, 120, 60)).save(path)
    return path


# ------------------------------------------------------------------------- formats, small files


def test_the_format_is_told_from_the_content_not_the_name(tmp_path):
    data = tmp_path / "photos"
    for rel in ("A/1.jpg", "A/2.jpg", "B/3.jpg", "B/4.jpg"):
        _photo(data / rel)
    tl = _write_csv(tmp_path / "export.txt", ["RootFolder", "File", "RelativePath", "DateTime", "DeleteFlag", "Species"], [
        ["photos", "1.jpg", "A", "", "false", "Vulpes vulpes"],
        ["photos", "2.jpg", "A", "", "true", "Ursidae"],  # deleted in Timelapse: left out
        ["photos", "3.jpg", "B", "", "false", ""],  # not labelled yet: left out, not `empty`
        ["photos", "4.jpg", "B", "", "false", "sanglier"]], delimiter=";")
    coco = tmp_path / "labels.dat"
    coco.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "photos/A/1.jpg"}, {"id": "b3", "file_name": "photos/B/3.jpg"},
                   {"id": 9, "file_name": "photos/B/4.jpg"}],
        "categories": [{"id": 0, "name": "empty"}, {"id": 5, "name": "wild_boar"}],
        "annotations": [{"image_id": 1, "category_id": 0}, {"image_id": "b3", "category_id": 5},
                        {"image_id": 404, "category_id": 5}]}))
    wi = _write_csv(tmp_path / "images.csv", ["project_id", "deployment_id", "image_id", "filename", "location",
                                              "is_blank", "class", "order", "family", "genus", "species", "common_name"], [
        [1, "A", "i1", "1.jpg", "gs://bucket/A/1.jpg", 0, "Mammalia", "Carnivora", "Ursidae", "Ursus", "americanus",
         "American Black Bear"],
        [1, "A", "i2", "2.jpg", "gs://bucket/A/2.jpg", 1, "", "", "", "", "", "Blank"],
        [1, "B", "i3", "3.jpg", "gs://bucket/B/3.jpg", 0, "Mammalia", "Primates", "Hominidae", "Homo", "sapiens", "Human"]])
    index = NameIndex(load_table())
    photos, _ = scan([data])
    got = {}
    for f, fmt in ((tl, "timelapse"), (coco, "coco"), (wi, "wildlife-insights")):
        lf = read_label_file(f)
        assert lf.format == fmt
        truth, problems = match_labels(lf, photos, index)
        got[fmt] = {Path(p).relative_to(data).as_posix(): label for p, (label, _) in truth.items()}
    assert got["timelapse"] == {"A/1.jpg": "fox", "B/4.jpg": "wild_boar"}
    assert got["coco"] == {"A/1.jpg": "empty", "B/3.jpg": "wild_boar"}
    # genus + species unknown to the bundled table, so its family: Ursidae -> bear
    assert got["wildlife-insights"] == {"A/1.jpg": "bear", "A/2.jpg": "empty", "B/3.jpg": "human"}
    notes = read_label_file(tl).notes[0]
    assert "1 rows without a label" in notes and "1 rows marked DeleteFlag" in notes
    assert "1 annotations naming no listed image" in read_label_file(coco).notes[0]


def test_what_is_not_a_label_file_is_one_line(tmp_path):
    md = tmp_path / "md.json"
    md.write_text(json.dumps({"images": [], "detection_categories": {"1": "animal"}}))
    with pytest.raises(ValueError, match="MegaDetector results file, not labels"):
        read_label_file(md)
    sn = tmp_path / "sn.json"
    sn.write_text(json.dumps({"predictions": []}))
    with pytest.raises(ValueError, match="SpeciesNet predictions file, not labels"):
        read_label_file(sn)
    (tmp_path / "nested.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(ValueError, match="nested too deep"):
        read_label_file(tmp_path / "nested.json")
    (tmp_path / "noheader.csv").write_text("imgs/a.jpg,bear\n")
    with pytest.raises(ValueError, match="header"):
        read_label_file(tmp_path / "noheader.csv")
    (tmp_path / "latin1.csv").write_bytes("path,label\nx.jpg,cerf \xe9laphe\n".encode("latin-1"))
    with pytest.raises(ValueError, match="cannot read as CSV"):
        read_label_file(tmp_path / "latin1.csv")
    (tmp_path / "empty-folder").mkdir()
    with pytest.raises(ValueError, match="not a Camtrap DP package"):
        read_label_file(tmp_path / "empty-folder")
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    with pytest.raises(ValueError, match="larger than"):
        read_json(big, "--labels", max_bytes=10)
    for bad in ("x.json", "x.csv"):
        with pytest.raises(ValueError, match="cannot read"):
            read_label_file(tmp_path / bad)


def test_rows_only_ever_name_photos_under_the_data_folder(tmp_path):
    data, outside = tmp_path / "data", tmp_path / "outside"
    _photo(data / "site/a.jpg")
    _photo(outside / "secret.jpg")
    f = _write_csv(data / "labels.csv", ["path", "label"], [
        ["site/a.jpg", "fox"], ["../outside/secret.jpg", "bear"], [str(outside / "secret.jpg"), "bear"],
        ["site/a.jpg", "wolf"]])
    images, problems = collect(data, labels_csv=f)
    assert [(i.path.name, i.label) for i in images] == [("a.jpg", "fox")]
    assert any("climbs out of the folder" in p and "secret.jpg" in p for p in problems)
    assert any("naming no photo" in p and "secret.jpg" in p for p in problems)
    assert any("labelled twice" in p for p in problems)


def test_names_that_fit_several_labels_or_none_are_listed_in_one_line(tmp_path):
    data = tmp_path / "data"
    for n in range(4):
        _photo(data / f"{n}.jpg")
    f = _write_csv(tmp_path / "labels.csv", ["filePath", "scientificName"], [
        ["0.jpg", "Mustelidae"], ["1.jpg", "Lynx rufus"], ["2.jpg", "Lynx rufus"], ["3.jpg", "unknown"]])
    images, problems = collect(data, labels_csv=f)
    assert {i.path.name: i.label for i in images} == {"0.jpg": "mustelidae", "1.jpg": "lynx_rufus", "2.jpg": "lynx_rufus"}
    assert sum("not in the taxon table" in p for p in problems) == 1
    assert any("Lynx rufus (2)" in p for p in problems)
    assert any("Mustelidae (badger or mustelid)" in p for p in problems)
    assert any("1 photos labelled as unknown" in p for p in problems)
    # --merge settles what the table could not
    images, _ = collect(data, labels_csv=f, merge={"mustelidae": "mustelid", "lynx_rufus": "felid"})
    assert {i.label for i in images} == {"mustelid", "felid"}


def test_the_official_camtrap_dp_example_reads_its_human_classifications(real):
    pkg = real / HERON
    lf = read_label_file(pkg / "datapackage.json")
    assert lf.format == "camtrap-dp" and "human classifications used" in lf.notes[0]
    names = {r.names[0] for r in lf.rows}
    assert "Anas platyrhynchos" in names and "empty" in names
    # the 10 heron frames on disk carry only a machine classification: not truth in a reviewed package
    photos, _ = scan([pkg / "media"])
    truth, problems = match_labels(lf, photos, NameIndex(load_table()))
    assert truth == {} and any("naming no photo" in p for p in problems)


# ------------------------------------------------------------------------- the real labels, four ways


def _truth_rows(real: Path, sources: tuple[str, ...] = ()) -> list[tuple[Path, str]]:
    with open(real / "LABELS.csv", newline="", encoding="utf-8") as f:
        return [(real / r["path"], r["label_norm"]) for r in csv.DictReader(f)
                if r["label_norm"] not in SKIP and (not sources or r["path"].split("/")[0] in sources)]


@pytest.fixture(scope="module")
def labelled(real, tmp_path_factory):
    """camtrap-real as a folder tree (leaf folder = label) and as three label files over it."""
    return _labelled(real, tmp_path_factory.mktemp("labels"))


@pytest.fixture(scope="module")
def labelled_small(real, tmp_path_factory):
    """The same for two sources (14 full-size photos, 74 thumbnails): four runs stay short."""
    return _labelled(real, tmp_path_factory.mktemp("labels-small"), ("speciesnet-cameratrapai", "camtrapR-borneo-thumbs"))


def _labelled(real: Path, tmp: Path, sources: tuple[str, ...] = ()):
    table = load_table()
    data = tmp / "data"
    rows = []  # (path under data, label name, patou label or None)
    for src, raw in _truth_rows(real, sources):
        label = normalise_label(raw)
        rel = f"{label}/{src.parent.name}__{src.name}"
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(src, data / rel)
        rows.append((rel, raw, label if label in table else None))

    def name(raw: str, label: str | None, kind: str) -> str:
        """What each tool would write: scientific names, or patou's own word for a non-taxon."""
        if label is None:
            return raw
        sci = table[label].get("scientificName")
        return sci if sci and kind != "coco" else label.replace("_", " ")

    # Timelapse: paths relative to DATA, backslashes (Windows), the CSV kept elsewhere
    tl_rows = [["data", rel.split("/")[1], rel.split("/")[0], "false", name(raw, lab, "timelapse")]
               for rel, raw, lab in rows]
    tl_rows.append(["data", "never-labelled.jpg", "x", "false", ""])
    timelapse = _write_csv(tmp / "timelapse.csv", ["RootFolder", "File", "RelativePath", "DeleteFlag", "Species"],
                           [[a, b, c.replace("/", "\\"), d, e] for a, b, c, d, e in tl_rows])
    # COCO Camera Traps: file_name under the dataset's folder (as LILA writes them)
    cats = sorted({name(raw, lab, "coco") for _, raw, lab in rows})
    coco = tmp / "coco.json"
    coco.write_text(json.dumps({
        "info": {"version": "1"}, "categories": [{"id": i, "name": c} for i, c in enumerate(cats)],
        "images": [{"id": n, "file_name": f"data/{rel}"} for n, (rel, _, _) in enumerate(rows)],
        "annotations": [{"id": n, "image_id": n, "category_id": cats.index(name(raw, lab, "coco"))}
                        for n, (_, raw, lab) in enumerate(rows)]}))
    # Camtrap DP: media copied into the package (media/<path>), human media-level observations,
    # and a machine one that must not count
    pkg = tmp / "package"
    pkg.mkdir()
    _write_csv(pkg / "media.csv", ["mediaID", "deploymentID", "timestamp", "filePath", "fileName"],
               [[f"m{n}", rel.split("/")[0], "2024-01-01T00:00:00Z", f"media/{rel}", rel.split("/")[1]]
                for n, (rel, _, _) in enumerate(rows)])
    obs = []
    for n, (rel, raw, lab) in enumerate(rows):
        kind = {"empty": "blank", "human": "human", "vehicle": "vehicle"}.get(lab or "", "animal")
        obs.append([f"o{n}", rel.split("/")[0], f"m{n}", "media", kind,
                    name(raw, lab, "camtrap-dp") if kind == "animal" else "", "human"])
    obs.append(["wrong", rows[0][0].split("/")[0], "m0", "media", "animal", "Ursidae", "machine"])
    _write_csv(pkg / "observations.csv", ["observationID", "deploymentID", "mediaID", "observationLevel",
                                          "observationType", "scientificName", "classificationMethod"], obs)
    (pkg / "datapackage.json").write_text(json.dumps({"profile": "tabular-data-package", "resources": [],
                                                      "taxonomic": []}))
    return data, {"timelapse": timelapse, "coco": coco, "camtrap-dp": pkg}, rows


def test_label_files_name_the_same_labels_as_the_folder_tree(labelled):
    data, files, rows = labelled
    fold = [k for k in load_table() if k not in ("empty", "undefined")]  # as evaluate folds the bundled labels
    tree, _ = collect(data, classes=fold)
    expected = {(i.path.name, i.label) for i in tree}
    assert len(expected) == len(rows)
    for fmt, f in files.items():
        images, problems = collect(data, labels_csv=f, classes=fold)
        assert {(i.path.name, i.label) for i in images} == expected, fmt
        assert read_label_file(f).format == fmt


@pytest.mark.slow
@pytest.mark.torch
def test_evaluate_gives_the_same_figures_from_every_label_file(labelled_small, tmp_path):
    """`patou evaluate` end to end; every real row's label is compared above, at no run's cost."""
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    from patou.evaluate import evaluate_model

    data, files, rows = labelled_small
    quiet = lambda m: None  # noqa: E731
    ref = evaluate_model(data, tmp_path / "tree", target="bear", log=quiet)
    assert ref["image"]["n"] == len(rows) - 1  # the truncated elephant cannot be read
    want = json.loads((tmp_path / "tree" / "metrics.json").read_text())
    for fmt, f in files.items():
        warnings = []
        rep = evaluate_model(data, tmp_path / fmt, labels_csv=f, target="bear", log=warnings.append)
        got = json.loads((tmp_path / fmt / "metrics.json").read_text())
        assert got == want, fmt
        assert rep["image"]["per_class"]["bear"]["support"] == sum(lab == "bear" for _, _, lab in rows)
