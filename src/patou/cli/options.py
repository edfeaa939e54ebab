"""A command's typer options made from an options record (patou.options): one field, one CLI option.

    @options_after("out", RunOptions)
    def run_cmd(inputs: ..., out: ..., quiet: ..., **options): opts = RunOptions.from_cli(options)

The decorated function's signature gets one `typer.Option` per record field (its default, flags,
type and help), inserted after the parameter named; typer reads that signature, so the command's
--help lists them in the record's order and passes their values in `**options`.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Callable, Optional

import typer


def typer_parameters(record) -> list[inspect.Parameter]:
    params = []
    for f in record.fields():
        m = f.metadata
        if not m.get("on_cli", True):
            continue
        default = m["cli_default"]
        if default is dataclasses.MISSING:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if m.get("invert"):
            default = not default
        annotation = m["cli"] if default is not None else Optional[m["cli"]]
        info = typer.Option(default, *m["flags"], help=m["help"] or None)
        params.append(inspect.Parameter(m.get("cli_name") or f.name, inspect.Parameter.KEYWORD_ONLY,
                                        default=info, annotation=annotation))
    return params


def options_after(name: str, record) -> Callable:
    """Give the command `record`'s options after its parameter `name` (see the module docstring)."""
    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn, eval_str=True)
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in sig.parameters.values()
               if p.kind is not inspect.Parameter.VAR_KEYWORD]
        at = [p.name for p in own].index(name) + 1
        fn.__signature__ = sig.replace(parameters=own[:at] + typer_parameters(record) + own[at:])
        return fn
    return decorate
