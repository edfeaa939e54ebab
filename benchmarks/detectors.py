"""Installed detectors (MegaDetector v5a / v1000, DeepFaune's YOLOv8s) on this CPU: patou against
MegaDetector's own torch path, same network and weights, same photos, one run.

Needs the checkpoints in the publishers' layouts (real ones, or the full-size random-weight networks of
`/work/refenv/bin/python tools/yolo_reference.py full --out DIR`) and the reference environment for
MegaDetector's side (megadetector 10.0.28 with yolov5 / ultralytics: never a dependency of patou;
it runs as a subprocess with REFENV's python). For each detector:
- installs the checkpoint with `patou models install ... --from` (fp32, and `--int8` checked on the
  real photos given) into a scratch models folder, unless already there;
- checks the install against the reference's recorded outputs (the tool's DIR/NAME.json + .npz):
  raw predictions (max difference relative to the largest value) and final boxes (models/yolo_boxes.agree);
- times per full-size photo, one photo at a time with every core: patou = decode as `patou run`
  decodes (JPEG draft at the detector's size) + the publisher's letterbox + ONNX Runtime + NMS,
  fp32 and int8; MegaDetector = PIL full decode + PTDetector.generate_detections_one_image (its
  letterbox, torch forward, NMS); variants interleaved, best of --repeat;
- compares the boxes patou run gives (draft decode) with MegaDetector's on every photo.

    python benchmarks/detectors.py --checkpoints DIR [--only mdv5a ...] [--photos 20] [--repeat 2]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from patou.media import DECODE_SIDE, decode
from patou.models import registry, yolo_boxes
from patou.models.card import ModelCard
from patou.models.detector import Detector
from patou.models.detector_registry import DETECTORS
from patou.record import ImageRecord

ROOT = Path(__file__).resolve().parents[1]
REAL = Path(os.environ.get("PATOU_REAL_DATA", ROOT.parent / "shared/data/camtrap-real"))
REFENV = Path(os.environ.get("PATOU_REFENV", "/work/refenv/bin/python"))
MD_CATEGORIES = {"1": "animal", "2": "person", "3": "vehicle"}
INSTALL_AS = {"mdv5a": ("megadetector", "5a"), "mdv1000-redwood": ("megadetector", "1000-redwood"),
              "mdv1000-spruce": ("megadetector", "1000-spruce"), "mdv1000-sorrel": ("megadetector", "1000-sorrel"),
              "mdv1000-larch": ("megadetector", "1000-larch"), "deepfaune-yolov8s_960": ("deepfaune-yolov8s_960", None)}


def full_size_photos(n: int) -> list[Path]:
    """Every n-th of the full-size real photos (not the 100x75 thumbnails, not the truncated file)."""
    with open(REAL / "LABELS.csv", newline="", encoding="utf-8") as f:
        rels = sorted(r["path"] for r in csv.DictReader(f)
                      if not r["path"].startswith("camtrapR-") and "truncated" not in r["path"])
    step = max(1, len(rels) // n)
    return [REAL / r for r in rels[::step][:n]]


def full_decode(p: Path) -> Image.Image:
    img = Image.open(p)
    img.load()
    return ImageOps.exif_transpose(img).convert("RGB")


def install(name: str, ckpt: Path, int8_check: Path | None) -> list[str]:
    from patou.convert.install import install as do_install

    have = registry.installed()
    if name not in have:
        family, version = INSTALL_AS[name]
        t = time.perf_counter()
        do_install(family, version, from_file=ckpt, accept_licence=True, skip_self_check=True,
                   int8=int8_check is not None, check_dirs=[int8_check] if int8_check else [], log=lambda m: print("   ", m))
        print(f"  installed {name} in {time.perf_counter() - t:.0f} s")
    have = registry.installed()
    return [n for n in (name, f"{name}-int8") if n in have]


def check_reference(name: str, refdir: Path) -> dict:
    """The installed fp32 detector against the reference's recorded raw predictions and boxes."""
    rec = json.loads((refdir / f"{name}.json").read_text())
    card = ModelCard.load(registry.installed()[name])
    det = Detector(card, min_conf=rec["threshold"])
    worst, agree = 0.0, []
    with np.load(refdir / f"{name}.npz") as z:
        for k, p in enumerate(rec["photos"]):
            img = full_decode(REAL / p["photo"])
            x, g = det.preprocess(img)
            out = det.session.run(None, {det._input: x[None]})[0][0]
            idx, ref = z[f"idx{k}"], z[f"raw{k}"]
            worst = max(worst, float(np.abs(out[idx] - ref).max() / np.abs(ref).max()))
            ours = [(d.category, d.conf, d.bbox) for d in det.postprocess(out, g, img.size)]
            theirs = [(MD_CATEGORIES[b["category"]], b["conf"], b["bbox"]) for b in p["boxes"]]
            agree.append(yolo_boxes.agree(theirs, ours, card.extra["nms_iou"]))
    return {"photos": len(rec["photos"]), "max_relative_diff_raw": worst,
            "boxes_reference": sum(a["reference"] for a in agree), "matched": sum(a["matched"] for a in agree),
            "tie_swaps": sum(a["tie_swaps"] for a in agree), "unexplained": sum(len(a["unexplained"]) for a in agree)}


