"""`patou run`: its options are RunOptions' fields (patou/options.py), plus what only a terminal needs."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from ..options import RunOptions
from .console import err, error, fail, log_to, say
from .options import options_after


@options_after("out", RunOptions)
def run_cmd(
    inputs: list[Path] = typer.Argument(None, metavar="PHOTOS", show_default=False, help="Folders or files of camera-trap images (searched recursively)."),
    out: Path = typer.Option(..., "--out", "-o", help="Results folder (predictions.csv/.xlsx, megadetector.json, run.json)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary, only errors."),
    reid_gallery: Optional[Path] = typer.Option(None, "--reid-gallery", help="Known individuals (KNOWN_DIR/<id>/*.jpg): rank them for each image (reid-candidates.csv, shown in the review app)."),
    reid_model: Optional[Path] = typer.Option(None, "--reid-model", help="With --reid-gallery: an embedding model from `patou reid train` (default: bundled ImageNet features)."),
    **options,
) -> None:
    """Detect animals, classify them, group shots into events, write reports, optionally sort files."""
    from ..api import NothingToDo, run

    opts = RunOptions.from_cli(options)
    if not opts.demo and not inputs:
        error("give at least one folder of images, or --demo")
        raise typer.Exit(2)
    log = log_to(quiet)
    bar = Progress(TextColumn("[bold]patou"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                   TimeRemainingColumn(), console=err, disable=quiet, transient=False)
    task = bar.add_task("run", total=None, rate="")
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if not bar.live.is_started:  # drawn from the first image on: an early error stays one line
            bar.start()
        rate = done / max(time.perf_counter() - start, 1e-9)
        bar.update(task, completed=done, total=total, rate=f"{rate:.1f} img/s")

    try:
        result = run(inputs, out, log=log, progress=progress, options=opts)
    except NothingToDo as e:
        error(e) if e.exit_code else say(e)
        raise typer.Exit(e.exit_code)
    except (ValueError, OSError) as e:
        fail(e)
    finally:
        if bar.live.is_started:
            bar.stop()
    if reid_gallery:  # after the run: its boxes are reused, its results stay as written
        from ..reid.runs import identify_run

        try:
            identify_run(out, reid_gallery, model=reid_model, threads=opts.threads, log=log)
        except (ValueError, OSError) as e:
            fail(e)
    if not quiet:
        _summary(result)
    raise typer.Exit(result.exit_code)


def _summary(result) -> None:
    c, t = result.counts, result.timings
    say(f"{c['images']} images, {c['events']} events, {c['failures']} failures", "bold")
    table = Table(show_edge=False)
    table.add_column("label")
    table.add_column("images", justify="right")
    table.add_column("events", justify="right")
    for label in sorted(set(c["labels"]) | set(c["event_labels"])):
        table.add_row(Text(label), str(c["labels"].get(label, 0)), str(c["event_labels"].get(label, 0)))
    err.print(table)
    say(f"{t['images_per_s'] or '-'} images/s; results in {result.out}")
