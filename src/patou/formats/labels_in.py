"""Labels made elsewhere (`--labels FILE`): the truth for `patou evaluate` and `patou train`.

The format is told from the content, not the name:
- a Camtrap DP package (its folder or `datapackage.json`): media- and event-level observations;
  the human classifications when the package has any, else all of them; an event labels every
  photo of its deployment between its start and end; `observationTags` `patouLabel:<label>`
  (patou's own exports) names the label exactly;
- COCO Camera Traps JSON (LILA's format): each image's annotations' category;
- a Wildlife Insights `images.csv`: `is_blank`, then genus + species, common name, ranks;
- a Timelapse CSV (`File` and `RelativePath` columns): the species column (`Species`, `Label`,
  ...); an empty cell is not labelled yet, deleted rows are left out;
- any CSV with a path column (`path`, `file`, `filePath`, ...) and a label column (`label_norm`,
  `label`, `species`, `scientificName`, ...), optional `site`; an empty label is `empty`.
A row gives a path as its tool wrote it and one or more names to try (most specific first); which
photo it is and which patou label it means are decided later (`formats.paths`, `formats.taxa`).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse

from patou.formats.jsonfile import kind, read_json

# what a tool writes for "looked, could not tell": such a row labels nothing
UNLABELLED = {"unknown", "unidentified", "unidentifiable", "no cv result", "undefined", "unclassified"}
BLANK = "empty"
PATH_COLUMNS = ("path", "filepath", "file_path", "file", "filename", "file_name", "image", "image_path", "media")
LABEL_COLUMNS = ("label_norm", "label", "species", "scientificname", "scientific_name", "common_name", "commonname",
                 "category", "class", "name")
TIMELAPSE_LABELS = ("species", "label", "animal_species", "commonname", "common_name", "taxon", "class", "category")
TRUE = {"1", "1.0", "true", "yes", "y"}


@dataclass
class LabelRow:
    path: str  # as the file writes it
    names: tuple[str, ...]  # names to try, most specific first; ("empty",) for a blank photo
    where: str  # "labels.csv line 4", for messages
    site: str = ""
    tag: str | None = None  # a patou label the file names exactly (Camtrap DP patouLabel:<label>)

    @property
    def name(self) -> str:
        return self.names[0] if self.names else ""


@dataclass
class LabelFile:
    path: Path
    format: str  # camtrap-dp | coco | wildlife-insights | timelapse | csv
    rows: list[LabelRow]
    base: Path  # the folder relative paths start from
    notes: list[str] = field(default_factory=list)  # one line each, for the log


def read_label_file(path: str | Path, option: str = "--labels") -> LabelFile:
    """Read any supported label file; a one-line ValueError for what is not one."""
    path = Path(path)
    if path.is_dir():
        if (path / "datapackage.json").is_file() or (path / "observations.csv").is_file():
            return _camtrap_dp(path, option)
        raise ValueError(f"{option} {path}: a folder without datapackage.json or observations.csv is not a Camtrap DP "
                         "package; give a label file or a package folder")
    try:
        with open(path, "rb") as f:
            head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError as e:
        raise ValueError(f"{option} {path}: cannot read ({e.strerror or e})") from None
    if head[:1] in (b"{", b"["):
        data, _ = read_json(path, option)
        if isinstance(data, dict) and {"images", "annotations", "categories"} <= data.keys():
            return _coco(path, data, option)
        if isinstance(data, dict) and "resources" in data:
            return _camtrap_dp(path.parent, option)
        if isinstance(data, dict) and "detection_categories" in data:
            raise ValueError(f"{option} {path}: a MegaDetector results file, not labels (give it to --detections)")
        if isinstance(data, dict) and "predictions" in data:
            raise ValueError(f"{option} {path}: a SpeciesNet predictions file, not labels (give it to --detections)")
        raise ValueError(f"{option} {path}: JSON, but neither COCO Camera Traps (images, annotations, categories) "
                         "nor a Camtrap DP datapackage.json")
    return _csv_file(path, option)


# ---------------------------------------------------------------------------- CSV files


def _delimiter(line: str) -> str:
    # spreadsheets in French locales save CSV with ';', some tools with tabs
    counts = {d: line.count(d) for d in (",", ";", "\t")}
    return max(counts, key=counts.get) if any(counts.values()) else ","


def _read_csv(path: Path, option: str) -> tuple[list[str], list[dict]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            first = f.readline()
            f.seek(0)
            reader = csv.DictReader(f, delimiter=_delimiter(first))
            rows = list(reader)
            return [c or "" for c in reader.fieldnames or []], rows
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{option} {path}: cannot read as CSV ({getattr(e, 'strerror', None) or e})") from None


def _column(header: list[str], wanted: tuple[str, ...]) -> str | None:
    by_key = {c.strip().lower(): c for c in header}
    return next((by_key[w] for w in wanted if w in by_key), None)


def _csv_file(path: Path, option: str) -> LabelFile:
    header, rows = _read_csv(path, option)
    keys = {c.strip().lower() for c in header}
    if {"file", "relativepath"} <= keys:
        return _timelapse(path, header, rows, option)
    if {"filename", "is_blank", "deployment_id"} <= keys:
        return _wildlife_insights(path, header, rows)
    path_col, label_col = _column(header, PATH_COLUMNS), _column(header, LABEL_COLUMNS)
    if path_col is None or label_col is None:
        raise ValueError(f"{option} {path}: the first row must be a header naming a path column and a label column "
                         f"(path,label; found: {', '.join(h.strip() for h in header[:8]) or 'nothing'})")
    site_col = _column(header, ("site",))
    out = []
    for line, row in enumerate(rows, start=2):
        raw = (row.get(path_col) or "").strip()
        label = (row.get(label_col) or "").strip()
        out.append(LabelRow(raw, (label or BLANK,), f"{path.name} line {line}",
                            site=(row.get(site_col) or "").strip() if site_col else ""))
    plain = (path_col.strip().lower(), label_col.strip().lower()) == ("path", "label")
    return LabelFile(path, "csv", out, path.parent,
                     [] if plain else [f"{option} {path}: CSV, paths from column {path_col!r}, labels from {label_col!r}"])


def _timelapse(path: Path, header: list[str], rows: list[dict], option: str) -> LabelFile:
    label_col = _column(header, TIMELAPSE_LABELS)
    if label_col is None:
        raise ValueError(f"{option} {path}: a Timelapse CSV, but with no species column "
                         f"({', '.join(t for t in TIMELAPSE_LABELS[:4])}, ...); columns: {', '.join(header[:12])}")
    file_col, folder_col = _column(header, ("file",)), _column(header, ("relativepath",))
    delete_col, blank_col = _column(header, ("deleteflag",)), _column(header, ("empty", "blank"))
    out, deleted, unlabelled = [], 0, 0
    for line, row in enumerate(rows, start=2):
        if delete_col and (row.get(delete_col) or "").strip().lower() in TRUE:
            deleted += 1
            continue
        label = (row.get(label_col) or "").strip()
        if not label and blank_col and (row.get(blank_col) or "").strip().lower() in TRUE:
            label = BLANK
        if not label:
            unlabelled += 1  # Timelapse lists every photo; an empty cell is one nobody labelled yet
            continue
        rel = "/".join(p for p in ((row.get(folder_col) or "").strip(), (row.get(file_col) or "").strip()) if p)
        out.append(LabelRow(rel, (label,), f"{path.name} line {line}"))
    notes = [f"{option} {path}: Timelapse CSV, labels from column {label_col!r}"
             + (f"; {unlabelled} rows without a label (not labelled yet) left out" if unlabelled else "")
             + (f"; {deleted} rows marked DeleteFlag left out" if deleted else "")]
    return LabelFile(path, "timelapse", out, path.parent, notes)


def _wildlife_insights(path: Path, header: list[str], rows: list[dict]) -> LabelFile:
    col = {k: _column(header, (k,)) for k in ("filename", "location", "deployment_id", "is_blank", "class", "order",
                                               "family", "genus", "species", "common_name")}

    def get(row, k):
        v = (row.get(col[k]) or "").strip() if col[k] else ""
        return "" if v.lower() in UNLABELLED else v

    out = []
    for line, row in enumerate(rows, start=2):
        where = f"{path.name} line {line}"
        location = get(row, "location")
        # gs://bucket/deployment/photo.jpg -> deployment/photo.jpg (the bucket is not the user's folder)
        rel = location.split("://", 1)[-1].split("/", 1)[-1] if location else \
            "/".join(p for p in (get(row, "deployment_id"), get(row, "filename")) if p)
        if get(row, "is_blank").lower() in TRUE:
            out.append(LabelRow(rel, (BLANK,), where, site=get(row, "deployment_id")))
            continue
        genus, species = get(row, "genus"), get(row, "species")
        names = ([f"{genus} {species}"] if genus and species else []) + [
            get(row, k) for k in ("common_name", "genus", "family", "order", "class")]
        names = tuple(n for n in dict.fromkeys(names) if n)
        if names:
            out.append(LabelRow(rel, names, where, site=get(row, "deployment_id")))
    return LabelFile(path, "wildlife-insights", out, path.parent)


# ---------------------------------------------------------------------------- COCO Camera Traps


def _coco(path: Path, data: dict, option: str) -> LabelFile:
    for k in ("images", "annotations", "categories"):
        if not isinstance(data[k], list):
            raise ValueError(f"{option} {path}: COCO Camera Traps '{k}' is {kind(data[k])}, not a list")
    names = {}
    for c in data["categories"]:
        if isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("id"), (int, str)):
            names[c["id"]] = c["name"].replace("_", " ").strip()
    images = {}
    for im in data["images"]:
        if isinstance(im, dict) and isinstance(im.get("file_name"), str) and isinstance(im.get("id"), (int, str)):
            loc = im.get("location")
            images[im["id"]] = (im["file_name"], str(loc) if isinstance(loc, (str, int)) else "")
    labels: dict = {}
    skipped = 0
    for a in data["annotations"]:
        if not isinstance(a, dict) or a.get("image_id") not in images or a.get("category_id") not in names:
            skipped += 1
            continue
        labels.setdefault(a["image_id"], [])
        if names[a["category_id"]] not in labels[a["image_id"]]:
            labels[a["image_id"]].append(names[a["category_id"]])
    out = []
    for image_id, found in labels.items():
        file_name, location = images[image_id]
        out.append(LabelRow(file_name, tuple(found), f"{path.name} image {str(image_id)[:40]}", site=location))
    notes = [f"{option} {path}: COCO Camera Traps, {len(out)} of {len(images)} images annotated"
             + (f"; {skipped} annotations naming no listed image or category left out" if skipped else "")]
    return LabelFile(path, "coco", out, path.parent, notes)


# ---------------------------------------------------------------------------- Camtrap DP


def _time(text: str) -> datetime | None:
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _observation_names(o: dict, ranks: dict[str, tuple[str, ...]]) -> tuple[tuple[str, ...], str | None] | None:
    """(names, patou label tag) one observation gives, or None when it says nothing usable."""
    tags = [t.strip() for t in (o.get("observationTags") or "").split("|")]
    tag = next((t.split(":", 1)[1].strip() for t in tags if t.startswith("patouLabel:")), None) or None
    kind_ = (o.get("observationType") or "").strip()
    if kind_ == "blank":
        return (BLANK,), tag
    if kind_ in ("human", "vehicle"):
        return (kind_,), tag
    if kind_ == "animal":
        name = (o.get("scientificName") or "").strip()
        if name:
            return (name, *ranks.get(name, ())), tag
        return ((tag,), tag) if tag else None  # an animal without a name labels nothing
    return None  # unknown, unclassified


def _camtrap_dp(folder: Path, option: str) -> LabelFile:
    media_path, obs_path = folder / "media.csv", folder / "observations.csv"
    for p in (media_path, obs_path):
        if not p.is_file():
            raise ValueError(f"{option} {folder}: a Camtrap DP package needs {p.name}")
    _, media = _read_csv(media_path, option)
    _, observations = _read_csv(obs_path, option)
    ranks: dict[str, tuple[str, ...]] = {}
    if (folder / "datapackage.json").is_file():
        desc, _ = read_json(folder / "datapackage.json", option)
        for t in (desc.get("taxonomic") or []) if isinstance(desc, dict) else []:
            if isinstance(t, dict) and isinstance(t.get("scientificName"), str):
                ranks[t["scientificName"]] = tuple(str(t[k]) for k in ("genus", "family", "order", "class")
                                                   if isinstance(t.get(k), str) and t[k])
    human = [o for o in observations if (o.get("classificationMethod") or "").strip() == "human"]
    notes = []
    if human:
        notes.append(f"{option} {folder}: Camtrap DP, {len(human)} human classifications used "
                     f"({len(observations) - len(human)} machine ones left out)")
        observations = human
    else:
        notes.append(f"{option} {folder}: Camtrap DP without human classifications: its machine classifications "
                     "are taken as the truth")
    by_id = {m.get("mediaID"): m for m in media if m.get("mediaID")}
    labels: dict[str, list[tuple[tuple[str, ...], str | None]]] = {}
    events: dict[str, list[tuple[tuple[str, ...], str | None]]] = {}
    per_deployment: dict[str, list[tuple[datetime, str]]] = {}
    for m in media:
        t = _time(m.get("timestamp") or "")
        if t is not None and m.get("mediaID"):
            per_deployment.setdefault(m.get("deploymentID") or "", []).append((t, m["mediaID"]))
    for o in observations:
        said = _observation_names(o, ranks)
        if said is None:
            continue
        mid = (o.get("mediaID") or "").strip()
        if mid:
            if mid in by_id:
                labels.setdefault(mid, []).append(said)
            continue
        start, end = _time(o.get("eventStart") or ""), _time(o.get("eventEnd") or "")
        if start is None or end is None:
            continue
        for t, m in per_deployment.get((o.get("deploymentID") or "").strip(), []):
            if start <= t <= end:
                events.setdefault(m, []).append(said)
    out, conflicts = [], []
    for mid, m in by_id.items():
        said = labels.get(mid) or events.get(mid)  # a photo's own observation before its event's
        if not said:
            continue
        distinct = list(dict.fromkeys(said))
        if len(distinct) > 1:  # an empty frame inside an animal's visit is not a blank visit
            distinct = [s for s in distinct if s[0] != (BLANK,)] or distinct[:1]
        names = list(dict.fromkeys(s[1] or s[0][0] for s in distinct))
        if len(names) > 1:
            conflicts.append(f"{_media_path(m)} ({', '.join(names)})")
            continue
        out.append(LabelRow(_media_path(m), distinct[0][0], f"media.csv mediaID {mid[:40]}",
                            site=(m.get("deploymentID") or "").strip(), tag=distinct[0][1]))
    if conflicts:
        notes.append(f"{option} {folder}: photos with several labels, left out ({len(conflicts)}): "
                     + "; ".join(conflicts[:3]) + (" ..." if len(conflicts) > 3 else ""))
    return LabelFile(folder / "datapackage.json", "camtrap-dp", out, folder, notes)


def _media_path(m: dict) -> str:
    p = (m.get("filePath") or "").strip()
    if "://" in p:  # a published URL: its path is what can match the photos
        p = urlparse(p).path.lstrip("/")
    return p or (m.get("fileName") or "").strip()



# ---------------------------------------------------------------------------- rows -> photos and labels


def _short(path: str, n: int = 80) -> str:
    """A path for a message: its end, where the file's name is, when it is long."""
    return repr(path if len(path) <= n else "..." + path[-(n - 3):])