def time_patou(card_name: str, paths: list[Path], threshold: float) -> tuple[float, dict]:
    card = ModelCard.load(registry.installed()[card_name])
    det = Detector(card, min_conf=threshold)
    side = max(DECODE_SIDE, card.input_size[0])
    per, boxes = [], {}
    for p in paths:
        t = time.perf_counter()
        img = decode(ImageRecord(path=p, root=p.parent), side)
        dets = det.detect(img)
        per.append(time.perf_counter() - t)
        boxes[str(p)] = [(d.category, d.conf, d.bbox) for d in dets]
    return float(np.median(per)) * 1e3, boxes


def time_md(name: str, ckpt: Path, paths: list[Path], threshold: float) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "md.json"
        cmd = [str(REFENV), str(ROOT / "tools/yolo_reference.py"), "run", str(ckpt), "--network", name,
               "--threshold", str(threshold), "--out", str(out), "--images", *map(str, paths)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        res = json.loads(out.read_text())
    per = [t for _, t in res["times"]]
    boxes = {r["file"]: [(MD_CATEGORIES[b["category"]], b["conf"], b["bbox"]) for b in r["detections"]]
             for r in res["images"]}
    return float(np.median(per)) * 1e3, boxes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoints", type=Path, required=True, help="folder of NAME.pt (+ the tool's NAME.json/.npz)")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--photos", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--no-int8", action="store_true")
    ap.add_argument("--models", type=Path, default=None, help="scratch models folder (default: a temp folder)")
    args = ap.parse_args(argv)
    if not (REAL / "LABELS.csv").is_file():
        print(f"real photos not found at {REAL}", file=sys.stderr)
        return 2
    models = args.models or Path(tempfile.mkdtemp(prefix="patou-detectors-"))
    os.environ[registry.MODELS_ENV] = str(models)
    paths = full_size_photos(args.photos)
    int8_check = REAL / "speciesnet-cameratrapai" if not args.no_int8 else None
    print(f"{len(paths)} full-size photos; {os.cpu_count()} cores; models in {models}")
    rows = []
    for name, entry in DETECTORS.items():
        ckpt = args.checkpoints / f"{name}.pt"
        if (args.only and name not in args.only) or not ckpt.is_file():
            continue
        print(f"{name} ({entry.architecture} @ {entry.input_size})")
        cards = install(name, ckpt, int8_check)
        ref = check_reference(name, args.checkpoints) if (args.checkpoints / f"{name}.json").is_file() else None
        if ref:
            print(f"  against the reference's recorded outputs: max raw difference {ref['max_relative_diff_raw']:.1e} "
                  f"(relative), boxes {ref['matched']}/{ref['boxes_reference']} matched, {ref['tie_swaps']} tie swaps, "
                  f"{ref['unexplained']} unexplained")
        threshold = entry.conservative_threshold
        best: dict[str, float] = {}
        boxes: dict[str, dict] = {}
        for _ in range(max(1, args.repeat)):  # variants interleaved: load hits all alike
            ms, boxes["md"] = time_md(name, ckpt, paths, threshold)
            best["md"] = min(best.get("md", ms), ms)
            for c in cards:
                ms, boxes[c] = time_patou(c, paths, threshold)
                best[c] = min(best.get(c, ms), ms)
        agreement = {}
        for c in cards:
            a = [yolo_boxes.agree(boxes["md"][str(p)], boxes[c][str(p)], entry.nms_iou, conf_tol=0.01, corner_tol=0.01)
                 for p in paths]
            agreement[c] = (sum(x["matched"] for x in a), sum(x["reference"] for x in a),
                            sum(not x["unexplained"] for x in a))
        row = {"detector": name, "md_ms": best["md"], "fp32_ms": best.get(name), "int8_ms": best.get(f"{name}-int8"),
               "int8_kept": f"{name}-int8" in cards, "reference": ref, "agreement": agreement}
        rows.append(row)
        for c in cards:
            m, n, ok = agreement[c]
            print(f"  {c}: {best[c]:.0f} ms per photo, MegaDetector's torch path {best['md']:.0f} ms: "
                  f"x{best['md'] / best[c]:.2f}; boxes >= {threshold} (patou's draft decode vs MD's full decode): "
                  f"{m}/{n} matched, photos agreeing {ok}/{len(paths)}")
        if f"{name}-int8" not in cards and not args.no_int8:
            print(f"  int8: not kept (it did not keep the fp32 boxes on {int8_check.name})")
    print(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
