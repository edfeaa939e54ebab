"""Camtrap DP 1.0 export of a finished run: datapackage.json, deployments.csv, media.csv and
observations.csv, the format GBIF, Agouti, Wildlife Insights and R's camtrapdp read.

- deployments: one per site folder (see camtrap_dp_deployments); coordinates come from the user.
- media: one row per readable image with a capture time (Camtrap DP requires media.timestamp).
- observations, event level: one row per patou event (one row per distinct human label when a
  reviewer corrected images of it), with the label's taxon from camtrap_dp_taxonomy.csv, the
  count of animals (the event's MaxN: the most boxes of its label in one photo, at or above the
  label's threshold; a reviewer's own count when they gave one) and the classifier's event score.
- observations, media level: one row per detector box, with its bounding box and class score,
  so that tools that draw boxes have them. Counting tools use the event level
  (`observationLevel` tells the two apart).
Human corrections (corrections.json, e.g. from `patou serve`) replace the machine's label with
classificationMethod=human, classifiedBy=the reviewer and classificationTimestamp=when.
"""
from __future__ import annotations

import csv
import hashlib
import json
import mimetypes
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .. import __version__
from ..events import events_of
from ..models.registry import resolve
from ..blur import people_boxes
from ..options import DETECTION_THRESHOLD, Thresholds
from ..record import EMPTY, UNDEFINED, ImageRecord
from ..results import load_run
from ..atomic import atomic_output
from .camtrap_dp_deployments import (
    Deployment, MissingMetadata, attach_user_values, aware, iso, missing_metadata, parse_user_time,
    parse_utc_offset, read_deployments_csv, site_deployments, write_template,
)
from .camtrap_dp_validate import PROFILE_URL, TABLES, load_table_schema, report_lines, schema_url
from ..timestamps import suggest_time_source
from ..corrections import load_corrections
from ..sort import SortPlan, sort_files

TAXA = Path(__file__).with_name("camtrap_dp_taxonomy.csv")  # patou label -> Camtrap DP taxon
SAMPLING_DESIGNS = ("simpleRandom", "systematicRandom", "clusteredRandom", "experimental", "targeted", "opportunistic")
CAPTURE_METHODS = ("activityDetection", "timeLapse")
MEDIA_MODES = ("copy", "link")
MEDIA_DIR = "media"
# the official media.filePath pattern (Camtrap DP 1.0-1.0.2): inside the package, or a URL
FILE_PATH = re.compile(r"^(?=^[^./~])(^((?!\.{2}).)*$).*$")
CONTRIBUTOR_ROLES = ("contact", "principalInvestigator", "rightsHolder", "publisher", "contributor")
TAXON_KEYS = ("taxonRank", "kingdom", "phylum", "class", "order", "family", "genus")
RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species", "subspecies")


@dataclass
class ExportResult:
    out: Path
    counts: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    problems: list[str] | None = None  # validation problems; None when not validated

    @property
    def valid(self) -> bool | None:
        return None if self.problems is None else not self.problems


def load_taxa(path: str | Path | None = None) -> dict[str, dict]:
    """patou label -> row of the taxa table (observationType, scientificName, ranks...)."""
    path = Path(path) if path else TAXA
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise ValueError(f"{path}: cannot read the taxonomy table ({e})") from None
    table = {}
    for n, row in enumerate(rows, 2):
        row = {k: (v or "").strip() for k, v in row.items() if k}
        if not row.get("label") or row.get("observationType") not in ("animal", "human", "vehicle", "blank", "unknown"):
            raise ValueError(f"{path}: row {n}: needs a label and an observationType "
                             "(animal, human, vehicle, blank or unknown)")
        if row.get("taxonRank") and row["taxonRank"] not in RANKS:
            raise ValueError(f"{path}: row {n}: taxonRank {row['taxonRank']!r} is not one of {', '.join(RANKS)}")
        table[row["label"]] = row
    return table


