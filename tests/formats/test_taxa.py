"""Labels as taxa: SpeciesNet's seven-field descriptions (read back by CamTrapTools' own parser)
and names from label files mapped to patou labels."""
from __future__ import annotations

import pytest

from patou.formats.taxa import (
    SPECIESNET_SPECIAL, NameIndex, descriptions, load_table, parse_speciesnet, speciesnet_description,
)
from patou.models.registry import DEEPFAUNE_CLASSES, read_class_table


def _expected_name(row: dict) -> str | None:
    """The name a reader of the seven fields can recover: the scientific name, except for a
    taxon without a rank of the seven (Caprinae, a subfamily: its family), and for a group
    without a scientific name the most specific rank the table gives (micromammal: Mammalia)."""
    if row.get("scientificName") and row.get("taxonRank") in ("species", "genus", "family", "order", "class"):
        return row["scientificName"]
    return row.get("family") or row.get("order") or row.get("class") or None


def test_every_bundled_label_has_seven_fields_that_mean_its_taxon():
    table = load_table()
    desc = descriptions(list(table), table)
    assert set(desc) == set(table)
    for label, text in desc.items():
        parts = text.split(";")
        assert len(parts) == 7, text
        assert text == text.lower(), "SpeciesNet writes its fields in lower case"
        assert parse_speciesnet(text)[0] == _expected_name(table[label]), (label, text)
    assert desc["fox"].split(";")[1:] == ["mammalia", "carnivora", "canidae", "vulpes", "", "fox"]
    assert desc["dog"].split(";")[4:] == ["canis", "familiaris", "dog"]
    assert desc["bear"].split(";")[3] == "ursidae" and parse_speciesnet(desc["bear"])[0] == "Ursidae"
    # what is not a taxon reads as SpeciesNet's own classes
    assert desc["human"] == SPECIESNET_SPECIAL["human"] and desc["vehicle"] == SPECIESNET_SPECIAL["vehicle"]
    assert desc["other"] == SPECIESNET_SPECIAL["animal"] and desc["empty"] == SPECIESNET_SPECIAL["blank"]
    # ids are stable (the same taxon, the same id, run after run) and distinct
    assert desc["fox"] == speciesnet_description("fox", table["fox"])
    ids = [d.split(";")[0] for k, d in desc.items() if k not in ("badger", "mustelid")]
    assert len(set(ids)) == len(ids)


def test_an_installed_models_fine_labels_keep_their_species():
    tax = read_class_table(DEEPFAUNE_CLASSES)
    rows = {t.label: {"label": t.label, **t.row} for t in tax.values()}
    desc = descriptions(list(rows), rows)
    assert parse_speciesnet(desc["roe_deer"]) == ("Capreolus capreolus", "roe deer")
    assert parse_speciesnet(desc["bear"])[0] == "Ursus arctos"
    assert parse_speciesnet(desc["micromammal"])[0] == "Mammalia"  # no scientific name, a class
    for label, row in rows.items():
        assert parse_speciesnet(desc[label])[0] == _expected_name(row), label


def test_camtraptools_reads_the_descriptions_as_the_taxa_patou_exports():
    """CamTrapTools' own parser of SpeciesNet labels (what its `import` uses) on patou's strings."""
    detect = pytest.importorskip("camtraptools.detect")
    table = load_table()
    desc = descriptions(list(table), table)
    for label, row in table.items():
        name, common = detect.parse_taxon(desc[label])
        kind = detect.SPECIAL_LABELS.get(common, "animal")
        assert kind == {"blank": "blank", "unknown": "unknown"}.get(row["observationType"], row["observationType"]), label
        assert name == _expected_name(row), label


def test_names_from_label_files_become_patou_labels():
    index = NameIndex(load_table())
    find = index.find
    assert find("Vulpes")[0] == "fox" and find("vulpes")[0] == "fox"
    assert find("Canis familiaris")[0] == "dog"
    assert find("Canis lupus")[0] == "wolf"  # a binomial the table lacks: its genus
    assert find("Sus scrofa")[0] == "wild_boar" and find("wild boar")[0] == "wild_boar"
    assert find("sanglier")[0] == "wild_boar"  # the French vernacular
    assert find("Cervidés")[0] == "deer"
    assert find("Homo sapiens")[0] == "human" and find("person")[0] == "human"
    assert find("blank")[0] == "empty" and find("empty")[0] == "empty"
    # the ranks a file gives, most specific first, when the name itself is unknown
    assert find("Ursus americanus", ("Ursus", "Ursidae", "Carnivora", "Mammalia"))[0] == "bear"
    # two labels share Mustelidae (badger, mustelid): not guessed
    assert find("Mustelidae") == (None, ["badger", "mustelid"])
    # common names are never cut into a genus: "Ours brun" is not "ours"
    assert find("Ours brun") == (None, []) and find("ours")[0] == "bear"
    assert find("Lynx rufus") == (None, [])
