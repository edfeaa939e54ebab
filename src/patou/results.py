"""A finished run's folder, read back: the contract between `patou run` and what comes after
(review app, Camtrap DP export, training on corrected labels).

`patou run` writes `RESULTS_DIR/records.jsonl`: one decided ImageRecord per line (boxes with
class scores, image and event verdicts), in the order of predictions.csv. `load_run` gives the
records back with run.json, so later tools rewrite tables from the same records the run wrote
instead of parsing spreadsheets.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .outputs.atomic import atomic_output
from .record import ImageRecord, in_output_order

RECORDS = "records.jsonl"
RESULTS_VERSION = 1  # bump when records.jsonl or run.json change incompatibly


@dataclass
class Run:
    out: Path
    records: list[ImageRecord]
    info: dict  # run.json

    @property
    def options(self) -> dict:
        return self.info.get("options", {})

    @property
    def input_roots(self) -> list[Path]:
        """What a sort or a media copy may take files from: the inputs run.json names, when absolute
        (a relative one depended on the run's working folder), else the records' own roots."""
        inputs = self.options.get("inputs") if isinstance(self.options, dict) else None
        given = [Path(p) for p in inputs if isinstance(p, str)] if isinstance(inputs, list) else []
        if given and all(p.is_absolute() for p in given):
            return given
        return sorted({r.root for r in self.records}, key=str)


def write_records(records: list[ImageRecord], out: Path) -> Path:
    path = Path(out) / RECORDS
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for r in in_output_order(records):
            f.write(json.dumps(r.to_json()) + "\n")
    return path


def read_run_info(out: str | Path) -> dict:
    """RESULTS_DIR's run.json, once the folder is known to be readable (records not read); a
    folder that is not a patou run, or from an incompatible patou, is a ValueError naming the
    folder and the reason."""
    out = Path(out)
    info_path, rec_path = out / "run.json", out / RECORDS
    if not info_path.is_file():
        raise ValueError(f"{out}: not a patou results folder (no run.json)")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        if not isinstance(info, dict):
            raise ValueError(f"{type(info).__name__}, not an object")
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{info_path}: unreadable ({e})") from None
    version = info.get("results_version")
    if version != RESULTS_VERSION or not rec_path.is_file():
        raise ValueError(
            f"{out}: written by patou {info.get('patou_version', '?')} (results format {version}); "
            f"this patou {__version__} reads format {RESULTS_VERSION}: run `patou run` again on the photos")
    return info


def load_run(out: str | Path) -> Run:
    """Read RESULTS_DIR back: run.json (checked as in `read_run_info`) and the decided records."""
    out = Path(out)
    info, rec_path = read_run_info(out), out / RECORDS
    records = []
    with open(rec_path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                records.append(ImageRecord.from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
                raise ValueError(f"{rec_path}: line {n} unreadable ({str(e)[:200]})") from None
    return Run(out, records, info)
