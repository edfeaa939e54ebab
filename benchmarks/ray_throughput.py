"""`patou run` speed with the local engine and on a local Ray with 1 and 2 workers, in one run.

    python benchmarks/ray_throughput.py [--data ../shared/data/camtrap-real] [--repeat 1] [--workers 1 2]

Ray is started once (its start-up is printed apart); then, in interleaved rounds, each engine runs
the whole job on the real images. Printed per engine: images/s of the inference phase (for Ray this includes starting
the actors and loading their models) and of the whole job, and the ratios to the local engine.
Each figure is the best of `--repeat` rounds (a shared machine only ever adds time). Compare figures
from one run, not across runs.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from patou.api import run

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "camtrap-real"


def measure(data: Path, **options) -> tuple[float, float, int]:
    """(inference-phase images/s, whole-job images/s, images) of one run."""
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        result = run([data], out, log=lambda m: None, **options)
        total = time.perf_counter() - t
    n = len(result.records)
    return result.timings["images_per_s"], n / total, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    if not args.data.is_dir():
        print(f"skip: real images not found at {args.data}", file=sys.stderr)
        return 0
    try:
        import ray
    except ImportError:
        print("skip: Ray not installed (pip install 'patou[ray]')", file=sys.stderr)
        return 0

    t = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    ray_start = time.perf_counter() - t
    engines = [("local engine", {})] + [(f"ray, {w} worker{'s' if w > 1 else ''}", dict(engine="ray", workers=w))
                                        for w in args.workers]
    best: dict[str, tuple] = {}
    try:
        for _ in range(args.repeat):  # interleaved rounds, so a burst of load hits every engine alike
            for name, options in engines:
                infer, whole, n = measure(args.data, **options)
                b = best.get(name, (0.0, 0.0, n))
                best[name] = (max(b[0], infer), max(b[1], whole), n)
    finally:
        ray.shutdown()
    rows = [(name, *best[name]) for name, _ in engines]

    n = rows[0][3]
    print(f"machine: {os.cpu_count()} cores (os.cpu_count); images: {n}; best of {args.repeat}")
    print(f"ray.init (local, once): {ray_start:.1f} s")
    print(f"{'engine':<16} {'inference img/s':>16} {'whole job img/s':>16} {'ratio to local (inference)':>28}")
    base = rows[0][1]
    for name, infer, whole, _ in rows:
        print(f"{name:<16} {infer:>16.2f} {whole:>16.2f} {infer / base:>28.2f}")
    if len(rows) == 3:
        print(f"ratio 2 workers / 1 worker (inference): {rows[2][1] / rows[1][1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
