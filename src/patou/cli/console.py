"""The one console every `patou` verb writes to (stderr), and how they report and fail."""
from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

err = Console(stderr=True, soft_wrap=True)  # log lines stay whole in files and CI logs


def say(m: str) -> None:
    """A line as it is (no markup, no highlighting: paths and labels are text)."""
    err.print(m, markup=False, highlight=False)


def log_to(quiet: bool):
    """Problems always reach stderr; progress notes only without --quiet."""
    def log(m: str) -> None:
        if not quiet or m.startswith(("failed", "warning", "clash", "error")):
            say(m)
    return log


def fail(e: Exception | str) -> None:
    err.print(f"[red]error:[/] {escape(str(e))}", highlight=False)  # "[train]", "[1]" in paths: text
    raise typer.Exit(2)


def needs_extras(what: str, e: ModuleNotFoundError) -> None:
    # torch, scikit-learn, onnx... come with the `train` extra, not with a plain `pip install .`
    fail(f"{what} needs the training extras ({e.name or e} missing): pip install 'patou[train]'")
