"""Convert zamba's MegadetectorLite (YOLOX-tiny) checkpoint to ONNX, write its model card, verify.

Reads   the `zamba==2.7.2` wheel (MIT, DrivenData), file
        zamba/object_detection/yolox/assets/yolox_tiny_640_20220528.pth, located with
        importlib (zamba itself is never imported: its imports need packages we do not install).
        Install it with `pip install --no-deps zamba==2.7.2`.
Writes  src/patou/models/assets/megadetectorlite_yolox_tiny.{onnx,json,md}
        and LICENSE-zamba-MIT.txt (zamba's licence, copied from the wheel's dist-info).
Checks  ONNX Runtime against the torch model on real camera-trap images: raw output max abs
        difference, and identical detections after decode + NMS (IoU > 0.99, conf diff < 1e-3).
        Exits non-zero, and removes the card, when they disagree.

    python tools/convert_detector.py [--images IMG ...]

Needs torch (CPU), onnx and onnxruntime; torch is only needed here, never at inference.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from PIL import Image, ImageOps

from patou.models.card import ASSETS, ModelCard
from patou.models.detector import Detector
from patou.convert.yolox import STRIDES, yolox_tiny

ZAMBA_VERSION = "2.7.2"
CKPT = "object_detection/yolox/assets/yolox_tiny_640_20220528.pth"
NAME = "megadetectorlite_yolox_tiny"
SIZE = 640  # the card's input size (zamba's); the graph takes any multiple of 32
OTHER_SIZES = (960, 1280)  # `patou run --detector-size`: verified against torch like 640
ZAMBA_CONF, NMS_IOU = 0.25, 0.45  # zamba's MegadetectorLiteYoloXConfig defaults
OUTPUT_LAYOUT = (
    "raw: (N, 8400, 6) float32. Per anchor: [dx, dy, log_w, log_h] box regressions (not decoded), "
    "sigmoid objectness, sigmoid class score. Anchors are grid cells level by level "
    "(stride 8: 80x80, 16: 40x40, 32: 20x20), row-major within a level. Decode: "
    "cx, cy = (dx, dy + cell_x, cell_y) * stride; w, h = exp(log_w, log_h) * stride. "
    "conf = objectness * class score."
)
REPO = Path(__file__).resolve().parents[1]
REAL = Path(os.environ.get("PATOU_REAL_DATA", REPO.parent / "shared/data/camtrap-real"))
VERIFY_IMAGES = [  # bears (day, IR, a sow with cubs), blanks, and other animals at night
    "zamba-ena24-small/tests/assets/images/ena24_small/9455.jpg",
    "zamba-ena24-small/tests/assets/images/ena24_small/8786.jpg",
    "zamba-ena24-small/tests/assets/images/ena24_small/8831.jpg",
    "speciesnet-cameratrapai/test_data/american_black_bear.jpg",
    "speciesnet-cameratrapai/test_data/blank.jpg",
    "speciesnet-cameratrapai/test_data/ocelot.jpg",
    "animl-py-southwest/examples/Southwest/IMAG1065_cougar.JPG",
    "animl-py-southwest/examples/Southwest/B013_IMG_0005_empty.jpeg",
]


def zamba_checkpoint() -> Path:
    spec = importlib.util.find_spec("zamba")  # locates the package without executing it
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"zamba is not installed: pip install --no-deps zamba=={ZAMBA_VERSION}")
    version = importlib.metadata.version("zamba")
    if version != ZAMBA_VERSION:
        sys.exit(f"expected zamba {ZAMBA_VERSION}, found {version}")
    return Path(spec.submodule_search_locations[0]) / CKPT


def load_torch_model(ckpt: Path) -> torch.nn.Module:
    state = torch.load(ckpt, weights_only=True, map_location="cpu")["model"]
    model = yolox_tiny(num_classes=1)
    model.load_state_dict(state, strict=True)
    return model.eval()


def export(model: torch.nn.Module, path: Path, source: str) -> None:
    x = torch.zeros(1, 3, SIZE, SIZE)
    with warnings.catch_warnings():  # dynamo=False is deliberate: the legacy exporter's graph is plain
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, x, str(path), dynamo=False, opset_version=17, input_names=["images"], output_names=["raw"],
            dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}, "raw": {0: "batch", 1: "anchors"}},
        )
    m = onnx.load(str(path))
    # the TorchScript exporter leaves the dims after the final transpose symbolic: state them
    with torch.no_grad():
        n_anchors, n_out = model(x).shape[1:]
    dims = m.graph.output[0].type.tensor_type.shape.dim
    dims[0].dim_param, dims[1].dim_param, dims[2].dim_value = "batch", "anchors", n_out
    onnx.checker.check_model(m, full_check=True)
    # the weights file carries its own provenance, in case it travels without its card
    onnx.helper.set_model_props(m, {"licence": "MIT, Copyright (c) 2022 DrivenData Inc.", "source": source})
    onnx.save(m, str(path))


def zamba_preprocess(img: Image.Image, size: int = SIZE) -> np.ndarray:
    """Exactly zamba's MegadetectorLiteYoloX._preprocess, as the reference for our letterbox."""
    arr = np.asarray(ImageOps.pad(img, (size, size), method=Image.BICUBIC, color=None, centering=(0, 0)))
    return np.moveaxis(np.ascontiguousarray(arr, dtype=np.float32), 2, 0)


