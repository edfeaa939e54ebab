"""DeepFaune's own networks, built with timm (the reference implementation), and what they compute.

For every DeepFaune version patou offers, this builds the network exactly as DeepFaune's
`classifTools.py` does (`timm.create_model(BACKBONE, pretrained=False, num_classes=N, ...)` under a
module whose attribute is `base_model`), gives it random weights that make every parameter matter
(LayerScale, norms, biases, class and register tokens all away from their init), saves it in
DeepFaune's checkpoint layout (`{"args": {...}, "state_dict": {"base_model.<timm key>": tensor}}`,
what every public loader reads), reloads the file the way DeepFaune's `loadWeights` does, and
records that network's logits and features (`forward_features(x)[:, 0]`, DeepFaune's embedding)
on real crops cut exactly as DeepFaune cuts them (`cropSquareCVtoPIL` on a MegaDetector-style
normalised box, then its torchvision transforms: bicubic resize, ImageNet normalisation).

    /work/refenv/bin/python tools/deepfaune_reference.py fixtures
        tiny configs of the same timm classes (2 blocks, narrow; same class token / registers /
        RoPE / position-grid structure), one checkpoint per version + reference.json + crops.npz
        in tests/data/deepfaune/ (tests/test_deepfaune_reference.py compares patou with them)
    /work/refenv/bin/python tools/deepfaune_reference.py full 1.5 --out /tmp/df15 --patou .venv/bin/python
        the full-size network (ViT-L, ~1.2 GB of random weights), then `patou models install
        --from` with patou's own environment and the max difference of its ONNX from timm

The reference environment (timm 1.0.31, torch 2.14.1, torchvision 0.29.1) is never a dependency
of patou or of its tests; only this script imports timm.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torchvision
from PIL import Image, ImageOps
from torch import nn, tensor
from torchvision.transforms import InterpolationMode, transforms

ROOT = Path(__file__).resolve().parents[1]
REAL = Path(os.environ.get("PATOU_REAL_DATA", ROOT.parent / "shared/data/camtrap-real"))
FIXTURES = ROOT / "tests/data/deepfaune"

# What each version's classifTools.py builds. 1.1-1.4: DINOv2 ViT-L/14 at 182 px with
# dynamic_img_size=True (the 37x37 position grid of 518 px resampled by timm at run time);
# 1.5: DINOv3 ViT-L/16 at 224 px with global_pool="token" (its model_args already set
# dynamic_img_size=True; passing it again changes nothing). Class counts: len(txt_animalclasses).
DINOV2, DINOV3 = "vit_large_patch14_dinov2.lvd142m", "vit_large_patch16_dinov3.lvd1689m"
VERSIONS = {
    "1.1": {"backbone": DINOV2, "crop": 182, "classes": 26, "create": {"dynamic_img_size": True}},
    "1.2": {"backbone": DINOV2, "crop": 182, "classes": 30, "create": {"dynamic_img_size": True}},
    "1.3": {"backbone": DINOV2, "crop": 182, "classes": 34, "create": {"dynamic_img_size": True}},
    "1.4": {"backbone": DINOV2, "crop": 182, "classes": 38, "create": {"dynamic_img_size": True}},
    "1.5": {"backbone": DINOV3, "crop": 224, "classes": 40, "create": {"global_pool": "token", "dynamic_img_size": True}},
}
# The fixtures' reduced width. Heads are 64 wide in every DINOv2 and DINOv3 ViT patou converts (a
# checkpoint does not say how many there are; below 64 the DINOv2 one has one head, as patou's
# vit.py reads it); the DINOv3 one keeps two heads (RoPE per head) and its 4 registers.
TINY = {DINOV2: {"embed_dim": 32, "depth": 2, "num_heads": 1},
        DINOV3: {"embed_dim": 128, "depth": 2, "num_heads": 2}}
# Real photos and the best animal box of patou's bundled detector on each (normalised x, y, w, h,
# found once with patou; any box would do, these are animals). The first fox's box is wide and at
# the bottom edge, so its square is clipped by the image there (by 38 % of its side).
PHOTOS = [
    ("speciesnet-cameratrapai/test_data/american_black_bear.jpg", (0.4236, 0.4285, 0.338, 0.3378)),
    ("zamba-ena24-small/tests/assets/images/ena24_small/4330.jpg", (0.2451, 0.802, 0.6584, 0.1772)),
    ("animl-py-southwest/examples/Southwest/2021-08-08_RCNX0063_fox.JPG", (0.3193, 0.5703, 0.1918, 0.1573)),
    ("animl-py-southwest/examples/Southwest/IMAG0031_wolf.JPG", (0.4988, 0.6939, 0.1261, 0.133)),
]
MARGIN = 1.0  # logits between top-1 and top-2 on every crop of a fixture
MEAN, STD = (0.4850, 0.4560, 0.4060), (0.2290, 0.2240, 0.2250)  # DeepFaune's Normalize


class Model(nn.Module):
    """DeepFaune's classifTools.Model: the timm network as `base_model`, so its state_dict keys are
    `base_model.<timm key>`."""

    def __init__(self, backbone: str, num_classes: int, create: dict, tiny: dict | None = None):
        super().__init__()
        self.base_model = timm.create_model(backbone, pretrained=False, num_classes=num_classes, **create, **(tiny or {}))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """DeepFaune 1.4/1.5's Model.predict without the softmax: logits and the class-token embedding."""
        self.eval()
        emb = self.base_model.forward_features(x)
        return self.base_model.forward_head(emb).numpy(), emb[:, 0, :].numpy()


