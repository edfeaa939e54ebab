"""End-to-end `patou run` speed vs detector-only speed on the real images, in one run.

    python benchmarks/throughput.py [--data ../shared/data/camtrap-real] [--repeat 1]

Prints images/s of the whole job (scan, decode, detect, classify, events, CSV/XLSX/JSON), the
inference phase alone, and the detector alone on the same images already decoded; and the
ratios. Each is measured `--repeat` times, interleaved, and the best kept, since a shared
machine only ever adds time. Compare figures from one run, not across runs.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from patou.api import run
from patou.media import decode, scan
from patou.models.detector import Detector

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "camtrap-real"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if not args.data.is_dir():
        print(f"skip: real images not found at {args.data}", file=sys.stderr)
        return 0

    records, _ = scan([args.data])
    images = [im for im in (decode(r) for r in records) if im is not None]
    det = Detector(threads=args.threads)
    det.detect(images[0])  # warm-up: first call allocates
    det_s, total_s, infer_rate = float("inf"), float("inf"), 0.0
    for _ in range(args.repeat):
        t = time.perf_counter()
        for im in images:
            det.detect(im)
        det_s = min(det_s, time.perf_counter() - t)
        with tempfile.TemporaryDirectory() as out:
            t = time.perf_counter()
            result = run([args.data], out, threads=args.threads, log=lambda m: None)
            total_s = min(total_s, time.perf_counter() - t)
        infer_rate = max(infer_rate, result.timings["images_per_s"])
    det_rate = len(images) / det_s
    n = len(result.records)
    e2e_rate = n / total_s

    print(f"machine: {os.cpu_count()} cores; images: {n} ({len(images)} decodable)")
    print(f"detector only (decoded inputs): {det_rate:6.2f} images/s  ({1000 * det_s / len(images):.0f} ms/image)")
    print(f"patou run, inference phase:     {infer_rate:6.2f} images/s  (decode+detect+classify, overlapped)")
    print(f"patou run, whole job:           {e2e_rate:6.2f} images/s  ({total_s:.1f} s incl. model load and outputs)")
    print(f"ratio inference/detector-only:  {infer_rate / det_rate:.2f}")
    print(f"ratio whole-job/detector-only:  {e2e_rate / det_rate:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
