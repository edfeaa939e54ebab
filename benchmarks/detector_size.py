"""What a larger detector input (`patou run --detector-size`) recovers and costs, per image.

On the full-size real photos of ../shared/data/camtrap-real (the 100x75 camtrapR thumbnails are
left out: they are not for detection), for the fp32 and int8 detectors at 640 (the card's size),
960 and 1280, and for 640 merged with a larger pass (`--detector-size 640+1280`: both, then NMS):
- recovered: animal photos whose best box reaches --detection-threshold (0.2) here but not at 640
  fp32, and lost: the other way round; the night-IR heron burst and the small ENA24 animals
  are listed on their own;
- onHer: heron frames with a box >= 0.2 on the heron (IoU >= 0.3 with the example's own box);
- false boxes: boxes >= 0.2 on the photos labelled empty;
- time: decode (at the side the size needs) + detector, ms per image, and its ratio to 640 fp32
  measured in the same run (ratios survive a loaded machine better than milliseconds).

    python benchmarks/detector_size.py [--csv per_image.csv] [--repeat 1]
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path

from patou.media import DECODE_SIDE, decode
from patou.models.detector import FAST_CARD, Detector, merge_passes
from patou.record import ImageRecord

ROOT = Path(__file__).resolve().parents[1]
REAL = Path(os.environ.get("PATOU_REAL_DATA", ROOT.parent / "shared/data/camtrap-real"))
THRESHOLD = 0.2
SIZES = (640, 960, 1280)


HERON = "camtrapdp-mica-heron/tests/testthat/fixtures/sample_camtrap_dp_data"


def heron_reference() -> dict[str, list[float]]:
    """File name -> the Camtrap DP example's own box (from a real detector) for the heron frames."""
    pkg = REAL / HERON
    with open(pkg / "media.csv", newline="") as f:
        names = {r["mediaID"]: r["fileName"] for r in csv.DictReader(f)}
    with open(pkg / "observations.csv", newline="") as f:
        return {names[r["mediaID"]]: [float(r[k]) for k in ("bboxX", "bboxY", "bboxWidth", "bboxHeight")]
                for r in csv.DictReader(f) if r["bboxX"] and r["mediaID"] in names}


def iou(a, b) -> float:
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    union = a[2] * a[3] + b[2] * b[3] - iw * ih
    return iw * ih / union if union > 0 else 0.0


def photos() -> list[tuple[Path, str]]:
    with open(REAL / "LABELS.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        w, _, h = r["width_height"].partition("x")
        if w.isdigit() and min(int(w), int(h)) >= 500 and (REAL / r["path"]).is_file():
            out.append((REAL / r["path"], r["label_norm"] or "?"))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--csv", type=Path, help="write the per-image figures here")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    items = photos()
    if not items:
        sys.exit(f"no real photos under {REAL} (set PATOU_REAL_DATA)")
    configs = [(p, s) for p in ("fp32", "int8") for s in SIZES]
    dets = {c: Detector(FAST_CARD if c[0] == "int8" else None, threads=args.threads, input_size=c[1]) for c in configs}
    results: dict[tuple, dict[Path, dict]] = {c: {} for c in configs}
    n_ok = 0
    for path, label in items:
        for side in sorted({max(DECODE_SIDE, s) for s in SIZES}):
            t0 = time.perf_counter()
            img = decode(ImageRecord(path=path, root=REAL), side)
            t_dec = time.perf_counter() - t0
            if img is None:
                break
            for c in configs:
                if max(DECODE_SIDE, c[1]) != side:
                    continue
                t0 = time.perf_counter()
                boxes = dets[c].detect(img)
                results[c][path] = {"boxes": boxes, "decode_s": t_dec, "detect_s": time.perf_counter() - t0}
        else:
            n_ok += 1
    items = [(p, lab) for p, lab in items if p in results[configs[0]]]
    for prec in ("fp32", "int8"):  # merged passes: 640 and a larger one, NMS over both
        for s in SIZES[1:]:
            a, b = results[(prec, 640)], results[(prec, s)]
            results[(prec, f"640+{s}")] = {
                p: {"boxes": merge_passes([a[p]["boxes"], b[p]["boxes"]], dets[(prec, 640)].nms_iou),
                    "decode_s": b[p]["decode_s"], "detect_s": a[p]["detect_s"] + b[p]["detect_s"]} for p in a}

    def best(c, p):
        return max((d.conf for d in results[c][p]["boxes"]), default=0.0)

    base = ("fp32", 640)
    animals = [p for p, lab in items if lab not in ("empty", "?", "")]
    blanks = [p for p, lab in items if lab == "empty"]
    herons = [p for p, lab in items if "heron" in lab]
    small = [p for p, lab in items if "ena24" in str(p) and 0.1 <= best(base, p) < THRESHOLD]
    ref = heron_reference()

    def on_heron(c, p):  # a box >= threshold on the heron itself (IoU >= 0.3 with the example's box)
        return any(d.conf >= THRESHOLD and iou(d.bbox, ref[p.name]) >= 0.3 for d in results[c][p]["boxes"])

    t_base = statistics.mean(r["decode_s"] + r["detect_s"] for r in results[base].values())
    print(f"{len(items)} full-size real photos ({len(animals)} with an animal, {len(blanks)} empty, "
          f"{len(herons)} heron burst frames); threshold {THRESHOLD}; {os.cpu_count()} cores "
          f"(times are on a shared machine: read the ratios)")
    print(f"{'detector':14s} {'found':>7s} {'recov':>5s} {'lost':>4s} {'heron':>5s} {'small':>5s} "
          f"{'onHer':>5s} {'falseB':>6s} {'ms/img':>7s} {'x640fp32':>8s}")
    for c in list(results):
        res = results[c]
        found = [p for p in animals if best(c, p) >= THRESHOLD]
        rec = [p for p in found if best(base, p) < THRESHOLD]
        lost = [p for p in animals if best(base, p) >= THRESHOLD and best(c, p) < THRESHOLD]
        false_boxes = sum(d.conf >= THRESHOLD for p in blanks for d in res[p]["boxes"])
        t = statistics.mean(r["decode_s"] + r["detect_s"] for r in res.values())
        print(f"{c[0] + ' ' + str(c[1]):14s} {len(found):3d}/{len(animals):<3d} {len(rec):5d} {len(lost):4d} "
              f"{sum(best(c, p) >= THRESHOLD for p in herons):2d}/{len(herons):<2d} "
              f"{sum(best(c, p) >= THRESHOLD for p in small):2d}/{len(small):<2d} "
              f"{sum(on_heron(c, p) for p in herons):2d}/{len(herons):<2d} {false_boxes:6d} "
              f"{t * 1000:7.0f} {t / t_base:8.2f}")
        for p in rec + lost:
            print(f"    {'+' if p in rec else '-'} {p.relative_to(REAL)}: best box {best(base, p):.3f} -> {best(c, p):.3f}")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image", "label", "detector", "best_conf", "boxes_ge_0.2", "decode_ms", "detect_ms"])
            for c, res in results.items():
                for p, lab in items:
                    r = res[p]
                    w.writerow([p.relative_to(REAL), lab, f"{c[0]} {c[1]}", round(best(c, p), 4),
                                sum(d.conf >= THRESHOLD for d in r["boxes"]), round(r["decode_s"] * 1000, 1),
                                round(r["detect_s"] * 1000, 1)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
