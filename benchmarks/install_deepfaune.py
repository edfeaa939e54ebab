"""What `patou models install deepfaune` costs at full size, without the real weights.

Makes a checkpoint with DeepFaune's exact layout AND size (v1.5, the default: DINOv3 ViT-L/16, width
1024, 24 blocks, 4 registers, 40 classes, 224 px; v1.4: DINOv2 ViT-L/14 with a 37x37 position grid,
38 classes, 182 px; random weights, about 1.2 GB), installs it with `--from` and `--skip-self-check`
in a child process (peak RSS of that process = the conversion's memory), then times the installed
ONNX per crop on real crops, fp32 and dynamic int8, in the same run. Random weights say nothing about
accuracy: only sizes, memory and speed are measured (tools/deepfaune_reference.py full compares the
conversion with timm at full size).

    .venv/bin/python benchmarks/install_deepfaune.py [--version 1.5] [--crops 8] [--runs 3]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL = Path(os.environ.get("PATOU_REAL_DATA", ROOT.parent / "shared/data/camtrap-real"))
sys.path.insert(0, str(ROOT / "tests"))

INSTALL = """
import sys, time
from patou.convert.install import install
t = time.perf_counter()
install("deepfaune", sys.argv[2], from_file=sys.argv[1], accept_licence=True, skip_self_check=True, log=lambda m: None)
print(time.perf_counter() - t)
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--crops", type=int, default=8, help="real crops timed per model")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--version", default="1.5", choices=["1.4", "1.5"])
    args = ap.parse_args()
    from checkpoints import make_checkpoint, make_dinov3_checkpoint

    from patou.models import registry

    from patou.models.classifier import Classifier
    from patou.convert.install import _input, demo_crops, quantize_int8

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        _, ver = registry.get("deepfaune").version(args.version)
        size = ver.input_size
        if args.version == "1.5":
            ckpt = make_dinov3_checkpoint(tmp / "deepfaune-vit_large_patch16_dinov3.lvd1689m.pt", num_classes=40,
                                          depth=24, dim=1024, hidden=4096)
        else:
            ckpt = make_checkpoint(tmp / "deepfaune-vit_large_patch14_dinov2.lvd142m.v4.pt", num_classes=38, depth=24,
                                   dim=1024, hidden=4096)
        print(f"checkpoint: {ckpt.stat().st_size / 2**20:.0f} MB, made in {time.perf_counter() - t:.0f} s")
        env = {**os.environ, "PATOU_MODELS": str(tmp / "models")}
        proc = subprocess.run([sys.executable, "-c", INSTALL, str(ckpt), args.version], env=env, capture_output=True,
                              text=True)
        if proc.returncode:
            sys.exit(proc.stderr)
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
        ckpt.unlink()
        folder = tmp / "models" / "deepfaune"
        card = json.loads((folder / "deepfaune.json").read_text())
        onnx = folder / "deepfaune.onnx"
        print(f"install (load, convert, export, ONNX-vs-torch check on the demo crops): "
              f"{float(proc.stdout.strip().splitlines()[-1]):.0f} s, peak RSS {peak_gb:.1f} GB; "
              f"ONNX fp32 {onnx.stat().st_size / 2**20:.0f} MB; check {card['extra']['install']['conversion_check']}")

        crops = [c for cs in demo_crops(size, "square-clip", "bicubic", [REAL / "zamba-ena24-small"]).values() for c in cs]
        crops = crops[: args.crops]
        x = _input(crops, card["mean"], card["std"])
        t = time.perf_counter()
        q = quantize_int8(onnx, tmp / "int8.onnx", x)
        print(f"int8 (dynamic, per-channel): {q['size_mb']} MB, quantised in {time.perf_counter() - t:.0f} s; "
              f"top-1 agrees with fp32 on {q['top1_agree']}/{q['crops']} crops (random weights: not meaningful)")
        from patou.models.runtime import cpu_session

        ms = {}
        for name, path in (("fp32", onnx), ("int8", tmp / "int8.onnx")):
            sess = cpu_session(path)
            sess.run(["logits"], {"input": x[:1]})  # warm-up
            best = []
            for _ in range(args.runs):
                t = time.perf_counter()
                for i in range(len(x)):
                    sess.run(["logits"], {"input": x[i: i + 1]})
                best.append((time.perf_counter() - t) / len(x) * 1000)
            ms[name] = min(best)
        print(f"ms per crop (batch 1, {os.cpu_count()} cores, best of {args.runs} x {len(x)} crops): "
              f"fp32 {ms['fp32']:.0f}, int8 {ms['int8']:.0f}; int8/fp32 = {ms['int8'] / ms['fp32']:.2f}")
        clf = Classifier(folder, flip=False)
        assert clf.predict(crops[:2]).shape == (2, len(ver.classes))  # the card loads and runs as a patou classifier


if __name__ == "__main__":
    main()
