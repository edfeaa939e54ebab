"""patou labels as taxa, for the files other tools read and the label files they write.

One table per classifier says what each of its labels means as a taxon: the bundled
`outputs/camtrap_dp_taxonomy.csv`, or an installed model's own `camtrap_dp_taxonomy.csv` (named
by its card's `extra.camtrap_dp_taxonomy`); Camtrap DP exports use the same table. From it come
- SpeciesNet's seven-field descriptions (`id;class;order;family;genus;species;common name`, lower
  case, as SpeciesNet, AddaxAI and MegaDetector's tools write them) that `megadetector.json`
  carries in `classification_category_descriptions`, so a reader sees `Vulpes`, not `fox`;
- `NameIndex`, which turns the names in a label file (a scientific or common name, in any case,
  or patou's own label) into the label they mean.
"""
from __future__ import annotations

import uuid
from pathlib import Path

from patou.record import normalise_label

# SpeciesNet's own strings for what is not a taxon (speciesnet.constants.Classification)
SPECIESNET_SPECIAL = {
    "blank": "f1856211-cfb7-4a5b-9158-c0f72fd09ee6;;;;;;blank",
    "animal": "1f689929-883d-4dae-958c-3d57ab5b6c16;;;;;;animal",
    "human": "990ae9dd-7a59-4344-afcb-1b7b21368000;mammalia;primates;hominidae;homo;sapiens;human",
    "vehicle": "e2895ed5-780b-48f6-8a11-9e27cb594511;;;;;;vehicle",
    "unknown": "f2efdae9-efb8-48fb-8a91-eccf79ab4ffb;no cv result;no cv result;no cv result;no cv result;"
               "no cv result;no cv result",
}
# ids of patou's own taxa: stable across runs and machines (uuid5 of the taxon's name)
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/patou/taxa")
# what people and tools write for the labels that are not taxa
ALIASES = {
    "human": ("human", "humans", "person", "people", "homo sapiens", "homo"),
    "vehicle": ("vehicle", "vehicles", "car"),
    "blank": ("blank", "empty", "none", "nothing", "no animal"),
}


def bundled_table() -> Path:
    from patou.formats.camtrap_dp import TAXA  # the table Camtrap DP exports use

    return TAXA


def table_of_card(card) -> Path:
    """The taxon table of a classifier card: its own (an installed model's fine labels), else the bundled one."""
    name = (card.extra or {}).get("camtrap_dp_taxonomy")
    if name and card.path is not None and (Path(card.path).parent / name).is_file():
        return Path(card.path).parent / name
    return bundled_table()


def load_table(path: str | Path | None = None) -> dict[str, dict]:
    """label -> row of a taxon table (the Camtrap DP columns), checked as the export checks it."""
    from patou.formats.camtrap_dp import load_taxa

    return load_taxa(path or bundled_table())


def speciesnet_description(label: str, row: dict | None) -> str:
    """One label as SpeciesNet writes a class: `id;class;order;family;genus;species;common name`.

    Non-animals get SpeciesNet's own strings (so `human` reads as a person everywhere), an animal
    without a scientific name is SpeciesNet's `animal` when the table says nothing of it, and a
    taxon above species keeps only the ranks it has (Caprinae, a subfamily, is written at its
    family, Bovidae: the seven fields have no place for it). A label missing from the table is
    an unnamed class under its own name.
    """
    kind = (row or {}).get("observationType", "animal")
    if kind in ("human", "vehicle", "blank", "unknown"):
        return SPECIESNET_SPECIAL[kind]
    if row is None:
        return f"{_id(label)};;;;;;{label.replace('_', ' ')}"
    ranks = {k: (row.get(k) or "").strip().lower() for k in ("class", "order", "family", "genus")}
    name, rank = (row.get("scientificName") or "").strip(), row.get("taxonRank") or ""
    species = ""
    if rank in ("species", "subspecies") and " " in name:
        genus, species = name.lower().split(" ", 1)
        ranks["genus"] = ranks["genus"] or genus
    elif rank in ranks and name:
        ranks[rank] = name.lower()
    if not name and not any(ranks.values()):
        return SPECIESNET_SPECIAL["animal"]
    fields = [ranks["class"], ranks["order"], ranks["family"], ranks["genus"], species]
    return ";".join([_id(name or label), *fields, label.replace("_", " ")])


def _id(name: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, name.strip().lower()))


def descriptions(labels: list[str], table: dict[str, dict]) -> dict[str, str]:
    """label -> its seven-field description, for every label."""
    return {lab: speciesnet_description(lab, table.get(lab)) for lab in labels}


def parse_speciesnet(text: str) -> tuple[str | None, str]:
    """A SpeciesNet class string -> (scientific name or None, common name): the most specific
    rank given (`Loxodonta africana`, `Bovidae`); None for blank, animal, human, vehicle, unknown."""
    parts = str(text).split(";")
    if len(parts) != 7:
        return None, str(text).strip()
    cls, order, family, genus, species, common = (p.strip() for p in parts[1:])
    if common in ("blank", "animal", "human", "vehicle", "no cv result"):
        return None, common
    if genus and species:
        return f"{genus.capitalize()} {species}", common
    rank = next((r for r in (genus, family, order, cls) if r), None)
    return (rank.capitalize() if rank else None), common


class NameIndex:
    """Names -> patou label, from a taxon table: each label's own name, its scientific name and
    its vernacular names (English, French), compared after `normalise_label` (case, accents,
    spaces, underscores). A name two labels share (Mustelidae: badger and mustelid) is ambiguous
    and maps to neither: `find` says so, and the caller reports it."""

    def __init__(self, table: dict[str, dict]):
        self.labels = set(table)
        names: dict[str, set[str]] = {}
        self.scientific: dict[str, set[str]] = {}

        def add(name: str, label: str, index: dict = names) -> None:
            key = normalise_label(name)
            if key:
                index.setdefault(key, set()).add(label)

        for label, row in table.items():
            for alias in ALIASES.get(row.get("observationType", ""), ()):
                add(alias, label)
            if row.get("scientificName"):
                add(row["scientificName"], label)
                add(row["scientificName"], label, self.scientific)
            for lang in ("eng", "fra"):
                for v in (row.get(f"vernacular_{lang}") or "").split(" / "):
                    add(v, label)
        for label in table:  # a label's own name is never ambiguous: it is that label
            names[normalise_label(label)] = {label}
        self.names = names

    def find(self, name: str, ranks: tuple[str, ...] = ()) -> tuple[str | None, list[str]]:
        """(label, []) when the name, or else the first of `ranks` (the file's genus, family,
        order, class, most specific first) that the table knows, names one label; (None, [labels])
        when it names several; (None, []) when none. A two-word name the table lacks is also tried
        as a binomial: its genus against the table's scientific names (`Canis lupus` -> Canis),
        never against common names (`Ours brun` is not `ours`)."""
        words = (name or "").split()
        tried = [(name, self.names), *([(words[0], self.scientific)] if len(words) == 2 else []),
                 *((r, self.names) for r in ranks)]
        for n, index in tried:
            hits = index.get(normalise_label(n or ""))
            if hits:
                return (next(iter(hits)), []) if len(hits) == 1 else (None, sorted(hits))
        return None, []
