"""Read a patou results folder with CamTrapTools, as a user of that tool would.

    python tools/camtraptools_check.py RESULTS_DIR --work WORK_DIR [--images PHOTOS_DIR]

1. `camtraptools ingest PHOTOS_DIR` (the run's first input unless --images), then `import` of
   RESULTS_DIR/megadetector.json and `events`: prints CamTrapTools' events table (independent
   animal events per taxon and deployment). Species that reach it as "unidentified animal" did not
   travel.
2. `patou export-camtrap-dp RESULTS_DIR --media link` with placeholder coordinates (45.0, 1.0 for
   every site: this checks file reading, not geography), then `camtraptools labels` on that
   package: how many observations it reads back as labels.

CamTrapTools (MIT, `pip install camtraptools`, in patou's dev extra) needs no network for these
commands. Everything lands under WORK_DIR (never inside RESULTS_DIR or the photos).
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def _run(*args: str) -> str:
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"{' '.join(map(str, args))} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p.stdout


def events_table(results: Path, images: Path, work: Path) -> str:
    """CamTrapTools' `events` output after importing RESULTS_DIR/megadetector.json."""
    pkg = work / "ctt-md"
    shutil.rmtree(pkg, ignore_errors=True)
    _run(BIN / "camtraptools", "ingest", images, "--out", pkg)
    _run(BIN / "camtraptools", "import", pkg, results / "megadetector.json")
    return _run(BIN / "camtraptools", "events", pkg)


def labels_of_export(results: Path, images: Path, work: Path) -> str:
    """`camtraptools labels` on patou's Camtrap DP export of RESULTS_DIR."""
    pkg, dp = work / "ctt-labels", work / "camtrap-dp"
    for d in (pkg, dp):
        shutil.rmtree(d, ignore_errors=True)
    _run(BIN / "camtraptools", "ingest", images, "--out", pkg)
    common = [BIN / "patou", "export-camtrap-dp", results, "--out", dp, "--media", "link", "--utc-offset", "+00:00",
              "--sampling-design", "opportunistic", "--contributor", "Check <check@example.org>"]
    p = subprocess.run([str(a) for a in common], capture_output=True, text=True)  # asks for coordinates first
    template = dp / "deployments-template.csv"
    if not template.is_file():
        raise SystemExit(f"patou export-camtrap-dp wrote no template:\n{p.stdout}\n{p.stderr}")
    with open(template, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    filled = work / "deployments.csv"
    with open(filled, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows({**r, "latitude": "45.0", "longitude": "1.0"} for r in rows)
    template.unlink()
    _run(*common, "--deployments", filled)
    with open(dp / "observations.csv", newline="", encoding="utf-8") as f:
        obs = list(csv.DictReader(f))
    out = _run(BIN / "camtraptools", "labels", pkg, dp, "--out", work / "labels.csv")
    levels = {lev: sum(o["observationLevel"] == lev for o in obs) for lev in ("event", "media")}
    counted = sum(bool(o["count"]) for o in obs if o["observationLevel"] == "event")
    return (f"patou's package: {levels['event']} event observations ({counted} with a count), "
            f"{levels['media']} media observations\n{out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--images", type=Path, help="the photos (default: the run's first input)")
    a = ap.parse_args()
    info = json.loads((a.results / "run.json").read_text(encoding="utf-8"))
    images = a.images or Path(info["options"]["inputs"][0])
    a.work.mkdir(parents=True, exist_ok=True)
    print(f"patou {info.get('patou_version')} run of {images}\n")
    print("== camtraptools events (after import of megadetector.json)")
    print(events_table(a.results, images, a.work))
    print("== camtraptools labels (on patou's Camtrap DP export)")
    print(labels_of_export(a.results, images, a.work))


if __name__ == "__main__":
    main()