def randomise(model: nn.Module, seed: int, half: bool) -> None:
    """Random weights where every parameter counts: scaled by fan-in so a full-size ViT-L stays
    numerically sane, LayerScale about 0.5 (timm's init is 1e-5, which would hide the blocks),
    norms and biases off their init, a wide head so top-1 is decided by a clear margin."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            r = torch.randn(p.shape, generator=g)
            if "norm" in name:
                v = 1 + 0.2 * r if leaf == "weight" else 0.1 * r
            elif leaf.startswith("gamma"):
                v = 0.5 * r
            elif leaf == "bias":
                v = 0.05 * r
            elif leaf in ("cls_token", "reg_token", "pos_embed"):
                v = 0.5 * r
            elif "head" in name:
                v = r * (6.0 / p.shape[1] ** 0.5)
            else:  # linear and patch-embedding weights
                v = r * (1.6 / (p[0].numel()) ** 0.5)
            p.copy_(v.half().float() if half else v)  # fp16 values: what the saved file holds


def save_checkpoint(model: Model, version: str, path: Path, half: bool) -> Path:
    cfg = VERSIONS[version]
    state = model.state_dict()  # an OrderedDict with its `_metadata`, as `torch.save(model.state_dict())` writes
    for k, v in state.items():
        state[k] = (v.half() if half else v).clone()
    # what the public loaders read from `args` (backbone, num_classes) and a few training fields
    args = {"backbone": cfg["backbone"], "num_classes": cfg["classes"], "lr": 1e-4, "epochs": 30}
    torch.save({"args": args, "state_dict": state}, path)
    return path


def load_as_deepfaune(path: Path, version: str, tiny: dict | None) -> Model:
    """DeepFaune's loadWeights: torch.load, the class count checked, fp16 upcast, a strict load."""
    cfg = VERSIONS[version]
    model = Model(cfg["backbone"], cfg["classes"], cfg["create"], tiny)
    params = torch.load(path, map_location="cpu", weights_only=False)
    if params["args"]["num_classes"] != cfg["classes"]:
        raise SystemExit(f"{path}: {params['args']['num_classes']} classes")
    model.load_state_dict({k: v.float() if torch.is_floating_point(v) else v for k, v in params["state_dict"].items()})
    return model.eval()


def deepfaune_box(box_norm, width: int, height: int) -> list[int]:
    """DetectorJSON.convertJSONboxToBox: an MD-style normalised box as DeepFaune's pixel box."""
    xmin, ymin = int(box_norm[0] * width), int(box_norm[1] * height)
    return [xmin, ymin, xmin + int(box_norm[2] * width), ymin + int(box_norm[3] * height)]


