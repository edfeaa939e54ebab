"""The season report (`patou report`) as a page of the review app: the same HTML, drawn for the
run as it stands (corrections included), and its tables as CSV downloads. Added to the app by
`add_routes` (one line in create_app); behind the app's token like every other page."""
from __future__ import annotations

import threading
from pathlib import Path

from fastapi import HTTPException
from fastapi.responses import HTMLResponse, Response

from patou.results import RunFolder

_draw_lock = threading.Lock()  # matplotlib is not thread-safe: one report drawn at a time


def _stamp(out: Path) -> int:
    try:
        return RunFolder(out).corrections.stat().st_mtime_ns
    except OSError:
        return 0


def add_routes(app, load) -> None:
    """`load(rid)` -> the run (HTTPException when absent or unreadable)."""

    def report(rid: str) -> tuple[str, dict]:
        """(page, tables) for the run, redrawn when the run or its corrections change."""
        from patou.report import build, render, tables

        run = load(rid)  # the registry reloads it when records.jsonl or run.json change
        key = ("_report", _stamp(run.out))
        with _draw_lock:
            hit = run.__dict__.get("_report")
            if hit and hit[0] == key:
                return hit[1]
            try:
                rep = build(run)
            except ValueError as e:
                raise HTTPException(409, str(e)) from None
            made = (render(rep, lambda name: f"/runs/{rid}/report/{name}.csv", review=f"/runs/{rid}",
                           back=f"/runs/{rid}"), tables(rep))
            run.__dict__["_report"] = (key, made)
            return made

    @app.get("/runs/{rid}/report", response_class=HTMLResponse)
    def report_page(rid: str):
        return HTMLResponse(report(rid)[0])

    @app.get("/runs/{rid}/report/{name}.csv")
    def report_csv(rid: str, name: str):
        from patou.report.page import csv_text

        found = report(rid)[1].get(name)
        if found is None:
            raise HTTPException(404, f"no report table {name!r}")
        return Response(csv_text(*found), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="report-{name}.csv"'})
