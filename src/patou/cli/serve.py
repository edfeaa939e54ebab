"""`patou serve`: the local review app."""
from __future__ import annotations

from pathlib import Path

import typer

from .console import say, warning


def serve_cmd(
    results: list[Path] = typer.Argument(None, metavar="RESULTS_DIR", help="Results folders of earlier runs to review."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on; the default is reachable from this computer only."),
    port: int = typer.Option(8000, help="Port to listen on."),
    runs_dir: Path = typer.Option(Path("patou-runs"), help="Where runs started from the page write their results."),
    open_browser: bool = typer.Option(False, "--open", help="Open the page in the default web browser."),
    allow_dir: list[Path] = typer.Option([], "--allow-dir", help="A folder that runs and sorts started from the page may read and write (repeatable); the RESULTS_DIRs and --runs-dir always may [default: also the current folder]."),
) -> None:
    """Open the review app in the browser: start runs, review and correct their labels, export."""
    import uvicorn

    from ..web import create_app

    hosts = None if host in ("127.0.0.1", "localhost") else ["*"]  # a chosen address: any Host header
    if hosts:
        warning(f"listening on {host}: other computers that reach it can read your photos")
    allowed = [*allow_dir, *(results or []), runs_dir] if allow_dir else None  # None: + the current folder
    web = create_app(results or [], runs_dir, allowed_hosts=hosts, allow_dirs=allowed)
    # the token is the key to the photos: only who reads this line (or the terminal) gets in
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/?token={web.state.token}"
    say(f"patou review app: {url}  (Ctrl+C to stop)")
    if open_browser:
        import threading
        import webbrowser

        threading.Timer(1.0, webbrowser.open, [url]).start()  # once the server listens
    uvicorn.run(web, host=host, port=port, log_level="warning")
