"""Build the bundled int8 MegadetectorLite (`patou run --fast`) from real camera-trap frames.

Reads   the real images in ../shared/data/camtrap-real (or $PATOU_REAL_DATA), decoded as
        `patou run` decodes them (patou.media.decode). The 100x75 camtrapR thumbnails are left
        out (not for detection), and so is any file that does not decode.
Splits  by sorted path: even positions calibrate, odd positions evaluate (never seen in
        calibration). The 4 black-bear photos are checked on their own as well.
Writes  src/patou/models/assets/megadetectorlite_yolox_tiny_int8.{onnx,json}; the card's
        extra.quantization holds the settings and the figures printed here.

    python tools/quantize_detector.py [--method minmax|entropy|percentile] [--no-float-head]
                                      [--float-first N] [--out DIR]

Same inputs and same onnxruntime give the same file (calibration is deterministic).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

from patou.media import decode
from patou.models.card import ASSETS, ModelCard
from patou.models.detector import DEFAULT_CARD
from patou.record import ImageRecord
from patou.convert.quantize import card_figures, compare_detector, quantize_detector

ROOT = Path(__file__).resolve().parents[1]
REAL = Path(os.environ.get("PATOU_REAL_DATA", ROOT.parent / "shared/data/camtrap-real"))
NAME = "megadetectorlite_yolox_tiny_int8"
BEARS = [
    "zamba-ena24-small/tests/assets/images/ena24_small/8831.jpg",
    "zamba-ena24-small/tests/assets/images/ena24_small/8786.jpg",
    "zamba-ena24-small/tests/assets/images/ena24_small/9455.jpg",
    "speciesnet-cameratrapai/test_data/american_black_bear.jpg",
]


def load(rel: str):
    rec = ImageRecord(path=REAL / rel, root=REAL)
    return decode(rec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", default="minmax", choices=["minmax", "entropy", "percentile"])
    ap.add_argument("--no-float-head", action="store_true", help="quantize the output convs too")
    ap.add_argument("--float-first", type=int, default=0, help="leading convs kept in float")
    ap.add_argument("--threshold", type=float, default=0.2)
    ap.add_argument("--out", type=Path, default=ASSETS)
    args = ap.parse_args(argv)

    labels = REAL / "LABELS.csv"
    if not labels.is_file():
        print(f"real images not found at {REAL} (set PATOU_REAL_DATA)", file=sys.stderr)
        return 2
    with open(labels, newline="", encoding="utf-8") as f:
        rels = sorted(r["path"] for r in csv.DictReader(f) if not r["path"].startswith("camtrapR-"))
    frames = [(rel, img) for rel in rels if (img := load(rel)) is not None]
    calib, held = frames[0::2], frames[1::2]
    print(f"{len(frames)} frames ({len(rels) - len(frames)} unreadable): {len(calib)} calibrate, {len(held)} evaluate")

    card = quantize_detector([im for _, im in calib], args.out, name=NAME, float_head=not args.no_float_head,
                             float_first=args.float_first, method=args.method)
    fig = compare_detector(DEFAULT_CARD, card, [im for _, im in held], args.threshold, names=[r for r, _ in held])
    bears = compare_detector(DEFAULT_CARD, card, [load(b) for b in BEARS], args.threshold, names=BEARS, runs=3)
    keys = ("fp32_detections", "kept_by_int8", "extra_int8_detections", "conf_diff_max_abs")
    fig["bears"] = {k: bears[k] for k in keys}
    fig["bears"]["per_image"] = [{k: p[k] for k in ("image", "fp32", "kept", "max_conf_fp32", "max_conf_int8")}
                                 for p in bears["per_image"]]
    fig["split"] = "sorted real frames without camtrapR thumbnails: even positions calibrate, odd evaluate"
    card_figures(card, fig)

    q = ModelCard.load(card.path).extra["quantization"]
    print(f"wrote {card.onnx_path} ({q['size_mb_int8']} MB, fp32 {q['size_mb_fp32']} MB)")
    print(f"settings: {q['format']}, {q['weights']} ({q['weight_bits']}-bit range), {q['activations']} activations, {q['calibration']} "
          f"calibration on {q['calibration_inputs']} frames, {len(q['float_nodes'])} nodes kept float")
    print(f"held-out frames: {fig['kept_by_int8']}/{fig['fp32_detections']} fp32 detections >= {args.threshold} kept "
          f"(recall change {fig['recall_change_points']:+.1f} points), {fig['extra_int8_detections']} extra; "
          f"conf diff mean {fig['conf_diff_mean']:+.3f}, max |diff| {fig['conf_diff_max_abs']:.3f}")
    if fig["images_losing_a_detection"]:
        print("  losing a detection:", ", ".join(fig["images_losing_a_detection"]))
    print(f"bears: {bears['kept_by_int8']}/{bears['fp32_detections']} kept; "
          + json.dumps([(Path(p['image']).name, p['max_conf_fp32'], p['max_conf_int8']) for p in bears["per_image"]]))
    print(f"network latency, 1 frame, 2 threads: fp32 {fig['latency_ms_fp32']} ms, int8 {fig['latency_ms_int8']} ms "
          f"(x{fig['speedup']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
