"""`patou run` speed vs the detector alone on full-size photos, float32 and --fast, in one run.

    python benchmarks/throughput.py [--data ../shared/data/camtrap-real] [--repeat 3] [--thumbs]

Photos: every JPEG of the real set except the 100x75 Borneo thumbnails and the deliberately
truncated file (59 photos, 0.6-12 MP, six of them MPO). For each detector variant:
- detector alone: the frames decoded and letterboxed beforehand, then only the detector, through
  the very `Models` (same sessions, same thread settings) that `patou run` uses;
- `patou run` end-to-end with start-up removed: scan + decode + detect + classify + CSV/XLSX/JSON
  outputs, i.e. the whole job minus creating the ONNX Runtime sessions (`inference_s + write_s`);
  the inference phase alone (decode + detect + classify, overlapped) is printed beside it.
Variants and repeats are interleaved and the best of `--repeat` kept (a shared machine only ever
adds time); compare the ratios, which are measured in the same run.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from patou.api import run
from patou.media import scan
from patou.pipeline import Models

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "camtrap-real"


def full_size_photos(data: Path) -> list[Path]:
    records, _ = scan([data])
    return [r.path for r in records if r.path.suffix.lower() in (".jpg", ".jpeg")
            and "camtrapR-borneo-thumbs" not in r.path.parts and "truncated" not in r.path.name]


def thumbnails(data: Path) -> list[Path]:
    records, _ = scan([data / "camtrapR-borneo-thumbs"])
    return [r.path for r in records]


def detector_only(models: Models, photos: list[Path]) -> float:
    """Seconds for the detector alone on frames decoded and letterboxed beforehand."""
    frames = models.detector_inputs(photos)
    models.detect_frames(frames[:1])  # warm-up: the first call allocates
    t = time.perf_counter()
    models.detect_frames(frames)
    return time.perf_counter() - t


def end_to_end(photos: list[Path], fast: bool) -> tuple[float, float]:
    """(whole job minus start-up, inference phase) in seconds, from `patou run`'s own timings."""
    with tempfile.TemporaryDirectory() as out:
        result = run(photos, out, fast=fast, log=lambda m: None)
    assert len(result.records) == len(photos) and not any(r.failure for r in result.records)
    return result.timings["inference_s"] + result.timings["write_s"], result.timings["inference_s"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--thumbs", action="store_true", help="also the 74 Borneo thumbnails, on a line of their own")
    args = ap.parse_args()
    if not args.data.is_dir():
        print(f"skip: real images not found at {args.data}", file=sys.stderr)
        return 0

    sets = {"full-size photos": full_size_photos(args.data)}
    if args.thumbs:
        sets["100x75 thumbnails"] = thumbnails(args.data)
    variants = {"float32": False, "--fast (int8)": True}
    models = {name: Models(fast=fast) for name, fast in variants.items()}
    best: dict[tuple, list[float]] = {}
    for _ in range(args.repeat):  # interleaved: load drift hits every variant alike
        for what, photos in sets.items():
            for name, fast in variants.items():
                det = detector_only(models[name], photos)
                job, infer = end_to_end(photos, fast)
                b = best.setdefault((what, name), [float("inf")] * 3)
                best[(what, name)] = [min(b[0], det), min(b[1], job), min(b[2], infer)]

    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, load average {load:.1f} at the end; best of {args.repeat}")
    print(f"{'':40} {'end-to-end':>11} {'inference':>10} {'detector':>9} {'ratio':>6} {'ratio':>6}")
    print(f"{'':40} {'img/s':>11} {'img/s':>10} {'img/s':>9} {'e2e':>6} {'inf':>6}")
    for (what, name), (det, job, infer) in best.items():
        n = len(sets[what])
        label = f"{what} ({n}), {name}"
        print(f"{label:40} {n / job:11.2f} {n / infer:10.2f} {n / det:9.2f} {det / job:6.2f} {det / infer:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