def crop_square(img: Image.Image, box) -> Image.Image:
    """cropSquareCVtoPIL: the short side grown by int(difference / 2) on each side, then the
    array sliced with int() bounds clipped to the image."""
    x1, y1, x2, y2 = box
    xsize, ysize = x2 - x1, y2 - y1
    if xsize > ysize:
        y1, y2 = y1 - int((xsize - ysize) / 2), y2 + int((xsize - ysize) / 2)
    if ysize > xsize:
        x1, x2 = x1 - int((ysize - xsize) / 2), x2 + int((ysize - xsize) / 2)
    a = np.asarray(img)
    height, width = a.shape[:2]
    return Image.fromarray(a[max(0, int(y1)):min(int(y2), height), max(0, int(x1)):min(int(x2), width)])


def real_crops(size: int) -> tuple[np.ndarray, torch.Tensor, list[dict]]:
    """(n, size, size, 3) uint8 crops after DeepFaune's resize, the network input, and where each came from."""
    resize = transforms.Resize(size=(size, size), interpolation=InterpolationMode.BICUBIC, max_size=None, antialias=None)
    to_input = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean=tensor(MEAN), std=tensor(STD))])
    pixels, inputs, meta = [], [], []
    for rel, box in PHOTOS:
        path = REAL / rel
        if not path.is_file():
            raise SystemExit(f"{path}: missing (the real photos live in ../shared/data/camtrap-real)")
        img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")  # decoded as patou decodes (PIL)
        pbox = deepfaune_box(box, *img.size)
        c = resize(crop_square(img, pbox))
        # how much a crop moved by one pixel (right and down) differs: the scale against which a
        # crop that rounds the box differently (patou's) is judged
        moved = np.asarray(resize(crop_square(img, [pbox[0] + 1, pbox[1] + 1, pbox[2] + 1, pbox[3] + 1])))
        pixels.append(np.asarray(c))
        inputs.append(to_input(c))
        meta.append({"photo": rel, "box": list(box), "deepfaune_pixel_box": pbox, "image_size": list(img.size),
                     "one_pixel_shift_mean_abs_diff": float(np.abs(moved.astype(int) - pixels[-1].astype(int)).mean())})
    return np.stack(pixels), torch.stack(inputs), meta