def run_taxa(run_info: dict) -> Path | None:
    """The Camtrap DP taxa table of the classifier a run used, when its card names one and
    the model is still there (an installed model's fine labels, e.g. roe_deer -> Capreolus capreolus)."""
    summary = (run_info.get("models") or {}).get("classifier") or {}
    name = (summary.get("extra") or {}).get("camtrap_dp_taxonomy")
    model = (run_info.get("options") or {}).get("model")
    if not name or not model:
        return None
    try:
        folder = resolve(model)
    except ValueError:
        return None
    path = (folder if folder.is_dir() else folder.parent) / name
    return path if path.is_file() else None


def parse_contributor(text: str) -> dict:
    """'Ana Ruiz <ana@example.org> (principalInvestigator)' -> a Data Package contributor."""
    m = re.match(r"^\s*(?P<title>[^<(]*?)\s*(?:<(?P<email>[^>]*)>)?\s*(?:\((?P<role>\w+)\))?\s*$", text)
    if not m or not m.group("title"):
        raise ValueError(f'--contributor {text!r}: write it as "Name <email> (role)"; email and role are optional')
    c = {"title": m.group("title")}
    if m.group("email"):
        c["email"] = m.group("email")
    if m.group("role"):
        if m.group("role") not in CONTRIBUTOR_ROLES:
            raise ValueError(f"--contributor {text!r}: role must be one of {', '.join(CONTRIBUTOR_ROLES)}")
        c["role"] = m.group("role")
    return c


def _media_id(r: ImageRecord) -> str:
    return hashlib.sha1(f"{r.root}|{r.rel}".encode()).hexdigest()[:16]


def _bbox(d) -> dict:
    x, y, w, h = (min(max(float(v), 0.0), 1.0) for v in d.bbox)
    w, h = min(w, 1.0 - x), min(h, 1.0 - y)
    if w <= 0 or h <= 0:
        return {}
    return {"bboxX": round(x, 4), "bboxY": round(y, 4), "bboxWidth": max(round(w, 4), 1e-4),
            "bboxHeight": max(round(h, 4), 1e-4)}


