"""`patou models list|install|remove`: the installable models (models/registry.py, convert/install.py)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from .console import err, error, say

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Install publishers' models (DeepFaune...) once, then run them offline with --model NAME.")


@app.command("list")
def list_cmd() -> None:
    """Bundled, installed and installable models: task, classes, size, licence, source."""
    from patou.models.card import ASSETS, ModelCard
    from patou.convert.install import clean_stale_installs, describe_installed
    from patou.models.registry import REGISTRY, models_dir

    for gone in clean_stale_installs():
        say(f"removed {gone}, left by an install that was killed")

    rows = [("name", "status", "task", "version", "classes", "MB", "licence / source")]
    for p in sorted(ASSETS.glob("*.json")):
        c = ModelCard.load(p)
        rows.append((c.name, "bundled", c.task, c.version, str(len(c.labels)),
                     f"{c.onnx_path.stat().st_size / 2**20:.0f}", c.licence))
    installed = describe_installed()
    for r in installed:
        rows.append((r["name"], "installed", r.get("task", "?"), r.get("version", ""), str(r.get("classes", "")),
                     str(r.get("size_mb", "")), r.get("problem") or f"{r['licence']}; {r['source']}"))
    done = {(r["name"], r.get("version")) for r in installed}
    for e in REGISTRY.values():
        for v, ver in e.versions.items():
            rows.append((e.name, "installable" + ("+installed" if (e.name, v) in done else ""), e.task,
                         v + ("*" if v == e.default_version else ""), str(len(ver.classes)),
                         f"~{ver.size_mb}" if ver.size_mb else "?", f"{ver.licence}; {ver.url}"))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for r in rows:  # plain lines: whole in a pipe or a log, where a table would wrap
        print("  ".join(x.ljust(w) for x, w in zip(r, widths)) + "  " + r[6])
    say(f"installed models live in {models_dir()} (set PATOU_MODELS to move them)")


@app.command("install")
def install_cmd(
    name: str = typer.Argument(..., help="A registry model, e.g. deepfaune (see `patou models list`)."),
    version: Optional[str] = typer.Option(None, "--version", help="Model version (default: the newest)."),
    from_file: Optional[Path] = typer.Option(None, "--from", help="Use this downloaded checkpoint instead of downloading (no network)."),
    accept_licence: bool = typer.Option(False, "--accept-licence", help="Accept the model's licence without asking."),
    skip_self_check: bool = typer.Option(False, "--skip-self-check", help="Do not require the demo bear and fox to be recognised (a model you vouch for)."),
    int8: bool = typer.Option(False, "--int8", help="Also install NAME-int8 (dynamic int8), kept only if it agrees with fp32."),
    check: Optional[list[Path]] = typer.Option(None, "--check", help="With --int8: folders of photos where int8 must agree with fp32 too."),
    url: Optional[str] = typer.Option(None, "--url", help="Download from this mirror instead of the publisher."),
    sha256: Optional[str] = typer.Option(None, "--sha256", help="Refuse the file unless its SHA-256 is this."),
    keep_download: bool = typer.Option(False, "--keep-download", help="Keep the downloaded checkpoint after the install."),
) -> None:
    """Download (resumable), verify, convert to ONNX + card, check, and install a model."""
    from patou.convert.install import install

    bar = Progress(TextColumn("[bold]download"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   TimeRemainingColumn(), console=err, transient=True)
    task = None

    def progress(done: int, total: int | None) -> None:
        nonlocal task
        if task is None:  # started on the first bytes, so the licence question is asked without it
            bar.start()
            task = bar.add_task("download", total=total)
        bar.update(task, completed=done, total=total)
        if total and done >= total:
            bar.stop()

    confirm = (lambda q: typer.confirm(q, default=False, err=True)) if sys.stdin.isatty() else None
    try:
        install(name, version, from_file=from_file, accept_licence=accept_licence, confirm=confirm,
                skip_self_check=skip_self_check, int8=int8, check_dirs=check or [], url=url, sha256=sha256,
                keep_download=keep_download, progress=progress, log=say)
    except (ValueError, OSError) as e:
        bar.stop()
        error(e)
        raise typer.Exit(2)
    bar.stop()


@app.command("remove")
def remove_cmd(name: str = typer.Argument(..., help="An installed model's name.")) -> None:
    """Delete an installed model."""
    from patou.convert.install import remove

    try:
        folder = remove(name)
    except (ValueError, OSError) as e:
        error(e)
        raise typer.Exit(2)
    say(f"removed {name} ({folder})")
