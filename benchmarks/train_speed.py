"""Training speed, memory and int8 gain of `patou train` / `patou export --int8`, in one run.

    python benchmarks/train_speed.py [--data ../shared/data/camtrap-real] [--epochs 3] [--image-size 224]

Builds a bear-vs-other tree (symlinks, per source folder as site) from the real labelled photos
(the 100x75 camtrapR thumbnails left out), trains EfficientNet-Lite0 (first epoch head only, then
fine-tuning), exports int8 calibrated on the training photos, and prints crops/s per phase,
peak RSS, validation figures and the fp32-vs-int8 single-crop latency and its ratio.
Figures are from one run on a shared machine: compare within a run, not across runs.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

from patou.train.job import export_int8, train

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "camtrap-real"


def build_tree(real: Path, root: Path) -> int:
    with open(real / "LABELS.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if not r["path"].startswith("camtrapR-")]
    for r in rows:
        label = "bear" if r["label_norm"] == "bear" else "empty" if r["label_norm"] == "empty" else "other"
        folder = root / r["path"].split("/")[0] / label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / Path(r["path"]).name).symlink_to(real / r["path"])
    return len(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--backbone", default="efficientnet-lite0")
    args = ap.parse_args()
    if not (args.data / "LABELS.csv").is_file():
        print(f"skip: real images not found at {args.data}", file=sys.stderr)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = build_tree(args.data, tmp / "data")
        quiet = lambda m: None  # noqa: E731
        t = time.perf_counter()
        res = train(tmp / "data", tmp / "model", backbone=args.backbone, epochs=args.epochs, head_epochs=1,
                    image_size=args.image_size, val_fraction=0.25, cache_dir=tmp / "cache", log=quiet)
        train_s = time.perf_counter() - t
        card = export_int8(tmp / "model", tmp / "data", tmp / "int8", cache_dir=tmp / "cache", log=quiet)
        q = card.extra["quantization"]["validation"]
        h = res["history"]

    print(f"machine: {os.cpu_count()} cores; {n} photos -> {res['data']['n_train']} training / "
          f"{res['data']['n_val']} validation crops; {args.backbone} at {args.image_size} px")
    for row in h:
        print(f"epoch {row['epoch']} ({row['phase']:9s}): {row['crops_per_s']:6.1f} crops/s over "
              f"{row['train_crops']} crops, peak RSS {row['peak_rss_mb']} MB")
    head = [r["crops_per_s"] for r in h if r["phase"] == "head"]
    fine = [r["crops_per_s"] for r in h if r["phase"] != "head"]
    if head and fine:
        print(f"ratio fine-tune/head crops/s: {sum(fine) / len(fine) / (sum(head) / len(head)):.2f}")
    print(f"whole `train` (detect + crop + {len(h)} epochs + export): {train_s:.1f} s; peak RSS {res['peak_rss_mb']} MB")
    best = res.get("best") or {}
    print(f"best validation: accuracy {best.get('val_acc')}, balanced {best.get('val_bal_acc')}")
    print(f"int8 vs fp32 on {q['crops']} validation crops: accuracy {q['accuracy_fp32']} -> {q['accuracy_int8']}, "
          f"bear recall {q.get('target_recall_fp32')} -> {q.get('target_recall_int8')}, "
          f"top-1 agreement {q['top1_agreement']}")
    print(f"size {q['size_mb_fp32']} MB -> {q['size_mb_int8']} MB; one crop {q['latency_ms_fp32']} ms -> "
          f"{q['latency_ms_int8']} ms; ratio fp32/int8 latency: {q['speedup']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