def export_camtrap_dp(
    results_dir: str | Path,
    out: str | Path,
    deployments: str | Path | None = None,
    *,
    utc_offset: str | None = None,
    sampling_design: str | None = None,
    contributors: list[str] | None = None,
    title: str | None = None,
    data_license: str | None = None,
    media_license: str | None = None,
    media_url: str | None = None,
    media: str | None = None,
    capture_method: str = "activityDetection",
    taxonomy: str | Path | None = None,
    validate: bool = True,
    blur_humans: bool = False,
    log: Callable[[str], None] = print,
) -> ExportResult:
    """Write RESULTS_DIR's run as a Camtrap DP 1.0 package in `out` (see the module docstring).

    Raises MissingMetadata (a ValueError) naming everything the user still has to give, after
    writing `out/deployments-template.csv` to fill in; other bad input is a ValueError too.
    `blur_humans` (with `media="copy"`): the copies of photos with people have them blurred.
    """
    if blur_humans and media != "copy":
        raise ValueError("--blur-humans works with --media copy only: a linked or published photo is the original, "
                         "whose people cannot be blurred" if media or media_url else "--blur-humans needs --media copy")
    run = load_run(results_dir)
    out = Path(out)
    if sampling_design and sampling_design not in SAMPLING_DESIGNS:
        raise ValueError(f"--sampling-design must be one of {', '.join(SAMPLING_DESIGNS)}, not {sampling_design!r}")
    if capture_method not in CAPTURE_METHODS:
        raise ValueError(f"--capture-method must be one of {', '.join(CAPTURE_METHODS)}, not {capture_method!r}")
    if media and media not in MEDIA_MODES:
        raise ValueError(f"--media must be {' or '.join(MEDIA_MODES)}, not {media!r}")
    if media and media_url:
        raise ValueError("give --media (files inside the package) or --media-url (published files), not both")
    if bool(data_license) != bool(media_license):
        raise ValueError("Camtrap DP needs both licences or none: give --data-license and --media-license")
    people = [parse_contributor(c) for c in contributors or []]
    if people and not any(p.get("role") == "contact" for p in people):
        people[0].setdefault("role", "contact")  # GBIF needs a contact; the first person given is it
    if taxonomy is None and (taxonomy := run_taxa(run.info)):
        log(f"taxonomy: {taxonomy} (the table of the run's classifier)")
    tax = load_taxa(taxonomy)
    schemas = {t: load_table_schema(t) for t in TABLES}
    fields = {t: [f["name"] for f in schemas[t]["fields"]] for t in TABLES}
    default_tz = parse_utc_offset(utc_offset, "--utc-offset") if utc_offset else None
    warnings: list[str] = []

    def warn(msg: str) -> None:
        warnings.append(msg)
        log(f"warning: {msg}")

    # Media Camtrap DP can hold: read, and with a capture time (media.timestamp is required).
    readable = [r for r in run.records if r.failure is None]
    usable = [r for r in readable if r.timestamp is not None]
    if len(readable) > len(usable):
        untimed = [r.rel for r in readable if r.timestamp is None]
        warn(f"{len(untimed)} image(s) have no capture time and are left out (Camtrap DP requires one): "
             + ", ".join(untimed[:5]) + (" ..." if len(untimed) > 5 else ""))
    if not usable:
        hint = suggest_time_source([r for r in readable if r.timestamp is None]) if readable else ""
        raise ValueError(f"{results_dir}: no readable image with a capture time: nothing to export"
                         + (f"; {hint}" if hint else ""))

    deps = site_deployments(usable)
    if deployments:
        deployments = Path(deployments)
        if out.resolve() / "deployments.csv" == deployments.resolve():
            raise ValueError(f"{deployments}: is the package's own deployments.csv; keep your input elsewhere")
        rows, w = read_deployments_csv(deployments, fields["deployments"])
        for msg in w:
            warn(msg)
        for msg in attach_user_values(deps, rows, fields["deployments"], deployments, default_tz):
            warn(msg)
    else:
        for d in deps:
            d.tz = default_tz
    needs_offset = any(r.timestamp.tzinfo is None for r in usable)
    missing = missing_metadata(deps, sampling_design=sampling_design, contributors=people, needs_offset=needs_offset)
    if missing:
        how = ""
        if any("latitude" not in d.values or "longitude" not in d.values or (needs_offset and d.tz is None)
               for d in deps):
            out.mkdir(parents=True, exist_ok=True)
            path, written = write_template(deps, out)
            how = ("\n" + (f"fill in {path} (one row per site folder; deploymentStart/End hold the first and last "
                           "photo times: replace them with the setup and pick-up times if you know them) and run "
                           f"again with --deployments {path}") if written else
                   f"\n{path} already exists (not overwritten): complete it and run again with --deployments {path}")
        raise MissingMetadata("Camtrap DP needs what patou cannot know from the photos:\n  - "
                              + "\n  - ".join(missing) + how)

    corrections = load_corrections(results_dir)
    build = _Builder(run, deps, corrections, tax, warn)
    media_rows, placements = build.media_rows(out, media_url, media, capture_method)
    obs_rows = [row for event in events_of(usable) for row in build.observation_rows(event)]
    dep_rows = build.deployment_rows(deployments)

    out.mkdir(parents=True, exist_ok=True)
    if media:  # the photos inside the package, in their input tree; never overwriting a different file
        blur = people_boxes(usable, corrections, build.det_thr) if blur_humans else None
        report = sort_files(SortPlan(placements, out / MEDIA_DIR, roots=run.input_roots, blur=blur), media,
                            log=lambda m: None)
        for msg in report.messages:
            warn(msg)
    descriptor = _descriptor(run, dep_rows, obs_rows, tax, people, title, sampling_design, capture_method,
                             data_license, media_license)
    for table, rows in (("deployments", dep_rows), ("media", media_rows), ("observations", obs_rows)):
        _write_table(out / f"{table}.csv", fields[table], rows)
    with atomic_output(out / "datapackage.json") as tmp:
        tmp.write_text(json.dumps(descriptor, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    result = ExportResult(out, warnings=warnings, counts={
        "deployments": len(dep_rows), "media": len(media_rows),
        "event_observations": sum(o["observationLevel"] == "event" for o in obs_rows),
        "media_observations": sum(o["observationLevel"] == "media" for o in obs_rows),
        "human_verified_events": build.human_events, "left_out_images": len(run.records) - len(usable),
    })
    if validate:
        from .camtrap_dp_validate import validate_package

        try:
            result.problems = report_lines(validate_package(out))
        except RuntimeError as e:  # frictionless not installed
            warn(str(e))
    return result


class _Builder:
    """The rows of the three tables, from the decided records, corrections and deployments."""

    def __init__(self, run, deps: list[Deployment], corrections: dict, tax: dict, warn: Callable[[str], None]):
        self.deps, self.corrections, self.tax, self.warn = deps, corrections, tax, warn
        self.dep_of = {id(r): d for d in deps for r in d.records}
        self.det_thr = float(run.options.get("detection_threshold", DETECTION_THRESHOLD))
        self.thr = Thresholds.from_options(run.options)
        det, cls = (run.info.get("models", {}).get(k, {}) for k in ("detector", "classifier"))
        self.machine = {"classificationMethod": "machine",
                        "classifiedBy": "patou {} ({} v{} + {} v{})".format(
                            run.info.get("patou_version", "?"), det.get("name", "?"), det.get("version", "?"),
                            cls.get("name", "?"), cls.get("version", "?")),
                        "classificationTimestamp": _iso_text(run.info.get("finished"))}
        self.unknown_labels: set[str] = set()
        self.human_events = 0

    def when(self, r: ImageRecord) -> datetime:
        return aware(r.timestamp, self.dep_of[id(r)].tz)

    def correction(self, r: ImageRecord) -> dict | None:
        return self.corrections.get((str(r.root), r.rel))

    def taxon(self, label: str) -> dict:
        row = self.tax.get(label)
        if row is None:
            if label not in self.unknown_labels:
                self.unknown_labels.add(label)
                self.warn(f"label {label!r} is not in the taxonomy table: exported as an animal without "
                          "scientificName; give --taxonomy with a row for it")
            return {"observationType": "animal"}
        return row

    def classification(self, label: str, count: int | None) -> dict:
        t = self.taxon(label)
        row = {"observationType": t["observationType"], "scientificName": t.get("scientificName") or None,
               "observationTags": f"patouLabel:{label}"}
        if t["observationType"] in ("animal", "human", "vehicle"):
            row["count"] = count
        return row

    def boxes(self, r: ImageRecord):
        return [d for d in r.detections if d.conf >= self.det_thr]

    def verified_count(self, images: list[ImageRecord], label: str) -> int | None:
        """Most animals seen at once in the photos a person labelled `label`: their own count when
        they gave one, else the machine's count when it saw that label, else the photo's boxes."""
        per_image = []
        for r in images:
            given = (self.correction(r) or {}).get("count")
            per_image.append(given if given is not None else
                             r.count if r.label == label and r.count else len(self.boxes(r)))
        return max(per_image, default=0) or None

    def media_rows(self, out: Path, media_url: str | None, media: str | None,
                   capture_method: str) -> tuple[list[dict], list[tuple[Path, Path]]]:
        """The media table, and (source, destination) of each file --media puts in the package.

        Camtrap DP's filePath is a URL or a path inside the package (no leading . / ~, no ..)."""
        rows, placements = [], []
        several_roots = len({r.root for d in self.deps for r in d.records}) > 1
        for d in self.deps:
            for r in d.records:
                # people's photos stay private wherever they are hosted
                private = "human" in (r.label, r.event_label, (self.correction(r) or {}).get("label"))
                if media_url:
                    file_path = media_url.rstrip("/") + "/" + r.rel
                elif media:
                    file_path = f"{MEDIA_DIR}/{r.root.name + '/' if several_roots else ''}{r.rel}"
                    placements.append((r.path, out / file_path))
                else:
                    try:
                        file_path = Path(os.path.relpath(r.path, out.resolve())).as_posix()
                    except ValueError:  # another drive (Windows)
                        file_path = r.path.as_posix()
                    if not FILE_PATH.match(file_path):
                        raise ValueError(
                            f"{r.path}: outside the package folder {out}, and Camtrap DP's media.filePath must "
                            "stay inside it (no '..'): give --media copy or --media link to put the photos in "
                            "the package, or --media-url URL where they are published")
                rows.append({
                    "mediaID": _media_id(r), "deploymentID": d.id, "captureMethod": capture_method,
                    "timestamp": iso(self.when(r)), "filePath": file_path,
                    "filePublic": "true" if media_url and not private else "false", "fileName": r.path.name,
                    "fileMediatype": mimetypes.guess_type(r.path.name)[0] or f"image/{r.path.suffix.lstrip('.').lower()}",
                })
        return rows, placements

    def observation_rows(self, event: list[ImageRecord]) -> list[dict]:
        """The event's observation(s), then one media-level row per box of its images."""
        times = [self.when(r) for r in event]
        base = {"deploymentID": self.dep_of[id(event[0])].id, "eventID": event[0].event_id}
        level = {**base, "eventStart": iso(min(times)), "eventEnd": iso(max(times)), "observationLevel": "event"}
        verified = {id(r): c for r in event if (c := self.correction(r))}
        rows = []
        if verified:
            self.human_events += 1
            labels = sorted({c["label"] for c in verified.values()})
            if len(labels) > 1 and EMPTY in labels:  # an empty frame does not make an animal's visit blank
                labels.remove(EMPTY)
            for i, label in enumerate(labels, 1):
                images = [r for r in event if verified.get(id(r), {}).get("label") == label]
                latest = max((verified[id(r)] for r in images), key=lambda c: c.get("verified_at") or "")
                rows.append({**level, "observationID": f"{base['eventID']}-{i}",
                             **self.classification(label, self.verified_count(images, label)), **_human(latest)})
        else:
            label = event[0].event_label or UNDEFINED
            rows.append({**level, "observationID": f"{base['eventID']}-1",  # count: the event's MaxN
                         **self.classification(label, event[0].event_count or None), **self.machine,
                         "classificationProbability": None if label == EMPTY else _prob(event[0].event_score)})

        for r in event:  # media level: the boxes, which tools draw
            media = {**base, "mediaID": _media_id(r), "eventStart": iso(self.when(r)), "eventEnd": iso(self.when(r)),
                     "observationLevel": "media"}
            boxes, corr = self.boxes(r), verified.get(id(r))
            if corr and corr["label"] != EMPTY and not boxes:  # a person saw what the detector missed
                rows.append({**media, "observationID": f"{_media_id(r)}-1",
                             **self.classification(corr["label"], None), **_human(corr)})
            if corr and corr["label"] == EMPTY:
                continue
            for j, d in enumerate(boxes, 1):
                if corr:
                    who = {**self.classification(corr["label"], 1), **_human(corr)}
                else:
                    top = d.top()
                    label = top[0] if top and top[1] >= self.thr.of(top[0]) else UNDEFINED
                    who = {**self.classification(label, 1), **self.machine,
                           "classificationProbability": _prob(top[1] if top else None)}
                rows.append({**media, "observationID": f"{_media_id(r)}-{j}", **_bbox(d), **who})
        return rows

    def deployment_rows(self, source: Path | None) -> list[dict]:
        rows = []
        for d in self.deps:
            row = dict(d.values)
            first, last = aware(d.first, d.tz), aware(d.last, d.tz)
            start, end = (parse_user_time(row[col], d.tz, f"{source}: {d.id} {col}") if col in row else default
                          for col, default in (("deploymentStart", first), ("deploymentEnd", last)))
            if start > first or end < last:
                self.warn(f"deployment {d.id}: photos from {iso(first)} to {iso(last)} fall outside deploymentStart.."
                          f"deploymentEnd ({iso(start)} .. {iso(end)}): check the camera clock or the dates")
            row["deploymentStart"], row["deploymentEnd"] = iso(start), iso(end)
            rows.append(row)
        return rows


def _human(correction: dict) -> dict:
    return {"classificationMethod": "human", "classifiedBy": correction.get("verified_by") or None,
            "classificationTimestamp": _iso_text(correction.get("verified_at"))}


def _prob(p) -> float | None:
    return None if p is None else round(min(max(float(p), 0.0), 1.0), 4)


def _iso_text(text: str | None) -> str | None:
    """An ISO time from run.json/corrections.json in Camtrap DP form (UTC when it has no offset)."""
    if not text:
        return None
    t = datetime.fromisoformat(text)
    return iso(t if t.tzinfo else t.replace(tzinfo=timezone.utc))


def _write_table(path: Path, header: list[str], rows: list[dict]) -> None:
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for row in rows:
            w.writerow(["" if row.get(k) is None else row[k] for k in header])


def _descriptor(run, dep_rows, obs_rows, tax, people, title, sampling_design, capture_method,
                data_license, media_license) -> dict:
    lats = [float(r["latitude"]) for r in dep_rows]
    lons = [float(r["longitude"]) for r in dep_rows]
    if len(set(zip(lats, lons))) == 1:
        spatial = {"type": "Point", "coordinates": [lons[0], lats[0]]}
    else:
        w, e, s, n = min(lons), max(lons), min(lats), max(lats)
        spatial = {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
    taxa: dict[str, dict] = {}
    for label, row in tax.items():
        name = row.get("scientificName")
        if not name or not any(o.get("scientificName") == name for o in obs_rows):
            continue
        entry = taxa.setdefault(name, {"scientificName": name, **{k: row[k] for k in TAXON_KEYS if row.get(k)}})
        for lang in ("eng", "fra"):  # two labels may share a taxon (badger, mustelid): keep both names
            v = row.get(f"vernacular_{lang}")
            names = entry.setdefault("vernacularNames", {})
            if v and v not in names.get(lang, "").split(" / "):
                names[lang] = f"{names[lang]} / {v}" if lang in names else v
    for entry in taxa.values():
        if not entry.get("vernacularNames"):
            entry.pop("vernacularNames", None)
    levels = sorted({o["observationLevel"] for o in obs_rows}, key=["event", "media"].index)
    title = title or f"Camera trap observations from {Path(run.out).resolve().name} (patou)"
    d = {
        "profile": PROFILE_URL,
        "name": re.sub(r"[^a-z0-9._-]+", "-", title.lower()).strip("-") or "patou-export",
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "title": title,
        "contributors": people,
        "description": ("Camera trap images classified by patou (detector and classifier named in "
                        "observations.classifiedBy); events group shots of one site at most "
                        f"{run.options.get('event_gap', 20)} s apart."),
        "sources": [{"title": "patou", "version": str(run.info.get("patou_version", __version__))}],
        "project": {"title": title, "samplingDesign": sampling_design, "captureMethod": [capture_method],
                    "individualAnimals": False, "observationLevel": levels},
        "spatial": spatial,
        "temporal": {"start": min(r["deploymentStart"] for r in dep_rows)[:10],
                     "end": max(r["deploymentEnd"] for r in dep_rows)[:10]},
        "taxonomic": list(taxa.values()),
        "resources": [{"name": t, "path": f"{t}.csv", "profile": "tabular-data-resource", "format": "csv",
                       "mediatype": "text/csv", "encoding": "utf-8", "schema": schema_url(t)} for t in TABLES],
    }
    if data_license:
        d["licenses"] = [{"name": data_license, "scope": "data"}, {"name": media_license, "scope": "media"}]
    return d
