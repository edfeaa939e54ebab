"""How long `patou report` takes on a season, and where the time goes.

    python benchmarks/report.py [--cameras 24] [--days 120]

Makes the synthetic season of tests/report_season.py scaled up (the eight cameras of the tests,
repeated under new names, over --days days; each photo a tiny JPEG with its EXIF time), then
times reading the results folder, the health rules and tables, drawing the five figures, and
writing the page with its CSV. Best of --repeat; a shared machine only ever adds time.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import report_season  # noqa: E402
from patou.report import build, render, write_report  # noqa: E402


def best(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cameras", type=int, default=24, help="cameras (the tests' eight, repeated)")
    ap.add_argument("--days", type=int, default=120)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    report_season.DAYS = a.days
    plan = {}
    for n in range(-(-a.cameras // 8)):
        for site, shots in report_season.season_plan(seed=n).items():
            if len(plan) < a.cameras:
                plan[f"{site}-{n}"] = shots
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        out = report_season.make_results(plan, Path(tmp))
        made = time.perf_counter() - t
        t_build, rep = best(lambda: build(out), a.repeat)
        t_render, html = best(lambda: render(rep, lambda name: f"{name}.csv"), a.repeat)
        t_write, _ = best(lambda: write_report(out, log=lambda m: None), a.repeat)
        print(f"season: {len(plan)} cameras, {len(rep.season.photos)} photos, {rep.season.events} events, "
              f"{rep.health.camera_days} camera-days ({made:.1f} s to make it)")
        print(f"read + rules + tables: {t_build:.2f} s; figures + page: {t_render:.2f} s "
              f"({len(html) / 1e6:.2f} MB of HTML); whole `write_report`: {t_write:.2f} s")
        print(f"per 1000 photos: {1000 * t_write / len(rep.season.photos):.3f} s")


if __name__ == "__main__":
    main()
