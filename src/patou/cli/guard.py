"""`patou guard`: its options are GuardOptions' fields (patou/options.py); one of --watch (and/or
--stream), --replay, --status or --check-rules says what to do with them."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from ..options import GuardOptions
from .console import error, fail, say
from .options import options_after


@options_after("check_rules", GuardOptions)
def guard_cmd(
    watch: Optional[Path] = typer.Option(None, "--watch", help="Incoming folder of a field camera: each new image is decided as it arrives."),
    replay: Optional[Path] = typer.Option(None, "--replay", help="Offline: run a folder of photos in timestamp order, print what would fire."),
    status: bool = typer.Option(False, "--status", help="Print the cameras, last events, firings and notifications (with photos), failures and latency from --db."),
    check_rules: Optional[Path] = typer.Option(None, "--check-rules", help="Explain each rule of a rules file in words (or say which line is wrong) and exit."),
    **options,
) -> None:
    """Watch a camera's incoming folder or live streams and fire a deterrent when the target (a bear) comes."""
    try:
        opts = GuardOptions.from_cli(options)
    except ValueError as e:  # a bad --threshold text
        fail(e)
    live = (watch is not None or bool(opts.streams)) or None
    if sum(x is not None and x is not False for x in (live, replay, status or None, check_rules)) != 1:
        error("give exactly one of --watch DIR / --stream URL, --replay DIR, --status or --check-rules FILE")
        raise typer.Exit(2)
    if opts.rules is not None and (opts.actions or opts.notify):
        fail(ValueError(f"--rules {opts.rules}: the actions are the rules' (give no --action or --notify with it)"))
    try:
        if status:
            from ..guard.status import status as status_text

            print(status_text(opts.db))
        elif check_rules is not None:
            from ..guard.rules import check

            print(check(check_rules, opts.model))
        elif replay is not None:
            from ..guard.replay import replay as run_replay

            run_replay(replay, log=say, **opts.kwargs_for(run_replay))
        else:
            from ..guard import Guard, guard

            guard(watch, log=say, **opts.kwargs_for(Guard))
    except (ValueError, OSError) as e:
        fail(e)
