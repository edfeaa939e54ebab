"""Size is not a weapon (issue 20 item 3): what a huge MegaDetector file and a stride-0 checkpoint cost.

Each case runs `patou` in its own process; the process's peak RSS (VmHWM) and wall time are
printed, with ratios to the same run given a 4-entry MD file (ratios survive a loaded machine).

    python benchmarks/hostile_sizes.py [--entries 300000] [--real ../shared/data/camtrap-real]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERON = "camtrapdp-mica-heron/tests/testthat/fixtures/sample_camtrap_dp_data/media"
CHILD = r"""
import sys, runpy
sys.argv = ["patou", *sys.argv[1:]]
try:
    runpy.run_module("patou.cli", run_name="__main__")
except SystemExit as e:
    code = e.code
else:
    code = 0
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(f"@@ {hwm / 1024:.0f} {code}", file=sys.stderr)
"""


def patou(*args, env=None) -> dict:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", CHILD, *map(str, args)], capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t
    tail = [ln for ln in p.stderr.splitlines() if ln.startswith("@@ ")][-1].split()
    out = [ln for ln in p.stderr.splitlines() if ln.strip() and not ln.startswith("@@ ")]
    return {"s": dt, "peak_mb": float(tail[1]), "exit": int(tail[2]) if tail[2].lstrip("-").isdigit() else tail[2],
            "lines": len(out), "last": out[-1][:160] if out else ""}


def md(path: Path, names: list[str], extra: int) -> Path:
    box = {"category": "1", "conf": 0.9, "bbox": [0.3, 0.3, 0.2, 0.2]}
    images = [{"file": n, "detections": [box]} for n in names]
    images += [{"file": f"cam{i % 97}/sub{i % 13}/IMG_{i:06d}.JPG", "detections": [box]} for i in range(extra)]
    path.write_text(json.dumps({"info": {"format_version": "1.4"}, "detection_categories": {"1": "animal"},
                                "images": images}))
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=300_000)
    ap.add_argument("--real", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/camtrap-real")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="patou-hostile-"))
    try:
        inp = tmp / "in"
        inp.mkdir()
        for p in sorted((a.real / HERON).iterdir())[:4]:
            shutil.copy2(p, inp / p.name)
        names = sorted(p.name for p in inp.iterdir())
        small, big = md(tmp / "small.json", names, 0), md(tmp / "big.json", names, a.entries)
        print(f"MD files: 4 entries {small.stat().st_size / 1e3:.1f} kB, {len(names) + a.entries} entries "
              f"{big.stat().st_size / 1e6:.1f} MB")
        base = patou("run", inp, "--out", tmp / "o1", "--detections", small)
        huge = patou("run", inp, "--out", tmp / "o2", "--detections", big)
        rows = sum(1 for _ in open(tmp / "o2/predictions.csv")) - 1
        for name, r in (("4-entry MD file", base), (f"{len(names) + a.entries}-entry MD file", huge)):
            print(f"  run, 4 photos, {name}: {r['s']:.1f} s, peak {r['peak_mb']:.0f} MB, exit {r['exit']}, "
                  f"{r['lines']} lines printed")
        print(f"  ratio huge/4-entry: time {huge['s'] / base['s']:.2f}x, peak memory "
              f"{huge['peak_mb'] / base['peak_mb']:.2f}x; {rows} rows in predictions.csv")

        import torch

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from checkpoints import make_checkpoint

        sd = torch.load(make_checkpoint(tmp / "tiny.pt", depth=1, dim=64, hidden=128), weights_only=True)
        wide = {k: torch.zeros(1).expand(*[4096 if s == 64 else 16384 if s == 128 else 12288 if s == 192 else s
                                           for s in v.shape]) for k, v in sd["state_dict"].items()}
        torch.save({"args": sd["args"], "state_dict": wide}, tmp / "stride0.pt")
        env = {**__import__("os").environ, "PATOU_MODELS": str(tmp / "models")}
        r = patou("models", "install", "deepfaune", "--version", "1.4", "--from", tmp / "stride0.pt", "--accept-licence", env=env)
        print(f"  models install --from a {(tmp / 'stride0.pt').stat().st_size / 1e3:.0f} kB stride-0 checkpoint "
              f"declaring width 4096: {r['s']:.1f} s, peak {r['peak_mb']:.0f} MB, exit {r['exit']}: {r['last']}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
