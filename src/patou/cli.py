"""The `patou` command: one verb per job, every option also reachable from Python."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .api import DEFAULT_DETECTION_THRESHOLD, DEFAULT_THRESHOLD

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Camera-trap AI, offline, on a CPU.")
err = Console(stderr=True)


@app.callback()
def main() -> None:
    """patou: detect, classify and sort camera-trap images."""


@app.command("run")
def run_cmd(
    inputs: list[Path] = typer.Argument(None, help="Folders or files of camera-trap images (searched recursively)."),
    out: Path = typer.Option(..., "--out", "-o", help="Results folder (predictions.csv/.xlsx, megadetector.json, run.json)."),
    demo: bool = typer.Option(False, "--demo", help="Run on the bundled sample images."),
    model: Optional[Path] = typer.Option(None, "--model", help="Classifier folder (model .onnx + card .json); default: bundled ImageNet roll-up."),
    detection_threshold: float = typer.Option(DEFAULT_DETECTION_THRESHOLD, help="Boxes below this detector confidence are ignored; no box left = empty."),
    threshold: float = typer.Option(DEFAULT_THRESHOLD, help="Class score below which the label is 'undefined'."),
    target: Optional[str] = typer.Option(None, help="A label (e.g. bear) whose score gets its own columns, for recall-first screening."),
    event_gap: float = typer.Option(20.0, help="Seconds between shots of one site that still belong to one event."),
    site_depth: Optional[int] = typer.Option(None, help="Folder levels below the input root that name the site (default: the whole parent folder)."),
    sort: Optional[str] = typer.Option(None, help="copy | move | link each image into SORT_DIR/<event label>/."),
    sort_dir: Optional[Path] = typer.Option(None, help="Where --sort puts the per-label folders."),
    dry_run: bool = typer.Option(False, "--dry-run", help="With --sort: print the plan, touch nothing."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed run in the same --out folder."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for inference (default: all cores)."),
    no_flip: bool = typer.Option(False, "--no-flip", help="Skip test-time flip (faster, a little less accurate)."),
    fast: bool = typer.Option(False, "--fast", help="Use the int8 detector (about 1.9x faster, same boxes on the real test images)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary, only errors."),
) -> None:
    """Detect animals, classify them, group shots into events, write reports, optionally sort files."""
    from .api import run

    if not demo and not inputs:
        err.print("[red]error:[/] give at least one folder of images, or --demo")
        raise typer.Exit(2)
    log = (lambda m: err.print(m, markup=False, highlight=False) if m.startswith(("failed", "warning", "clash", "error")) else None) if quiet else (
        lambda m: err.print(m, markup=False, highlight=False))
    bar = Progress(TextColumn("[bold]patou"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                   TimeRemainingColumn(), console=err, disable=quiet, transient=False)
    task = bar.add_task("run", total=None, rate="")
    import time

    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        rate = done / max(time.perf_counter() - start, 1e-9)
        bar.update(task, completed=done, total=total, rate=f"{rate:.1f} img/s")

    try:
        with bar:
            result = run(
                inputs, out, demo=demo, model=model, detection_threshold=detection_threshold, threshold=threshold,
                target=target, event_gap=event_gap, site_depth=site_depth, sort=sort, sort_dir=sort_dir,
                dry_run=dry_run, resume=resume, threads=threads, flip=not no_flip, fast=fast, log=log, progress=progress,
            )
    except ValueError as e:
        err.print(f"[red]error:[/] {e}", highlight=False)
        raise typer.Exit(2)
    if not quiet:
        _summary(result)
    raise typer.Exit(result.exit_code)


@app.command("serve")
def serve_cmd(
    results: list[Path] = typer.Argument(None, metavar="RESULTS_DIR", help="Results folders of earlier runs to review."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on; the default is reachable from this computer only."),
    port: int = typer.Option(8000, help="Port to listen on."),
    runs_dir: Path = typer.Option(Path("patou-runs"), help="Where runs started from the page write their results."),
    open_browser: bool = typer.Option(False, "--open", help="Open the page in the default web browser."),
) -> None:
    """Open the review app in the browser: start runs, review and correct their labels, export."""
    import uvicorn

    from .web import create_app

    hosts = None if host in ("127.0.0.1", "localhost") else ["*"]  # a chosen address: any Host header
    if hosts:
        err.print(f"[yellow]warning:[/] listening on {host}: other computers that reach it can read your photos")
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/"
    err.print(f"patou review app: {url}  (Ctrl+C to stop)")
    if open_browser:
        import threading
        import webbrowser

        threading.Timer(1.0, webbrowser.open, [url]).start()  # once the server listens
    uvicorn.run(create_app(results or [], runs_dir, allowed_hosts=hosts), host=host, port=port, log_level="warning")


def _summary(result) -> None:
    c, t = result.counts, result.timings
    err.print(f"[bold]{c['images']} images, {c['events']} events, {c['failures']} failures[/]")
    table = Table(show_edge=False)
    table.add_column("label")
    table.add_column("images", justify="right")
    table.add_column("events", justify="right")
    for label in sorted(set(c["labels"]) | set(c["event_labels"])):
        table.add_row(label, str(c["labels"].get(label, 0)), str(c["event_labels"].get(label, 0)))
    err.print(table)
    err.print(f"{t['images_per_s'] or '-'} images/s; results in {result.out}")


if __name__ == "__main__":
    app()
