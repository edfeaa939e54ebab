"""Make YOLO detector checkpoints with the publishers' own code, and record the publishers' outputs.

Run ONLY with the reference environment (/work/refenv: torch 2.14.1, yolov5 7.0.14, ultralytics 8.4,
megadetector 10.0.28); these packages are AGPL/GPL and never a dependency of patou or its tests:

    /work/refenv/bin/python tools/yolo_reference.py fixtures            # tests/data/yolo/*.pt + *.npz
    /work/refenv/bin/python tools/yolo_reference.py full --out DIR      # full-size networks, random weights
    /work/refenv/bin/python tools/yolo_reference.py run CKPT --images ... --out X.json   # MD's own path (benchmark)

Each network is built by the publisher's class from the publisher's yaml (YOLOv5's `models.yolo.Model`,
Ultralytics' `DetectionModel`), with random weights: the publisher's initialisation, then every
BatchNorm given random statistics and affine parameters (so fusing and eps matter, as in a trained
file). It is saved the way the publisher's files are: YOLOv5's `{'model': model.half(), 'ema': None,
...}` with classes pickled as `models.yolo` / `models.common` (MDv5a's layout; the MDv1000 YOLOv5
files also carry `megadetector_info.json`, added with MegaDetector's own function), and for
YOLOv8/v11 a training checkpoint passed through Ultralytics' `strip_optimizer` (the layout of
released files). The reference outputs are recorded on real photos of ../shared/data/camtrap-real,
decoded as MegaDetector does (PIL, EXIF-rotated, RGB) and letterboxed by the publisher's code:
- MD models: MegaDetector's PTDetector (`preprocess_image` for the network input, the model's own
  forward for the raw predictions, `generate_detections_one_image` for the final boxes: MD's NMS,
  its rescaling, rounding and truncation);
- DeepFaune's detector: Ultralytics' LetterBox and `YOLO(path).predict(imgsz=960)` (its NMS, IoU 0.7).
Raw predictions are stored for a subset of anchors (the highest-scoring and an even spread), with
their indices; the network input's geometry and SHA-256 are stored so a test can tell patou's
letterbox is the publisher's to the pixel.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import os
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
REAL = Path(os.environ.get("PATOU_REAL_DATA", ROOT.parent / "shared/data/camtrap-real"))
FIXTURES = ROOT / "tests/data/yolo"
NAMES = ["animal", "person", "vehicle"]
PHOTOS = [  # a bear by day, a person with a dog, a night-IR animal, a vehicle
    "zamba-ena24-small/tests/assets/images/ena24_small/8831.jpg",
    "speciesnet-cameratrapai/test_data/human.jpg",
    "animl-py-southwest/examples/Southwest/IMAG1065_cougar.JPG",
    "speciesnet-cameratrapai/test_data/vehicle.jpg",
]
CALIBRATION = "animl-py-southwest/examples/Southwest/2021-05-28_SYFR0041_deer.JPG"  # not one of PHOTOS
KEEP_TOP, KEEP_SPREAD = 300, 300  # raw anchors stored per photo

# name -> how the publisher's file is made: family, yaml, scale or multiples, input size, MD metadata
FULL = 0.0001  # anchors passing 0.5 on the calibration photo (see spread_scores)
NETWORKS = {
    "mdv5a": dict(family="yolov5", yaml="hub/yolov5x6.yaml", size=1280, passing=FULL),
    "mdv1000-redwood": dict(family="yolov5", yaml="hub/yolov5x6.yaml", size=1280, md="v1000.0.0-redwood", passing=FULL),
    "mdv1000-spruce": dict(family="yolov5", yaml="yolov5s.yaml", size=640, md="v1000.0.0-spruce", passing=FULL),
    "mdv1000-sorrel": dict(family="ultralytics", yaml="11/yolo11.yaml", scale="s", size=960, md="v1000.0.0-sorrel", passing=FULL),
    "mdv1000-larch": dict(family="ultralytics", yaml="11/yolo11.yaml", scale="l", size=640, md="v1000.0.0-larch", passing=FULL),
    "deepfaune-yolov8s_960": dict(family="ultralytics", yaml="v8/yolov8.yaml", scale="s", size=960, deepfaune=True, passing=FULL),
}
# small widths of the same classes, for tests/data (a few hundred KB each)
TINY = {
    "yolov5-p6-tiny": dict(NETWORKS["mdv5a"], multiples=(0.33, 0.04), passing=0.003),
    "yolov5-p5-tiny": dict(NETWORKS["mdv1000-spruce"], multiples=(0.33, 0.04), md="v1000.0.0-spruce", passing=0.003),
    "yolov8-tiny": dict(NETWORKS["deepfaune-yolov8s_960"], scale="t", scales={"t": [0.33, 0.04, 1024]}, passing=0.003),
    "yolov11-tiny": dict(NETWORKS["mdv1000-sorrel"], scale="t", scales={"t": [0.5, 0.04, 1024]}, passing=0.003),
    # the 'l' scale switches C3k2 to C3k blocks: small widths of that path too
    "yolov11l-tiny": dict(NETWORKS["mdv1000-larch"], scale="l", scales={"l": [0.5, 0.04, 512]}, passing=0.003),
}


def _yolov5_dir() -> Path:
    import yolov5

    return Path(yolov5.__file__).parent


def _quiet():
    return redirect_stdout(io.StringIO())


def randomise_batchnorm(model: torch.nn.Module, seed: int) -> None:
    """BN statistics and affine parameters away from their init values (mean 0, var 1, weight 1,
    bias 0), so that fusing, eps and the running statistics all change the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) * 0.6 + 0.7)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)


