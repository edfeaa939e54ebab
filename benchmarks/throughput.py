"""`patou run` speed vs the detector alone on full-size photos, float32 and --fast, in one run.

    python benchmarks/throughput.py [--data ../shared/data/camtrap-real] [--repeat 3] [--thumbs] [--profile]

Photos: every JPEG of the real set except the 100x75 Borneo thumbnails and the deliberately
truncated file (59 photos, 0.6-12 MP, six of them MPO). For each detector variant and each of two
arrangements of the work:
- "per core" (what `patou run` does): one image per thread side by side, every session call on
  one thread (`images_at_once` = cores);
- "all cores" (`images_at_once=1`: what `patou run` did before, and what the guard does): one
  image at a time in inference with every thread, decoding threads running ahead;
and for each arrangement:
- detector alone: the frames decoded and letterboxed beforehand, then only the detector, through
  the very `Analyser` of that arrangement (same sessions, same threads, as many frames at once);
- `patou run` end-to-end with start-up removed: scan + decode + detect + classify + CSV/XLSX/JSON
  outputs, i.e. the whole job minus creating the ONNX Runtime sessions (`inference_s + write_s`);
  the inference phase alone (decode + detect + classify) is printed beside it.
Variants, arrangements and repeats are interleaved and the best of `--repeat` kept (a shared
machine only ever adds time); compare the ratios, which are measured in the same run.
`--profile` adds the CPU milliseconds per photo of each stage in one thread: the floor under
the end-to-end figure on a machine whose cores are all busy.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from patou.api import run
from patou.media import scan
from patou.models.detector import FAST_CARD, Detector
from patou.pipeline import Analyser
from patou.record import ImageRecord

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "camtrap-real"
ARRANGEMENTS = {"per core": None, "all cores": 1}  # images_at_once: patou run's default, the guard's


def full_size_photos(data: Path) -> list[Path]:
    records, _ = scan([data])
    return [r.path for r in records if r.path.suffix.lower() in (".jpg", ".jpeg")
            and "camtrapR-borneo-thumbs" not in r.path.parts and "truncated" not in r.path.name]


def thumbnails(data: Path) -> list[Path]:
    records, _ = scan([data / "camtrapR-borneo-thumbs"])
    return [r.path for r in records]


def detector_inputs(models: Analyser, photos: list[Path]) -> list:
    """Each photo decoded and letterboxed by `Analyser.load`, as `patou run` does it."""
    return [models.load(ImageRecord(path=p, root=p.parent)) for p in photos]


def detector_only(models: Analyser, frames: list) -> float:
    """Seconds for the detector alone on frames loaded beforehand, through `models`' session,
    `models.images_at_once` frames at once (as `patou run` calls it)."""
    det, n = models.detector, models.images_at_once
    det.detect_prepared(*frames[0][1].data, frames[0][0].size)  # warm-up: the first call allocates

    def work(part):
        for img, prepared in part:
            det.detect_prepared(*prepared.data, img.size)

    t = time.perf_counter()
    threads = [threading.Thread(target=work, args=(frames[i::n],)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.perf_counter() - t


def end_to_end(photos: list[Path], fast: bool, images_at_once: int | None) -> tuple[float, float]:
    """(whole job minus start-up, inference phase) in seconds, from `patou run`'s own timings."""
    with tempfile.TemporaryDirectory() as out:
        result = run(photos, out, fast=fast, images_at_once=images_at_once, log=lambda m: None)
    assert len(result.records) == len(photos) and not any(r.failure for r in result.records)
    return result.timings["inference_s"] + result.timings["write_s"], result.timings["inference_s"]


