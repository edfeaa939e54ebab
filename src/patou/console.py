"""The one console every command prints through.

Markup is off: paths, labels and messages are the user's text, and rich would read `[bold]` in a
folder name as a style (eaten) and `[/]` as a closing tag (a crash). Colour comes only from the
fixed prefixes below, never from parsing what is printed. Lines stay whole (soft wrap) in files
and CI logs.
"""
from __future__ import annotations

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
