"""`patou guard`: its options are GuardOptions' fields (patou/options.py); one of --watch, --replay
or --status says what to do with them."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from ..options import GuardOptions
from .console import error, fail, say
from .options import options_after


@options_after("status", GuardOptions)
def guard_cmd(
    watch: Optional[Path] = typer.Option(None, "--watch", help="Incoming folder of a field camera: each new image is decided as it arrives."),
    replay: Optional[Path] = typer.Option(None, "--replay", help="Offline: run a folder of photos in timestamp order, print what would fire."),
    status: bool = typer.Option(False, "--status", help="Print the last events, triggers, failures and latency from --db."),
    **options,
) -> None:
    """Watch a camera's incoming folder and fire a deterrent when the target (a bear) comes."""
    try:
        opts = GuardOptions.from_cli(options)
    except ValueError as e:  # a bad --threshold text
        fail(e)
    if sum(x is not None and x is not False for x in (watch, replay, status or None)) != 1:
        error("give exactly one of --watch DIR, --replay DIR or --status")
        raise typer.Exit(2)
    try:
        if status:
            from ..guard.status import status as status_text

            print(status_text(opts.db))
        elif replay is not None:
            from ..guard.replay import replay as run_replay

            run_replay(replay, log=say, **opts.kwargs_for(run_replay))
        else:
            from ..guard import Guard, guard

            guard(watch, log=say, **opts.kwargs_for(Guard))
    except (ValueError, OSError) as e:
        fail(e)

