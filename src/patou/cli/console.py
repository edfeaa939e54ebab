"""The one console every `patou` verb prints through (stderr), and how they report and fail.

Markup is off: paths, labels and messages are the user's text, and rich would read `[bold]` in a
folder name as a style (eaten) and `[/]` as a closing tag (a crash). Colour comes only from the
fixed prefixes below, never from parsing what is printed. Lines stay whole (soft wrap) in files
and CI logs.
"""
from __future__ import annotations

import typer
from rich.console import Console
from rich.text import Text

err = Console(stderr=True, soft_wrap=True, markup=False, highlight=False)


def say(text, style: str | None = None) -> None:
    """Print `text` as it is (optionally in one style)."""
    err.print(Text(str(text), style=style or ""))


def error(e) -> None:
    """`error: ` and the message (an OSError as its file and reason: a read-only --out, a full disk)."""
    err.print(Text.assemble(("error:", "red"), " ", message(e)))


def message(e) -> str:
    if isinstance(e, OSError):
        return f"{e.filename}: {e.strerror or e}" if e.filename else str(e.strerror or e)
    return str(e)


def warning(text) -> None:
    err.print(Text.assemble(("warning:", "yellow"), " ", str(text)))


def log_to(quiet: bool):
    """Problems always reach stderr; progress notes only without --quiet."""
    def log(m: str) -> None:
        if not quiet or m.startswith(("failed", "warning", "clash", "error", "refused")):
            say(m)
    return log


def fail(e: Exception | str) -> None:
    error(e)
    raise typer.Exit(2)


def needs_extras(what: str, e: ModuleNotFoundError) -> None:
    # torch, scikit-learn, onnx... come with the `train` extra, not with a plain `pip install .`
    fail(f"{what} needs the training extras ({e.name or e} missing): pip install 'patou[train]'")
