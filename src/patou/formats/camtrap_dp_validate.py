"""Validate a Camtrap DP 1.0 package with frictionless, offline.

A package names its profile and table schemas by their canonical 1.0 URLs (what GBIF and the R
package camtrapdp expect). frictionless would fetch those URLs; here its HTTP session answers
them from the copies shipped in `patou/camtrap_dp_schema/1.0/` and refuses every other URL, so
validation never touches the network and cannot silently pass because a fetch failed.

The profile's first `$ref` is the Data Package v1 profile: frictionless checks every package
against its own built-in Data Package profile before any custom profile, so that URL is answered
with the same built-in profile. The GeoJSON `$ref` (package.spatial) is answered with the GeoJSON
schema that frictionless itself ships.

One repair, in memory only (the shipped profile stays byte-for-byte the 1.0 file): the 1.0 profile
writes `"$ref": "#$defs/version"`, which current jsonschema/referencing reject as an invalid
anchor (tdwg/camtrap-dp issue 381); it is served as the JSON pointer `#/$defs/version` it means.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "camtrap_dp_schema" / "1.0"
BASE_URL = "https://raw.githubusercontent.com/tdwg/camtrap-dp/1.0/"
PROFILE_URL = BASE_URL + "camtrap-dp-profile.json"
TABLES = ("deployments", "media", "observations")
DATA_PACKAGE_URL = "https://frictionlessdata.io/schemas/data-package.json"
GEOJSON_URL = "http://json.schemastore.org/geojson.json"


def schema_url(table: str) -> str:
    return f"{BASE_URL}{table}-table-schema.json"


def load_table_schema(table: str) -> dict:
    return json.loads((SCHEMA_DIR / f"{table}-table-schema.json").read_text(encoding="utf-8"))


def _offline_documents(schema_dir: Path = SCHEMA_DIR) -> dict[str, bytes]:
    import frictionless
    from frictionless import Package

    profile = (schema_dir / "camtrap-dp-profile.json").read_bytes()
    docs = {PROFILE_URL: profile.replace(b'"#$defs/version"', b'"#/$defs/version"')}
    for t in TABLES:
        docs[schema_url(t)] = (schema_dir / f"{t}-table-schema.json").read_bytes()
    docs[DATA_PACKAGE_URL] = json.dumps(Package.metadata_ensure_profile()).encode()
    docs[GEOJSON_URL] = (Path(frictionless.__file__).parent / "assets/profiles/geojson.json").read_bytes()
    return docs


def _offline_session(schema_dir: Path = SCHEMA_DIR):
    """A requests session whose every http(s) request is answered from the shipped files."""
    import requests
    from requests.adapters import BaseAdapter

    docs = _offline_documents(schema_dir)

    class LocalOnly(BaseAdapter):
        def send(self, request, **kwargs):
            response = requests.Response()
            response.url, response.request = request.url, request
            body = docs.get(request.url)
            if body is None:  # not shipped: fail loudly instead of fetching
                response.status_code, response.reason = 404, "not available offline (patou ships no copy)"
                body = b""
            else:
                response.status_code, response.reason = 200, "OK"
            response.raw = io.BytesIO(body)
            return response

        def close(self):
            pass

    session = requests.Session()
    session.mount("http://", LocalOnly())
    session.mount("https://", LocalOnly())
    return session


def validate_package(package_dir: str | Path, schema_dir: str | Path = SCHEMA_DIR):
    """frictionless's validation report of PACKAGE_DIR/datapackage.json against Camtrap DP 1.0
    (package profile, table schemas, primary and foreign keys), without network.

    `schema_dir`: another folder with the profile and the three table schemas, served for the same
    URLs (tests check exports against the official files this way)."""
    try:
        from frictionless import system, validate
    except ImportError:
        raise RuntimeError("validation needs frictionless: pip install 'patou[camtrap-dp]'") from None
    descriptor = Path(package_dir) / "datapackage.json"
    with system.use_context(http_session=_offline_session(Path(schema_dir))):
        # validate() turns a broken descriptor into report errors instead of raising
        return validate(str(descriptor))


def report_lines(report) -> list[str]:
    """One line per problem, for people: where (resource, row, field) and what."""
    lines = [f"package: {e.note}" for e in report.errors]
    for task in report.tasks:
        for e in task.errors:
            where = [task.name]
            if getattr(e, "row_number", None):
                where.append(f"row {e.row_number}")
            if getattr(e, "field_name", None):
                where.append(e.field_name)
            lines.append(f"{', '.join(where)}: {e.title}: {e.note}")
    return lines
