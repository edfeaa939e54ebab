"""Deployments for a Camtrap DP package: what the photos tell (sites, first and last shot) joined
with what only the field team knows (coordinates, clock offset, camera setup).

patou makes one deployment per site folder of the run. A user's deployments CSV (Camtrap DP
deployments columns, plus `utcOffset`) is matched to them by `deploymentID`, or by
`locationName` when the ID is empty. Coordinates are never guessed: a site without them is
listed in a `MissingMetadata` error, and a template CSV with one pre-filled row per site is
written for the user to complete.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ..record import ImageRecord
from ..atomic import atomic_output

TEMPLATE = "deployments-template.csv"
# Columns of the template, in the order a field biologist fills them in; all but utcOffset
# are Camtrap DP 1.0 deployments fields.
TEMPLATE_COLUMNS = [
    "deploymentID", "locationID", "locationName", "latitude", "longitude", "coordinateUncertainty",
    "utcOffset", "deploymentStart", "deploymentEnd", "setupBy", "cameraID", "cameraModel", "cameraDelay",
    "cameraHeight", "cameraTilt", "cameraHeading", "detectionDistance", "timestampIssues", "baitUse",
    "featureType", "habitat", "deploymentGroups", "deploymentTags", "deploymentComments",
]
_OFFSET = re.compile(r"^(?:Z|UTC|GMT|(?:UTC|GMT)?([+-])(\d{1,2})(?::?(\d{2}))?)$", re.IGNORECASE)


class MissingMetadata(ValueError):
    """Required Camtrap DP metadata that only the user can give; the message says how."""


@dataclass
class Deployment:
    id: str
    root: str
    site: str
    records: list[ImageRecord] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict)  # from the user's CSV, Camtrap DP columns
    tz: timezone | None = None

    @property
    def first(self) -> datetime | None:
        times = [r.timestamp for r in self.records if r.timestamp]
        return min(times) if times else None

    @property
    def last(self) -> datetime | None:
        times = [r.timestamp for r in self.records if r.timestamp]
        return max(times) if times else None


def parse_utc_offset(text: str, where: str) -> timezone:
    """'+01:00', '-5', '+0530', 'Z', 'UTC+2' -> a fixed offset (camera clocks ignore summer time)."""
    m = _OFFSET.match(text.strip())
    if not m:
        raise ValueError(f"{where}: UTC offset {text!r} not understood; write it like +01:00, -05:00 or Z")
    if not m.group(1):
        return timezone.utc
    minutes = int(m.group(2)) * 60 + int(m.group(3) or 0)
    if minutes > 14 * 60:
        raise ValueError(f"{where}: UTC offset {text!r} is beyond +-14:00")
    return timezone(timedelta(minutes=minutes if m.group(1) == "+" else -minutes))


def site_deployments(records: list[ImageRecord]) -> list[Deployment]:
    """One deployment per (input root, site); the ID is the site folder ('.' -> the root's name),
    prefixed with the root's name only when two roots share a site name."""
    groups: dict[tuple[str, str], list[ImageRecord]] = {}
    for r in records:
        groups.setdefault((str(r.root), r.site), []).append(r)

    def base(root: str, site: str) -> str:
        return Path(root).name if site in ("", ".") else site

    names = [base(*k) for k in groups]
    deps = []
    for (root, site), recs in sorted(groups.items()):
        dep_id = base(root, site)
        if names.count(dep_id) > 1:
            dep_id = f"{Path(root).name}/{dep_id}"
        deps.append(Deployment(dep_id, root, site, recs))
    return deps


def read_deployments_csv(path: str | Path, known_fields: list[str]) -> tuple[list[dict], list[str]]:
    """Rows of the user's CSV (stripped strings) and warnings about columns patou ignores."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel's UTF-8 BOM
            sample = f.read(4096)
            f.seek(0)
            try:
                dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
            except csv.Error:
                dialect = csv.excel
            reader = csv.DictReader(f, dialect=dialect)
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
            header = [h.strip() for h in reader.fieldnames or []]
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the deployments CSV ({e})") from None
    if "deploymentID" not in header and "locationName" not in header:
        raise ValueError(f"{path}: needs a deploymentID (or locationName) column naming each site folder")
    ignored = [h for h in header if h and h not in known_fields and h != "utcOffset"]
    warnings = [f"{path}: column {h!r} is not a Camtrap DP 1.0 deployments field; ignored" for h in ignored]
    return rows, warnings


def attach_user_values(deps: list[Deployment], rows: list[dict], known_fields: list[str], path: Path,
                       default_tz: timezone | None) -> list[str]:
    """Give each deployment its row's values; return warnings (rows that match no site)."""
    by_id = {d.id: d for d in deps}
    warnings = []
    for n, row in enumerate(rows, 2):  # row 1 is the header
        key = row.get("deploymentID") or row.get("locationName") or ""
        dep = by_id.get(key)
        if dep is None:
            if any(row.values()):
                warnings.append(f"{path}: row {n}: {key!r} matches no site folder of the run "
                                f"(sites: {', '.join(sorted(by_id))}); row ignored")
            continue
        dep.values = {k: v for k, v in row.items() if k in known_fields and v != ""}
        dep.values["deploymentID"] = dep.id
        if row.get("utcOffset"):
            dep.tz = parse_utc_offset(row["utcOffset"], f"{path}: row {n}")
        for col in ("latitude", "longitude"):
            if col in dep.values:
                text = dep.values[col]
                if "." not in text and text.count(",") == 1:  # a decimal comma (semicolon-separated CSV)
                    text = text.replace(",", ".")
                try:
                    value = float(text)
                except ValueError:
                    raise ValueError(f"{path}: row {n}: {col} {dep.values[col]!r} is not a number "
                                     "(decimal degrees, WGS84, e.g. 42.7913)") from None
                limit = 90 if col == "latitude" else 180
                if not -limit <= value <= limit:
                    raise ValueError(f"{path}: row {n}: {col} {value} is outside -{limit}..{limit}")
                dep.values[col] = repr(value)
    for dep in deps:
        if dep.tz is None:
            dep.tz = default_tz
    return warnings


def missing_metadata(deps: list[Deployment], *, sampling_design: str | None, contributors: list,
                     needs_offset: bool) -> list[str]:
    """What Camtrap DP requires and patou cannot know, one line per item."""
    missing = []
    no_coords = [d.id for d in deps if "latitude" not in d.values or "longitude" not in d.values]
    if no_coords:
        missing.append(f"latitude and longitude (WGS84 decimal degrees) of deployment(s): {', '.join(no_coords)}")
    no_tz = [d.id for d in deps if d.tz is None]
    if needs_offset and no_tz:
        missing.append("the camera clocks' offset from UTC (photo times carry none): --utc-offset +01:00 "
                       f"for all, or a utcOffset column per deployment (missing for: {', '.join(no_tz)})")
    if not sampling_design:
        missing.append("the sampling design: --sampling-design simpleRandom | systematicRandom | "
                       "clusteredRandom | experimental | targeted | opportunistic")
    if not contributors:
        missing.append('at least one contact person: --contributor "Name <email>"')
    return missing


def write_template(deps: list[Deployment], out: Path) -> tuple[Path, bool]:
    """PACKAGE_DIR/deployments-template.csv, one row per site with what is known filled in.
    An existing template (perhaps half filled in by the user) is never overwritten."""
    path = Path(out) / TEMPLATE
    if path.exists():
        return path, False
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, TEMPLATE_COLUMNS)
        w.writeheader()
        for d in deps:
            row = {"deploymentID": d.id, "locationName": d.site if d.site not in ("", ".") else d.id}
            row.update({k: v for k, v in d.values.items() if k in TEMPLATE_COLUMNS})
            if d.tz is not None and "utcOffset" not in row:
                row["utcOffset"] = format_offset(d.tz)
            for col, t in (("deploymentStart", d.first), ("deploymentEnd", d.last)):
                if col not in row and t is not None:
                    row[col] = t.isoformat(timespec="seconds")
            w.writerow(row)
    return path, True


def format_offset(tz: timezone) -> str:
    s = datetime(2000, 1, 1, tzinfo=tz).strftime("%z")
    return "Z" if s == "+0000" else f"{s[:3]}:{s[3:]}"


def aware(t: datetime, tz: timezone | None) -> datetime:
    """A photo or user time with its offset: EXIF times are local and naive."""
    if t.tzinfo is not None:
        return t
    if tz is None:
        raise MissingMetadata("a time without a UTC offset: give --utc-offset")
    return t.replace(tzinfo=tz)


def iso(t: datetime) -> str:
    """Camtrap DP datetime: YYYY-MM-DDThh:mm:ss+hh:mm (or Z)."""
    s = t.isoformat(timespec="seconds")
    return s[:-6] + "Z" if s.endswith("+00:00") else s


def parse_user_time(text: str, tz: timezone | None, where: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not a date-time like 2024-05-01T09:30:00+02:00") from None
    if t.tzinfo is None and tz is None:
        raise MissingMetadata(f"{where}: {text!r} has no UTC offset: add one, a utcOffset column, or --utc-offset")
    return aware(t, tz)