def profile(photos: list[Path]) -> None:
    """CPU ms per photo of each stage, in this one thread (sessions with 1 thread): where time goes."""
    from patou.media import decode
    from patou.models.classifier import crop

    def cpu(f, items):
        t = time.thread_time()
        out = [f(x) for x in items]
        return out, 1000 * (time.thread_time() - t) / len(photos)

    m = Analyser(threads=1)
    images, t_dec = cpu(lambda p: decode(ImageRecord(path=p, root=p.parent)), photos)
    prepared, t_pre = cpu(m.detector.preprocess, images)
    dets, t_det = cpu(lambda a: m.detector.detect_prepared(a[1][0], a[1][1], a[0].size), list(zip(images, prepared)))
    fast = Detector(FAST_CARD, threads=1)
    _, t_fast = cpu(lambda a: fast.detect_prepared(a[1][0], a[1][1], a[0].size), list(zip(images, prepared)))
    clf = m.classifier
    boxes = [[d for d in ds if d.conf >= 0.2] for ds in dets]
    crops, t_crop = cpu(lambda a: [crop(a[0], d.bbox, clf.size, clf.margin, clf.card.pad_value) for d in a[1]],
                        list(zip(images, boxes)))
    _, t_clf = cpu(lambda c: clf.predict(c) if c else None, crops)
    rest = t_dec + t_pre + t_crop + t_clf
    print(f"CPU per photo, one thread ({sum(map(len, boxes)) / len(photos):.2f} boxes >= 0.2 per photo): "
          f"decode {t_dec:.1f} ms, letterbox {t_pre:.1f} ms, detector float32 {t_det:.1f} ms / int8 {t_fast:.1f} ms, "
          f"crops {t_crop:.1f} ms, classifier (with mirror) {t_clf:.1f} ms")
    print(f"  the rest beside the detector: {rest:.1f} ms, so at best (every core busy, no overhead) end-to-end / "
          f"detector alone = {t_det / (t_det + rest):.2f} float32, {t_fast / (t_fast + rest):.2f} int8")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--thumbs", action="store_true", help="also the 74 Borneo thumbnails, on a line of their own")
    ap.add_argument("--profile", action="store_true", help="also CPU ms per photo of each stage, in one thread")
    args = ap.parse_args()
    if not args.data.is_dir():
        print(f"skip: real images not found at {args.data}", file=sys.stderr)
        return 0

    sets = {"full-size photos": full_size_photos(args.data)}
    if args.thumbs:
        sets["100x75 thumbnails"] = thumbnails(args.data)
    variants = {"float32": False, "--fast (int8)": True}
    models = {(v, a): Analyser(fast=fast, images_at_once=k) for v, fast in variants.items() for a, k in ARRANGEMENTS.items()}
    # every variant letterboxes alike (same card geometry): one set of frames serves all
    frames = {what: detector_inputs(models["float32", "per core"], photos) for what, photos in sets.items()}
    best: dict[tuple, list[float]] = {}
    for _ in range(args.repeat):  # interleaved: load drift hits every variant alike
        for what, photos in sets.items():
            for (name, arr), m in models.items():
                det = detector_only(m, frames[what])
                job, infer = end_to_end(photos, variants[name], ARRANGEMENTS[arr])
                b = best.setdefault((what, name, arr), [float("inf")] * 3)
                best[(what, name, arr)] = [min(b[0], det), min(b[1], job), min(b[2], infer)]

    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end; best of {args.repeat}")
    print(f"{'':54} {'end-to-end':>11} {'inference':>10} {'detector':>9} {'ratio':>6} {'ratio':>6}")
    print(f"{'':54} {'img/s':>11} {'img/s':>10} {'img/s':>9} {'e2e':>6} {'inf':>6}")
    for (what, name, arr), (det, job, infer) in best.items():
        n = len(sets[what])
        label = f"{what} ({n}), {name}, {arr}" + (" = patou run" if ARRANGEMENTS[arr] is None else "")
        print(f"{label:54} {n / job:11.2f} {n / infer:10.2f} {n / det:9.2f} {det / job:6.2f} {det / infer:6.2f}")
    for what in sets:
        for name in variants:
            new, old = best[(what, name, "per core")], best[(what, name, "all cores")]
            print(f"{what}, {name}: end-to-end per core vs all cores x{old[1] / new[1]:.2f}; "
                  f"end-to-end per core / detector alone on all cores {old[0] / new[1]:.2f}")
    if args.profile:
        profile(sets["full-size photos"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