def iou_xywh(a, b) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    union = a[2] * a[3] + b[2] * b[3] - iw * ih
    return iw * ih / union if union > 0 else 0.0


def verify(model: torch.nn.Module, card: ModelCard, paths: list[Path], size: int = SIZE) -> dict:
    """Same images through zamba's preprocessing + torch and through patou's Detector (ONNX)."""
    det = Detector(card, min_conf=ZAMBA_CONF, input_size=size)
    images = [ImageOps.exif_transpose(Image.open(p)).convert("RGB") for p in paths]
    ours = np.stack([det.preprocess(im)[0] for im in images])
    ref = np.stack([zamba_preprocess(im, size) for im in images])
    pre_diff = float(np.abs(ours - ref).max())
    with torch.no_grad():
        raw_t = model(torch.from_numpy(ref)).numpy()
    raw_o = det.session.run(None, {"images": ours})[0]  # whole set as one batch: checks the dynamic axis
    diff = np.abs(raw_t - raw_o)
    n_anchors = sum((size // s) ** 2 for s in STRIDES)
    ok = pre_diff == 0 and raw_o.shape == raw_t.shape == (len(paths), n_anchors, 6)
    print(f"input {size}x{size}:")
    worst_iou, worst_conf, n_boxes = 1.0, 0.0, 0
    print(f"{'image':60s} torch  onnx  top conf (torch / onnx)")
    for p, im, rt, ro in zip(paths, images, raw_t, raw_o):
        ratio = min(size / im.width, size / im.height)
        dt, do = det.postprocess(rt, ratio, im.size), det.postprocess(ro, ratio, im.size)
        same = len(dt) == len(do)
        for a, b in zip(dt, do):
            iou, dc = iou_xywh(a.bbox, b.bbox), abs(a.conf - b.conf)
            worst_iou, worst_conf, n_boxes = min(worst_iou, iou), max(worst_conf, dc), n_boxes + 1
            same &= iou > 0.99 and dc < 1e-3
        ok &= same
        top = f"{dt[0].conf:.4f} / {do[0].conf:.4f}" if dt and do else "-"
        print(f"{p.relative_to(REAL) if p.is_relative_to(REAL) else p}"[:60].ljust(60), f"{len(dt):5d} {len(do):5d}  {top}", "" if same else "MISMATCH")
    ok &= diff.max() < 1e-2
    res = {
        "input_size": size,
        "images": len(paths),
        "letterbox_max_abs_diff_vs_ImageOps_pad": pre_diff,
        "raw_max_abs_diff": float(diff.max()),
        "score_max_abs_diff": float(diff[..., 4:].max()),
        "boxes_compared": n_boxes,
        "min_box_iou": round(worst_iou, 6),
        "max_conf_diff": float(worst_conf),
        "agree": bool(ok),
    }
    print(
        f"letterbox vs ImageOps.pad max abs diff {pre_diff:g}; raw max abs diff {res['raw_max_abs_diff']:.2e} "
        f"(scores {res['score_max_abs_diff']:.2e}); {n_boxes} boxes >= {ZAMBA_CONF}: min IoU {worst_iou:.6f}, "
        f"max conf diff {worst_conf:.1e} -> {'AGREE' if ok else 'DISAGREE'}"
    )
    return res


CARD_MD = """# MegadetectorLite (YOLOX-tiny), ONNX

`{name}.onnx` is the animal detector patou runs by default. It is DrivenData's
**MegadetectorLite**, shipped in zamba for frame selection in videos: a YOLOX-tiny
(CSPDarknet + PAFPN + decoupled head, depth 0.33, width 0.375, about 5 M parameters) trained to
find animals in camera-trap frames. One class: `animal`. It is small and fast (on 2 CPU cores,
about 40 ms for the network and 65-70 ms a frame with letterboxing a 3 MP photo), but it is not
MegaDetector v5: expect lower recall on small or hidden animals.

- **Input** `images`: float32 (N, 3, 640, 640), RGB, pixel values 0..255 (no mean/std). Height
  and width are free in the graph: `patou run --detector-size 960|1280` feeds larger letterboxes
  (any multiple of 32), verified against torch at {sizes} as well.
- **Resize**: letterbox, aspect kept, image pasted at the **top-left**, the rest filled with 0
  (black); bicubic, same geometry as `PIL.ImageOps.pad(img, (640, 640), centering=(0, 0))`.
  Boxes map back to the original image by dividing by `min(640 / W, 640 / H)`.
- **Output** `raw`: {layout}
- **Post-processing** (NumPy, `patou.models.detector`): decode, conf = objectness x class
  score, NMS IoU {nms}. zamba keeps conf >= {conf}; patou keeps >= 0.05 and lets the pipeline
  apply the user's threshold.

## Origin and licence

- Source: {source}
- Licence: MIT, Copyright (c) 2022 DrivenData Inc. Full text: `LICENSE-zamba-MIT.txt`.
  The network code in `patou/convert/yolox.py` was written for patou to match the checkpoint's
  parameter names; only the weights come from zamba.

## Regenerate

    pip install --no-deps zamba=={zamba_version}   # plus torch (CPU), onnx, onnxruntime
    python tools/convert_detector.py

## Verification (ONNX Runtime {ort} vs torch {torch}, {images} real camera-trap images, one batch)

- Our letterbox vs zamba's `ImageOps.pad` preprocessing: max abs difference {pre:g}.
- Raw output max abs difference: {raw:.1e} (objectness/class scores: {score:.1e}).
- Detections at conf >= {conf} after decode + NMS: {boxes} boxes, identical count on every image,
  min IoU {iou:.6f}, max conf difference {dconf:.1e}.
{other_lines}"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", nargs="+", type=Path, help="images to verify on (default: shared real set)")
    args = ap.parse_args()
    paths = args.images or [REAL / p for p in VERIFY_IMAGES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        sys.exit(f"verification images not found (set PATOU_REAL_DATA or pass --images): {missing}")

    ckpt = zamba_checkpoint()
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    source = f"zamba=={ZAMBA_VERSION} wheel (PyPI, DrivenData), file zamba/{CKPT}, sha256 {sha}"
    print(f"checkpoint {ckpt} sha256 {sha}")
    model = load_torch_model(ckpt)

    ASSETS.mkdir(parents=True, exist_ok=True)
    onnx_path = ASSETS / f"{NAME}.onnx"
    export(model, onnx_path, source)
    card = ModelCard(
        name=NAME,
        task="detection",
        file=onnx_path.name,
        input_size=(SIZE, SIZE),
        labels=["animal"],
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        resize="letterbox-top-left",
        pad_value=0,
        licence="MIT",
        source=source,
        description="MegadetectorLite (DrivenData, zamba): YOLOX-tiny animal detector, 1 class, "
        "640x640 top-left letterbox, RGB 0..255. Exported to ONNX by tools/convert_detector.py.",
        extra={"strides": list(STRIDES), "nms_iou": NMS_IOU, "zamba_conf": ZAMBA_CONF, "output_layout": OUTPUT_LAYOUT},
    )
    card_path = card.save(ASSETS / f"{NAME}.json")

    res = verify(model, card, paths)
    others = {str(n): verify(model, card, paths, n) for n in OTHER_SIZES}
    if not res["agree"] or not all(r["agree"] for r in others.values()):
        card_path.unlink()  # a card makes a model loadable: do not leave one for an unverified export
        print("VERIFICATION FAILED: card removed", file=sys.stderr)
        return 1
    card.extra["verification"] = res
    card.extra["verification_other_sizes"] = others
    card.save(card_path)

    dist = Path(importlib.metadata.distribution("zamba").locate_file("")) / f"zamba-{ZAMBA_VERSION}.dist-info"
    lic = next(dist.rglob("LICENSE*"))
    (ASSETS / "LICENSE-zamba-MIT.txt").write_text(lic.read_text())
    import onnxruntime

    (ASSETS / f"{NAME}.md").write_text(
        CARD_MD.format(
            name=NAME, layout=OUTPUT_LAYOUT, nms=NMS_IOU, conf=ZAMBA_CONF, source=source, zamba_version=ZAMBA_VERSION,
            ort=onnxruntime.__version__, torch=torch.__version__.split("+")[0], images=res["images"],
            pre=res["letterbox_max_abs_diff_vs_ImageOps_pad"], raw=res["raw_max_abs_diff"],
            score=res["score_max_abs_diff"], boxes=res["boxes_compared"], iou=res["min_box_iou"],
            dconf=res["max_conf_diff"], sizes=", ".join(map(str, OTHER_SIZES)),
            other_lines="".join(
                f"- At {n}x{n}: raw max abs difference {r['raw_max_abs_diff']:.1e}, {r['boxes_compared']} boxes, "
                f"min IoU {r['min_box_iou']:.6f}, max conf difference {r['max_conf_diff']:.1e}.\n"
                for n, r in others.items()),
        )
    )
    print(f"wrote {onnx_path.name} ({onnx_path.stat().st_size / 1e6:.1f} MB), {card_path.name}, {NAME}.md, LICENSE-zamba-MIT.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
