"""`patou report`: one HTML page for the field team, from a finished run."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .console import fail, say


def report_cmd(
    results_dir: Path = typer.Argument(..., metavar="RESULTS_DIR", help="A finished `patou run` results folder."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file to write; its CSV go in <name>-data/ beside it [default: RESULTS_DIR/report.html]."),
    deployments: Optional[Path] = typer.Option(None, help="Deployments CSV (as for export-camtrap-dp): deploymentStart/End give camera-days and flag photos outside them."),
    gap_days: int = typer.Option(14, help="Days without a photo that make a gap, or a silence at the end."),
    burst_photos: int = typer.Option(300, help="Photos in one day that make a burst (vegetation, sun)."),
    earliest: str = typer.Option("2010-01-01", help="Photos dated before this are a clock problem."),
) -> None:
    """One HTML page for the field team: camera health, species, RAI, occupancy, activity, what to review."""
    from datetime import date

    from ..report import Rules, write_report

    try:
        rules = Rules(earliest=date.fromisoformat(earliest), gap_days=gap_days, burst_photos=burst_photos)
    except ValueError:
        fail(f"--earliest {earliest!r}: give a date like 2010-01-01")
    try:
        written = write_report(results_dir, out, deployments, rules, log=say)
    except ModuleNotFoundError as e:  # matplotlib is a dependency; a broken install says so
        fail(f"patou report needs {e.name or e}: pip install 'matplotlib==3.11.2'")
    except (ValueError, OSError) as e:
        fail(e)
    rep = written.report
    say(f"{len(rep.season.photos)} photos, {rep.season.events} events, {rep.n_sites} sites, "
        f"{rep.health.camera_days} camera-days; {sum(1 for s in rep.health.sites if s.findings)} site(s) "
        f"flagged; report: {written.html} (CSV in {written.csv_dir})")
