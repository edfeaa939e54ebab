"""Every `patou` command's help text and option set, so a refactor cannot change what a user sees.

    PYTHONPATH=src python tests/cli_reference.py --write   # record tests/data/cli_reference.json

Each command (verbs and sub-verbs: run, train, ..., models install, reid search) is reduced to its
help page as typer renders it at a fixed width, and to its parameters as click sees them (names,
flags, type, default, required, help); tests/test_cli_reference.py compares today's with the record.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "data" / "cli_reference.json"
WIDTH = 120


def _param(p) -> dict:
    return {"name": p.name, "kind": type(p).__name__, "opts": list(p.opts), "secondary_opts": list(p.secondary_opts),
            "type": repr(getattr(getattr(p, "type_descriptor", None), "annotation", None)), "required": p.required, "default": repr(p.default),
            "multiple": getattr(p, "multiple", False), "is_flag": getattr(p, "is_flag", False),
            "nargs": p.nargs, "help": getattr(p, "help", None), "metavar": p.metavar,
            "show_default": repr(getattr(p, "show_default", None)), "hidden": getattr(p, "hidden", False)}


def commands(group=None, path: tuple = ()) -> dict[tuple, object]:
    """{command path: click command} for the whole tree, the root included."""
    import typer

    from patou.cli import app

    group = group or typer.main.get_command(app)
    found = {path: group}
    if hasattr(group, "commands"):  # a group (typer vendors its own click)
        for name in sorted(group.commands):
            found.update(commands(group.commands[name], path + (name,)))
    return found


def help_text(path: tuple) -> str:
    from typer.testing import CliRunner

    from patou.cli import app

    res = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(WIDTH), "TERMINAL_WIDTH": str(WIDTH)},
                             terminal_width=WIDTH)
    assert res.exit_code == 0, (path, res.output)
    return res.output


def snapshot() -> dict:
    os.environ.setdefault("COLUMNS", str(WIDTH))
    out = {}
    for path, cmd in commands().items():
        out[" ".join(("patou",) + path)] = {"params": [_param(p) for p in cmd.params], "help": help_text(path)}
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help=f"write {REFERENCE.relative_to(ROOT)} (else print it)")
    text = json.dumps(snapshot(), indent=1, sort_keys=True) + "\n"
    if ap.parse_args().write:
        REFERENCE.write_text(text)
    sys.stdout.write("" if ap.parse_args().write else text)