def fixtures(out: Path, seed: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    crops, inputs, ref = {}, {}, {"timm": timm.__version__, "torch": torch.__version__,
                                  "torchvision": torchvision.__version__, "versions": {}}
    for size in sorted({c["crop"] for c in VERSIONS.values()}):
        crops[f"crops_{size}"], inputs[size], ref[f"crops_{size}"] = real_crops(size)
    for i, (v, cfg) in enumerate(VERSIONS.items()):
        tiny = TINY[cfg["backbone"]]
        # the first seed whose top-1 wins by at least MARGIN logits on every crop: with random
        # weights a near-tie is chance, and int8 rounding could flip it
        for s in range(seed + 100 * i, seed + 100 * i + 100):
            model = Model(cfg["backbone"], cfg["classes"], cfg["create"], tiny)
            randomise(model, s, half=True)
            path = save_checkpoint(model, v, out / f"tiny-v{v}.pt", half=True)
            logits, features = load_as_deepfaune(path, v, tiny).predict(inputs[cfg["crop"]])
            top2 = np.sort(logits, axis=1)[:, -2:]
            if (top2[:, 1] - top2[:, 0]).min() >= MARGIN:
                break
        else:
            raise SystemExit(f"v{v}: no seed in 100 gives a top-1 margin of {MARGIN}")
        ref["versions"][v] = {
            "checkpoint": path.name, "backbone": cfg["backbone"], "create_model": {**cfg["create"], **tiny},
            "num_classes": cfg["classes"], "crop": cfg["crop"], "seed": s, "dtype": "float16",
            "min_top1_margin": float((top2[:, 1] - top2[:, 0]).min()),
            "logits": logits.tolist(), "features": features.tolist(), "top1": logits.argmax(1).tolist(),
        }
        print(f"v{v}: {path.name} {path.stat().st_size / 1024:.0f} KB, top-1 {logits.argmax(1).tolist()}, "
              f"logit range {logits.min():.1f}..{logits.max():.1f}")
    np.savez_compressed(out / "crops.npz", **crops)
    (out / "reference.json").write_text(json.dumps(ref, indent=1) + "\n")
    total = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {out} ({total / 2**20:.2f} MB in all)")


# run by patou's own environment: install the checkpoint, compare its ONNX with the recorded outputs
COMPARE = r"""
import json, sys, numpy as np
from patou.models.card import ModelCard
from patou.models.runtime import cpu_session
ref = json.load(open(sys.argv[1])); x_pixels = np.load(sys.argv[2])["crops"]
card = ModelCard.load(sys.argv[3])
mean = np.asarray(card.mean, np.float32).reshape(1, 3, 1, 1); std = np.asarray(card.std, np.float32).reshape(1, 3, 1, 1)
x = (x_pixels.astype(np.float32).transpose(0, 3, 1, 2) - mean) / std
logits, feats = cpu_session(card.onnx_path).run(["logits", "features"], {"input": x})
want, want_f = np.asarray(ref["logits"]), np.asarray(ref["features"])
print(json.dumps({"max_abs_diff_logits": float(np.abs(logits - want).max()),
                  "max_abs_diff_features": float(np.abs(feats - want_f).max()),
                  "logit_scale": float(np.abs(want).max()),
                  "top1_agree": int((logits.argmax(1) == want.argmax(1)).sum()), "crops": int(len(x))}))
"""


def full(version: str, out: Path, seed: int, patou: str | None) -> None:
    cfg = VERSIONS[version]
    out.mkdir(parents=True, exist_ok=True)
    pixels, x, meta = real_crops(cfg["crop"])
    model = Model(cfg["backbone"], cfg["classes"], cfg["create"])
    randomise(model, seed, half=False)
    name = Path(cfg["backbone"]).name
    path = save_checkpoint(model, version, out / f"deepfaune-{name}-random.pt", half=False)
    del model
    t = time.perf_counter()
    logits, features = load_as_deepfaune(path, version, None).predict(x)
    print(f"v{version} full size: {path} ({path.stat().st_size / 2**20:.0f} MB), timm forward on {len(x)} crops "
          f"{time.perf_counter() - t:.1f} s, top-1 {logits.argmax(1).tolist()}")
    ref = out / "reference.json"
    ref.write_text(json.dumps({"version": version, "backbone": cfg["backbone"], "timm": timm.__version__,
                               "crops": meta, "logits": logits.tolist(), "features": features.tolist()}))
    np.savez_compressed(out / "crops.npz", crops=pixels)
    if not patou:
        return
    env = {**os.environ, "PATOU_MODELS": str(out / "models")}
    t = time.perf_counter()
    p = subprocess.run([patou, "-m", "patou.cli", "models", "install", "deepfaune", "--version", version, "--from",
                        str(path), "--accept-licence", "--skip-self-check"], env=env, text=True, capture_output=True)
    print(p.stderr.strip())
    if p.returncode:
        raise SystemExit(f"patou models install failed ({p.returncode})")
    print(f"patou install: {time.perf_counter() - t:.0f} s")
    p = subprocess.run([patou, "-c", COMPARE, str(ref), str(out / "crops.npz"), str(out / "models" / "deepfaune")],
                       env=env, text=True, capture_output=True)
    if p.returncode:
        raise SystemExit(p.stderr)
    print("patou ONNX vs timm on the real crops:", p.stdout.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fixtures", help="tiny networks of every version + recorded outputs, for the tests")
    f.add_argument("--out", type=Path, default=FIXTURES)
    f.add_argument("--seed", type=int, default=22)
    g = sub.add_parser("full", help="one version at full size; with --patou, installed and compared")
    g.add_argument("version", choices=list(VERSIONS))
    g.add_argument("--out", type=Path, required=True, help="a scratch folder (the checkpoint is ~1.2 GB)")
    g.add_argument("--seed", type=int, default=15)
    g.add_argument("--patou", help="patou's python (e.g. .venv/bin/python) to install and compare with")
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    if a.cmd == "fixtures":
        fixtures(a.out, a.seed)
    else:
        full(a.version, a.out, a.seed, a.patou)


if __name__ == "__main__":
    main()