def _output_convs(model, spec: dict) -> list[tuple[torch.nn.Conv2d, str]]:
    """The last conv of each head branch: (conv, 'score' | 'box')."""
    head = model.model[-1]
    if spec["family"] == "yolov5":
        return [(m, "yolov5") for m in head.m]
    return [(b[-1], "box") for b in head.cv2] + [(c[-1], "score") for c in head.cv3]


def spread_scores(model, spec: dict, photo: Image.Image, passing: float = 0.003) -> None:
    """A random network scores every anchor about the same (~0.01: the publisher's bias init
    dominates). Rescale each head's output conv from its outputs on one real photo (letterboxed,
    not one of the recorded photos): box logits to unit spread, score logits so that a fraction
    `passing` of that photo's anchors pass 0.5 (0.3 % for the fixtures, 0.01 % for the full-size
    networks, which have ten times the anchors and must give a handful of boxes per photo). (Flat regions such as a photo's black caption bar still
    give rows of equal scores, whose order in NMS is arbitrary, in the publishers' code as in
    patou's: the tests allow for such ties.) Scores then range over 0..1 and depend on the image, and NMS
    has real work to do. Still random weights; only their scale is set."""
    from ultralytics.data.augment import LetterBox

    convs = _output_convs(model, spec)
    seen = {}
    hooks = [c.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, o.detach())) for k, (c, _) in enumerate(convs)]
    x = LetterBox(spec["size"], auto=True, stride=64)(image=np.asarray(photo)).astype(np.float32)
    with torch.no_grad():
        model(torch.from_numpy(np.full_like(x, 114.0).transpose(2, 0, 1).copy())[None] / 255.0)
        flat = {k: o[0].flatten(1).amax(1) for k, o in seen.items()}  # a flat grey input, its edges included
        model(torch.from_numpy(x.transpose(2, 0, 1).copy())[None] / 255.0)
    for h in hooks:
        h.remove()
    nc = len(NAMES)
    z = {k: (o[0].flatten(1) - o[0].flatten(1).mean(1, keepdim=True)) / o[0].flatten(1).std(1, keepdim=True).clamp_min(1e-6)
         for k, o in seen.items()}
    score_rows = {}
    for k, (_, kind) in enumerate(convs):
        if kind == "yolov5":
            no = nc + 5
            score_rows[k] = [a * no + 4 for a in range(z[k].shape[0] // no)]  # objectness
        elif kind == "score":
            score_rows[k] = list(range(z[k].shape[0]))
    pooled = torch.cat([z[k][rows].flatten() for k, rows in score_rows.items()])
    gain = 3.0
    cut = float(torch.quantile(pooled[torch.randperm(len(pooled))[:200000]], 1.0 - passing)) * gain
    with torch.no_grad():
        for k, (conv, kind) in enumerate(convs):
            o = seen[k][0].flatten(1)
            mean, std = o.mean(1), o.std(1).clamp_min(1e-6)
            g, shift = torch.full_like(mean, 1.5), torch.zeros_like(mean)
            for r in score_rows.get(k, []):
                g[r], shift[r] = gain, -cut
                if passing < 0.001:  # the full-size networks: nothing on flat grey, edges included
                    shift[r] = -max(cut, float((flat[k][r] - mean[r]) / std[r]) * gain + 1.0)
            if kind == "yolov5":  # class logits: a spread, centred
                for a in range(len(mean) // (nc + 5)):
                    g[a * (nc + 5) + 5: (a + 1) * (nc + 5)] = 2.0
            conv.weight.mul_((g / std).view(-1, 1, 1, 1))
            conv.bias.copy_((conv.bias - mean) * g / std + shift)


def build(spec: dict, seed: int):
    torch.manual_seed(seed)
    if spec["family"] == "yolov5":
        d = str(_yolov5_dir())
        if d not in sys.path:
            sys.path.insert(0, d)  # the publisher's layout: classes pickled as models.yolo / models.common
        import yaml
        from models.yolo import Model  # noqa  (YOLOv5's own code, from the reference env only)

        cfg = yaml.safe_load((_yolov5_dir() / "models" / spec["yaml"]).read_text())
        cfg["nc"] = len(NAMES)
        if "multiples" in spec:
            cfg["depth_multiple"], cfg["width_multiple"] = spec["multiples"]
        with _quiet():
            model = Model(cfg, ch=3, nc=len(NAMES))
        model.names = list(NAMES)
    else:
        import ultralytics
        from ultralytics.nn.tasks import DetectionModel, yaml_model_load

        cfg = yaml_model_load(Path(ultralytics.__file__).parent / "cfg/models" / spec["yaml"])
        cfg["nc"] = len(NAMES)
        if "scales" in spec:
            cfg["scales"] = spec["scales"]
        cfg["scale"] = spec["scale"]
        model = DetectionModel(cfg, ch=3, nc=len(NAMES), verbose=False)
        model.names = dict(enumerate(NAMES))
    randomise_batchnorm(model, seed)
    model.eval()
    spread_scores(model, spec, load_photo(CALIBRATION), spec.get("passing", 0.003))
    return model


def _add_md_metadata(path: Path, spec: dict, model_type: str) -> None:
    """MegaDetector's own function adds megadetector_info.json to its MDv1000 files."""
    from megadetector.detection.pytorch_detector import add_metadata_to_megadetector_model_file

    meta = {"metadata_format_version": 1.0, "model_version_string": spec["md"], "image_size": spec["size"],
            "model_type": model_type}
    plain = path.with_name(path.stem + ".nometa.pt")
    path.replace(plain)
    with _quiet():
        add_metadata_to_megadetector_model_file(str(plain), str(path), meta)
    plain.unlink()


def _forget_grids(model, spec: dict) -> None:
    """Drop the grids the head cached during a forward (plain attributes, not state): a file saved
    right after training holds none, and the fixtures stay small."""
    head = model.model[-1]
    if spec["family"] == "yolov5":
        head.grid = [torch.empty(0) for _ in range(head.nl)]
        head.anchor_grid = [torch.empty(0) for _ in range(head.nl)]
    else:
        for k in ("anchors", "strides", "shape"):
            head.__dict__.pop(k, None)


def save(model, spec: dict, path: Path) -> Path:
    """Save as the publisher's released files are saved."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _forget_grids(model, spec)
    if spec["family"] == "yolov5":
        ckpt = {"epoch": -1, "best_fitness": None, "model": copy.deepcopy(model).half(), "ema": None, "updates": None,
                "optimizer": None, "wandb_id": None, "opt": {"imgsz": spec["size"], "cfg": spec["yaml"]},
                "date": "2022-06-15T00:00:00"}
        torch.save(ckpt, path)
        if spec.get("md"):
            _add_md_metadata(path, spec, "yolov5")
    else:
        from ultralytics.utils.torch_utils import strip_optimizer

        ckpt = {"epoch": 10, "best_fitness": 0.5, "model": None, "ema": copy.deepcopy(model).half(), "updates": 100,
                "optimizer": None, "train_args": {"task": "detect", "imgsz": spec["size"], "model": spec["yaml"]},
                "date": "2025-07-01T00:00:00"}
        torch.save(ckpt, path)
        with _quiet():
            strip_optimizer(path)
        if spec.get("md"):
            _add_md_metadata(path, spec, "ultralytics")
    return path


def load_photo(rel: str) -> Image.Image:
    """As MegaDetector's vis_utils.load_image: PIL, EXIF rotation, RGB."""
    img = Image.open(REAL / rel)
    img.load()
    return ImageOps.exif_transpose(img).convert("RGB")


def _scores(raw: np.ndarray, yolov5: bool) -> np.ndarray:
    return raw[:, 4] * raw[:, 5:].max(1) if yolov5 else raw[:, 4:].max(1)


def _subset(raw: np.ndarray, yolov5: bool) -> np.ndarray:
    score = _scores(raw, yolov5)
    top = np.argsort(-score, kind="stable")[:KEEP_TOP]
    spread = np.linspace(0, len(raw) - 1, KEEP_SPREAD).astype(np.int64)
    return np.unique(np.concatenate([top, spread]))


class MDReference:
    """MegaDetector's own torch path (PTDetector) for an MD checkpoint."""

    def __init__(self, ckpt: Path, spec: dict):
        if spec["family"] == "yolov5":
            d = str(_yolov5_dir())
            if d not in sys.path:
                sys.path.insert(0, d)
        from megadetector.detection.pytorch_detector import PTDetector

        opts = {"model_type": "yolov5" if spec["family"] == "yolov5" else "ultralytics", "force_cpu": True}
        with _quiet():
            self.det = PTDetector(str(ckpt), detector_options=opts)
            if spec["family"] == "yolov5" and self.det.default_image_size != spec["size"]:
                self.det.default_image_size = spec["size"]  # MDv5 files carry no metadata: MD assumes 1280

    def network_input(self, img: Image.Image) -> np.ndarray:
        with _quiet():
            return self.det.preprocess_image(img, image_id="x")["img_processed"]

    def raw(self, canvas: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(canvas.transpose(2, 0, 1)))[None].float() / 255.0
        with torch.no_grad():
            out = self.det.model(x)[0]
        out = out[0].numpy()
        return out if out.shape[0] > out.shape[1] else out.T  # Ultralytics: (4 + nc, A) -> (A, 4 + nc)

    def boxes(self, img: Image.Image, threshold: float) -> list[dict]:
        with _quiet():
            r = self.det.generate_detections_one_image(img, image_id="x", detection_threshold=threshold)
        return r["detections"]


class UltralyticsReference:
    """Ultralytics' own predict (what DeepFaune's detector runs): LetterBox(auto), NMS IoU 0.7."""

    def __init__(self, ckpt: Path, spec: dict):
        from ultralytics import YOLO

        self.yolo = YOLO(str(ckpt))
        self.size = spec["size"]
        self.model = self.yolo.model.float().fuse().eval()

    def network_input(self, img: Image.Image) -> np.ndarray:
        from ultralytics.data.augment import LetterBox

        return LetterBox(self.size, auto=True, stride=int(self.model.stride.max()))(image=np.asarray(img))

    def raw(self, canvas: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(canvas.transpose(2, 0, 1)))[None].float() / 255.0
        with torch.no_grad():
            out = self.model(x)[0]
        return out[0].numpy().T

    def boxes(self, img: Image.Image, threshold: float) -> list[dict]:
        bgr = np.ascontiguousarray(np.asarray(img)[:, :, ::-1])  # DeepFaune hands Ultralytics a cv2 (BGR) image
        r = self.yolo.predict(bgr, imgsz=self.size, conf=threshold, verbose=False, device="cpu")[0]
        h, w = img.height, img.width
        out = []
        for (x1, y1, x2, y2), c, k in zip(r.boxes.xyxy.tolist(), r.boxes.conf.tolist(), r.boxes.cls.tolist()):
            out.append({"category": str(int(k) + 1), "conf": round(c, 4),
                        "bbox": [round(x1 / w, 4), round(y1 / h, 4), round((x2 - x1) / w, 4), round((y2 - y1) / h, 4)]})
        return out


def reference(ckpt: Path, spec: dict):
    return UltralyticsReference(ckpt, spec) if spec.get("deepfaune") else MDReference(ckpt, spec)


def record(ckpt: Path, spec: dict, photos: list[str], threshold: float, npz: Path | None) -> dict:
    """The publisher's network input, raw predictions (a subset) and final boxes on each photo."""
    ref = reference(ckpt, spec)
    yolov5 = spec["family"] == "yolov5"
    out, arrays = {"photos": []}, {}
    for k, rel in enumerate(photos):
        img = load_photo(rel)
        canvas = ref.network_input(img)
        raw = ref.raw(canvas)
        idx = _subset(raw, yolov5)
        arrays[f"idx{k}"], arrays[f"raw{k}"] = idx.astype(np.int32), raw[idx].astype(np.float32)
        out["photos"].append({
            "photo": rel, "image_size": [img.width, img.height], "input_shape": list(canvas.shape[:2]),
            "input_sha256": hashlib.sha256(np.ascontiguousarray(canvas).tobytes()).hexdigest(),
            "anchors": int(raw.shape[0]), "outputs": int(raw.shape[1]),
            "max_score": float(_scores(raw, yolov5).max()),
            "boxes": ref.boxes(img, threshold),
        })
    if npz is not None:
        np.savez_compressed(npz, **arrays)
    return out


def make(name: str, spec: dict, out_dir: Path, photos: list[str], threshold: float, seed: int) -> dict:
    t = time.perf_counter()
    model = build(spec, seed)
    ckpt = save(model, spec, out_dir / f"{name}.pt")
    params = sum(p.numel() for p in model.parameters())
    del model
    info = {"name": name, "checkpoint": ckpt.name, "family": spec["family"], "yaml": spec["yaml"],
            "scale": spec.get("scale"), "scales": spec.get("scales"), "multiples": spec.get("multiples"),
            "input_size": spec["size"], "parameters": params, "seed": seed, "threshold": threshold,
            "nms": "ultralytics predict (IoU 0.7)" if spec.get("deepfaune") else "MegaDetector PTDetector (classic, IoU 0.45)",
            "reference": {"torch": torch.__version__, "packages": _versions()},
            **record(ckpt, spec, photos, threshold, out_dir / f"{name}.npz")}
    (out_dir / f"{name}.json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"{name}: {params:,} parameters, {ckpt.stat().st_size / 1e3:.0f} kB, "
          f"boxes per photo {[len(p['boxes']) for p in info['photos']]}, {time.perf_counter() - t:.1f} s")
    return info


def _versions() -> dict:
    from importlib.metadata import version

    return {p: version(p) for p in ("yolov5", "ultralytics", "megadetector")}


def run_md(ckpt: Path, spec_name: str, images: list[Path], threshold: float, repeat: int) -> dict:
    """For benchmarks/detectors.py: MegaDetector's own path, timed per photo (load + detect)."""
    spec = NETWORKS[spec_name]
    ref = reference(ckpt, spec)
    torch.set_num_threads(os.cpu_count() or 1)
    results, times = [], []
    for r in range(repeat):
        for p in images:
            t = time.perf_counter()
            img = Image.open(p)
            img.load()
            img = ImageOps.exif_transpose(img).convert("RGB")
            boxes = ref.boxes(img, threshold)
            times.append((str(p), time.perf_counter() - t))
            if r == 0:
                results.append({"file": str(p), "detections": boxes})
    return {"images": results, "times": times, "torch": torch.__version__, "threads": torch.get_num_threads()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fixtures")
    f.add_argument("--out", type=Path, default=FIXTURES)
    f.add_argument("--only", nargs="*")
    full = sub.add_parser("full")
    full.add_argument("--out", type=Path, required=True)
    full.add_argument("--only", nargs="*")
    run = sub.add_parser("run")
    run.add_argument("checkpoint", type=Path)
    run.add_argument("--network", required=True, choices=sorted(NETWORKS))
    run.add_argument("--images", type=Path, nargs="+", required=True)
    run.add_argument("--threshold", type=float, default=0.005)
    run.add_argument("--repeat", type=int, default=1)
    run.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    if args.cmd == "run":
        res = run_md(args.checkpoint, args.network, args.images, args.threshold, args.repeat)
        args.out.write_text(json.dumps(res) + "\n")
        return 0
    if not (REAL / "LABELS.csv").is_file():
        print(f"real photos not found at {REAL} (set PATOU_REAL_DATA)", file=sys.stderr)
        return 2
    table = TINY if args.cmd == "fixtures" else NETWORKS
    for i, (name, spec) in enumerate(table.items()):
        if args.only and name not in args.only:
            continue
        make(name, spec, args.out, PHOTOS[:3] if args.cmd == "fixtures" else PHOTOS, 0.05, seed=1000 + i)
    return 0


if __name__ == "__main__":
    sys.exit(main())