def _examples(items: list[str], n: int = 3) -> str:
    return "; ".join(items[:n]) + (" ..." if len(items) > n else "")


def match_labels(lf: LabelFile, records: list, index, option: str = "--labels") -> tuple[dict, list[str]]:
    """({record path: (patou label, row)}, one-line problems) for the rows that name a scanned
    record, their names turned into labels by `index` (a formats.taxa.NameIndex).

    Paths are matched as `--detections` matches them (formats.paths), relative rows also under
    the file's folder; a name the table does not know keeps its own (normalised) name, and the
    names the table does not know, or that fit several labels, are each listed in one line.
    """
    from patou.formats.paths import climbs, match_entries, norm
    from patou.record import normalise_label

    problems: list[str] = []
    rows: dict[str, LabelRow] = {}
    climbing, twice, unlabelled = [], [], 0
    for row in lf.rows:
        if not row.path:
            problems.append(f"{row.where}: no path")
            continue
        if climbs(row.path):
            climbing.append(f"{row.where} {_short(row.path)}")
            continue
        key = norm(row.path)
        if key in rows:
            if rows[key].names != row.names:
                twice.append(f"{row.where} {_short(row.path, 60)} (first {rows[key].where})")
            continue
        rows[key] = row
    if climbing:
        problems.append(f"{option} {lf.path}: rows whose path climbs out of the folder (..), never matched "
                        f"({len(climbing)}): {_examples(climbing)}")
    if twice:
        problems.append(f"{option} {lf.path}: photos labelled twice, differently; the first label kept "
                        f"({len(twice)}): {_examples(twice)}")
    matched = match_entries(rows, records, base=lf.base, what="row")
    unmatched = [f"{r.where} {_short(r.path)}" for k, r in rows.items() if k not in matched]
    if unmatched:
        problems.append(f"{option} {lf.path}: rows naming no photo found under the data folder, left out "
                        f"({len(unmatched)}): {_examples(unmatched)}")
    out: dict = {}
    unknown: dict[str, int] = {}
    ambiguous: dict[str, list[str]] = {}
    for key, rec in matched.items():
        row = rows[key]
        if row.tag and row.tag in index.labels:
            out[str(rec.path)] = (row.tag, row)
            continue
        if normalise_label(row.name).replace("_", " ") in UNLABELLED:
            unlabelled += 1
            continue
        label, several = index.find(row.names[0], row.names[1:])
        if label is None:
            label = normalise_label(row.name) or BLANK
            if several:
                ambiguous[row.name] = several
            elif label not in index.labels and label != BLANK:
                unknown[row.name] = unknown.get(row.name, 0) + 1
        out[str(rec.path)] = (label, row)
    if unlabelled:
        problems.append(f"{option} {lf.path}: {unlabelled} photos labelled as unknown/unidentified, left out")
    if ambiguous:
        problems.append(f"{option} {lf.path}: names that fit several labels, kept as they are (--merge one into the "
                        "label you mean): " + ", ".join(f"{n} ({' or '.join(ls)})" for n, ls in sorted(ambiguous.items())))
    if unknown:
        problems.append(f"{option} {lf.path}: names not in the taxon table, kept as they are: "
                        + ", ".join(f"{n} ({k})" for n, k in sorted(unknown.items(), key=lambda kv: (-kv[1], kv[0]))))
    return out, problems
