"""`patou guard` latency and idle CPU, measured on a real guard process and real images.

Starts `patou guard --watch TMP/incoming --threshold 0 --cooldown 0 --action command:true` (every
readable image fires), measures the watcher's CPU time over --idle seconds with nothing arriving,
then writes >= 50 real images from ../shared/data/camtrap-real into the folder one every
--interval seconds and reports, per image, the time from the file's close (taken by this script)
to the action's start (logged by the guard in its SQLite journal): p50, p95, max.

    .venv/bin/python benchmarks/guard_latency.py [--n 60] [--interval 1.0] [--idle 10] [--fast]
"""
from __future__ import annotations

import argparse
import csv
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REAL = Path(os.environ.get("PATOU_REAL_DATA", Path(__file__).resolve().parents[1].parent / "shared/data/camtrap-real"))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def images(n: int) -> list[Path]:
    with open(REAL / "LABELS.csv", newline="") as f:
        rows = [r["path"] for r in csv.DictReader(f)]
    # full-size camera frames (not the 100x75 thumbnails), not the deliberately broken file
    paths = [REAL / p for p in rows if "borneo-thumbs" not in p and "truncated" not in p]
    return [paths[i % len(paths)] for i in range(n)]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between two arrivals")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measurement")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--fast", action="store_true", help="the int8 detector")
    ap.add_argument("--poll", type=float, default=None, help="measure the polling watcher instead of inotify")
    a = ap.parse_args()
    if not (REAL / "LABELS.csv").is_file():
        sys.exit(f"real images not found at {REAL}")

    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="guard-bench-"))
    incoming, db, log = tmp / "incoming", tmp / "guard.sqlite", tmp / "guard.log"
    incoming.mkdir()
    cmd = [sys.executable, "-m", "patou.cli", "guard", "--watch", str(incoming), "--db", str(db),
           "--threshold", "0", "--cooldown", "0", "--action", "command:true"]
    cmd += ["--threads", str(a.threads)] if a.threads else []
    cmd += ["--fast"] if a.fast else []
    cmd += ["--poll", str(a.poll)] if a.poll else []
    with open(log, "w") as logf:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=logf)
    try:
        end = time.monotonic() + 120
        while "watching" not in log.read_text():
            if time.monotonic() > end or proc.poll() is not None:
                sys.exit(f"the guard did not start:\n{log.read_text()}")
            time.sleep(0.1)
        rss_start = int(Path(f"/proc/{proc.pid}/status").read_text().split("VmRSS:")[1].split()[0]) / 1024
        time.sleep(2.0)  # let start-up settle
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(a.idle)
        idle_cpu = (cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0)

        closed: dict[str, float] = {}
        for i, src in enumerate(images(a.n)):
            dst = incoming / f"{i:03d}_{src.name}"
            data = src.read_bytes()
            with open(dst, "wb") as f:
                f.write(data)
            closed[str(dst)] = time.time()  # the file's close, on the clock the guard logs with
            time.sleep(a.interval)
        end = time.monotonic() + 120
        while True:
            con = sqlite3.connect(db)
            done = con.execute("SELECT COUNT(*) FROM files").fetchone()[0]
            rows = con.execute("SELECT t.path, a.started, a.latency_s FROM attempts a JOIN triggers t ON "
                               "a.trigger_id = t.id").fetchall()
            failed = con.execute("SELECT COUNT(*) FROM files WHERE status='failed'").fetchone()[0]
            con.close()
            if (done == a.n and len(rows) == done - failed) or time.monotonic() > end:
                break
            time.sleep(0.5)
        rss_end = int(Path(f"/proc/{proc.pid}/status").read_text().split("VmRSS:")[1].split()[0]) / 1024
        c1, t1 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(a.idle)
        idle_after = (cpu_seconds(proc.pid) - c1) / (time.monotonic() - t1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)

    lat = [started - closed[path] for path, started, _ in rows if path in closed]
    print(f"patou guard latency benchmark ({'int8' if a.fast else 'float32'} detector, "
          f"{'polling ' + str(a.poll) + ' s' if a.poll else 'inotify'}, {os.cpu_count()} cores, "
          f"load average before: {load_before:.2f}, after: {os.getloadavg()[0]:.2f})")
    print(f"arrivals: {a.n} real images, one every {a.interval:g} s; processed {done}, {failed} unreadable, "
          f"{len(lat)} actions started")
    if lat:
        print(f"file close -> action start: p50 {pct(lat, .5):.3f} s, p95 {pct(lat, .95):.3f} s, "
              f"max {max(lat):.3f} s, mean {statistics.mean(lat):.3f} s")
    print(f"idle CPU of the guard process: {100 * idle_cpu:.2f} % of one core before the arrivals, "
          f"{100 * idle_after:.2f} % after ({a.idle:g} s each)")
    print(f"resident memory: {rss_start:.0f} MB at start, {rss_end:.0f} MB after the arrivals")
    print(f"(journal and guard log in {tmp})")


if __name__ == "__main__":
    main()
