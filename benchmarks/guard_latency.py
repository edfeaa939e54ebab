"""`patou guard` latency and idle CPU, measured on a real guard process and real images.

Folder mode (default): starts `patou guard --watch TMP/incoming --threshold 0 --cooldown 0 --action
command:true` (every readable image fires), measures the watcher's CPU time over --idle seconds
with nothing arriving, then writes >= 50 real images from ../shared/data/camtrap-real into the
folder one every --interval seconds and reports, per image, the time from the file's close (taken
by this script) to the action's start (logged by the guard in its SQLite journal): p50, p95, max.

Stream mode (--stream): an HTTP MJPEG camera on 127.0.0.1 (tests/stream_servers.py) sends
full-size real photos at --fps; the guard sends at most --rate frames a second to the models,
with the default threshold, human veto and motion gate (one bear rule: deterrent command:true,
notification command:true; cooldown 0 and veto hold 0, so each arrival is decided on its own). It
measures the guard process's CPU time while the camera shows an empty pasture (the real blank
photo with fresh sensor noise in every frame), with the gate and without it, then shows a real
bear photo --n times (the four bears of the test set in turn, each for --show s between empty
frames) and reports the time from the camera's send of the first bear frame to the first action's
start (the deterrent; the notification when the human veto held it): median, p95, max. --rtsp
does the same through Debian's GStreamer RTSP server (H.264 at 1280x960, 5 frames/s).

    .venv/bin/python benchmarks/guard_latency.py [--n 60] [--interval 1.0] [--idle 10] [--fast]
    .venv/bin/python benchmarks/guard_latency.py --stream [--n 20] [--fps 10] [--rate 2] [--idle 30] [--rtsp]
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
    ap.add_argument("--stream", action="store_true", help="measure a live MJPEG stream instead of a folder")
    ap.add_argument("--rtsp", action="store_true", help="with --stream: through the GStreamer RTSP server")
    ap.add_argument("--fps", type=float, default=10.0, help="with --stream: frames the camera sends per second")
    ap.add_argument("--rate", type=float, default=2.0, help="with --stream: frames the guard decides per second")
    ap.add_argument("--show", type=float, default=2.5, help="with --stream: seconds each bear stays in view")
    a = ap.parse_args()
    if not (REAL / "LABELS.csv").is_file():
        sys.exit(f"real images not found at {REAL}")
    if a.stream:
        return stream_main(a)

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


def _noisy(photo: Path, n: int, size=None) -> list[bytes]:
    """n JPEGs of one real photo, each with fresh sensor noise (sigma 3): a static camera's frames."""
    import io

    import numpy as np
    from PIL import Image

    img = Image.open(photo).convert("RGB")
    if size:
        from PIL import ImageOps
        img = ImageOps.pad(img, size)
    base = np.asarray(img, dtype=np.float32)
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def stream_main(a) -> None:
    import os as _os
    import threading
    from contextlib import ExitStack

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from stream_servers import MjpegServer, jpeg, rtsp_available, rtsp_server

    bears = [REAL / p for p in ("zamba-ena24-small/tests/assets/images/ena24_small/8831.jpg",
                                "zamba-ena24-small/tests/assets/images/ena24_small/9455.jpg",
                                "zamba-ena24-small/tests/assets/images/ena24_small/8786.jpg",
                                "speciesnet-cameratrapai/test_data/american_black_bear.jpg")]
    blank = REAL / "speciesnet-cameratrapai/test_data/blank.jpg"
    size = (1280, 960) if a.rtsp else None
    empty = _noisy(blank, 12, size)
    bear_frames = [jpeg(b, size) for b in bears]
    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="guard-stream-bench-"))
    db, log = tmp / "guard.sqlite", tmp / "guard.log"
    showing = {"frames": empty, "tag": "empty", "stop": False}
    sent: dict[str, float] = {}

    with ExitStack() as stack:
        if a.rtsp:
            why = rtsp_available()
            if why:
                sys.exit(f"no RTSP server: {why}")
            current = tmp / "current.jpg"
            current.write_bytes(empty[0])
            url = stack.enter_context(rtsp_server(current, fps=5))

            def show(data: bytes, tag: str) -> None:
                (tmp / "next.jpg").write_bytes(data)
                _os.replace(tmp / "next.jpg", current)
                sent.setdefault(tag, time.time())  # the camera "captures" it now
        else:
            cam = MjpegServer(fps=a.fps)
            stack.callback(cam.close)
            url = cam.url
            sent = cam.first_sent

            def show(data: bytes, tag: str) -> None:
                cam.show(data, tag)

        def feed():  # the empty pasture: a new noisy frame every 1/fps s, unless a bear is shown
            i = 0
            while not showing["stop"]:
                if showing["tag"] == "empty":
                    show(empty[i % len(empty)], f"empty-{i}")
                    i += 1
                time.sleep(1.0 / a.fps)

        threading.Thread(target=feed, daemon=True).start()

        rules = tmp / "rules.toml"
        rules.write_text('[veto]\nlabels = { human = 0.02, person = 0.2 }\nhold = 0\n\n[rule.bear]\ntargets = ["bear"]\n'
                         'threshold = 0.1\ncooldown = 0\ndeter = ["command:true"]\nnotify = ["command:true"]\n')

        def start(motion: float) -> subprocess.Popen:
            cmd = [sys.executable, "-m", "patou.cli", "guard", "--stream", f"pasture={url}", "--db", str(db),
                   "--rules", str(rules), "--event-gap", "1", "--rate", str(a.rate), "--motion", str(motion)]
            cmd += ["--threads", str(a.threads)] if a.threads else []
            cmd += ["--fast"] if a.fast else []
            with open(log, "a") as logf:
                proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=logf)
            end = time.monotonic() + 120
            while "connected" not in log.read_text():
                if time.monotonic() > end or proc.poll() is not None:
                    sys.exit(f"the guard did not start:\n{log.read_text()}")
                time.sleep(0.1)
            time.sleep(3.0)  # start-up and the first (ungated) frame
            return proc

        def cpu_over(proc, seconds: float) -> float:
            c0, t0 = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(seconds)
            return (cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0)

        def stop(proc) -> None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)

        proc = start(0.0)  # no gate: every decided frame goes to the models
        cpu_nogate = cpu_over(proc, a.idle)
        stop(proc)
        proc = start(0.002)
        cpu_gate = cpu_over(proc, a.idle)
        rss = int(Path(f"/proc/{proc.pid}/status").read_text().split("VmRSS:")[1].split()[0]) / 1024
        arrivals = []
        for i in range(a.n):
            tag = f"bear-{i}"
            showing["tag"] = tag
            show(bear_frames[i % len(bear_frames)], tag)
            time.sleep(a.show)
            arrivals.append((tag, bears[i % len(bears)].name))
            showing["tag"] = "empty"
            time.sleep(2.5)  # the bear leaves; the next arrival is a new event
        time.sleep(2.0)
        stop(proc)
        showing["stop"] = True

    con = sqlite3.connect(db)
    starts = [row for row in con.execute(
        "SELECT t.arrived, a.started, a.latency_s, t.outcome, a.role FROM attempts a JOIN triggers t ON a.trigger_id = t.id "
        "WHERE a.started IS NOT NULL ORDER BY a.started")]
    con.close()
    lat, own, missed, held = [], [], [], []
    for i, (tag, name) in enumerate(arrivals):
        t0 = sent.get(tag)
        t1 = sent.get(arrivals[i + 1][0], float("inf")) if i + 1 < len(arrivals) else float("inf")
        hits = [(s, la, outcome) for arr, s, la, outcome, role in starts if t0 is not None and t0 - 0.001 <= arr < t1
                and (role == "deter" or outcome == "vetoed")]
        if hits:
            lat.append(hits[0][0] - t0)
            own.append(hits[0][1])
            if hits[0][2] == "vetoed":
                held.append(name)
        else:
            missed.append(name)
    mode = "RTSP (GStreamer, H.264 1280x960, 5 frames/s)" if a.rtsp else f"HTTP MJPEG, full-size photos at {a.fps:g} frames/s"
    print(f"patou guard stream benchmark: {mode}; models get at most {a.rate:g} frames/s; "
          f"{'int8' if a.fast else 'float32'} detector; {os.cpu_count()} cores; "
          f"load average before: {load_before:.2f}, after: {os.getloadavg()[0]:.2f}")
    print(f"CPU of the guard process on the empty pasture ({a.idle:g} s each): {100 * cpu_gate:.1f} % of one core "
          f"with the motion gate, {100 * cpu_nogate:.1f} % without it ({a.rate:g} frames a second to the models): "
          f"ratio {cpu_nogate / max(cpu_gate, 1e-9):.1f}x; resident memory {rss:.0f} MB")
    print(f"bear arrivals: {a.n} (the 4 real bears in turn, {a.show:g} s each); deterrent fired on {len(lat) - len(held)}"
          + (f", held by the human veto (notification only) on {len(held)}: {', '.join(held)}" if held else "")
          + (f"; missed: {', '.join(missed)}" if missed else ""))
    if lat:
        print(f"camera sends the bear frame -> first action starts: median {statistics.median(lat):.3f} s, "
              f"p95 {pct(lat, .95):.3f} s, max {max(lat):.3f} s, min {min(lat):.3f} s")
        print(f"the guard's own figure (frame received -> first action starts): median {statistics.median(own):.3f} s, "
              f"max {max(own):.3f} s")
    print(f"(journal and guard log in {tmp})")


if __name__ == "__main__":
    main()
