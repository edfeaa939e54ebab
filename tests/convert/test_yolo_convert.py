"""YOLOv5 / YOLOv8 / YOLOv11 checkpoints in the publishers' layouts (tests/data/yolo, made by
tools/yolo_reference.py with yolov5, ultralytics and MegaDetector's own code) read by the inert
unpickler, built in plain torch from their yaml, exported to ONNX: the letterbox is the publisher's
to the pixel, raw predictions equal the reference's, final boxes equal the publisher's NMS output."""
from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.torch, pytest.mark.slow]

from patou.convert import yolo  # noqa: E402
from patou.convert import unpickle  # noqa: E402
from patou.convert.yolo_layers import Conv, LayoutError, module_tree  # noqa: E402
from patou.models import yolo_boxes  # noqa: E402
from patou.models.runtime import cpu_session  # noqa: E402
from yolo_fixtures import DATA, FIXTURES, MD_CATEGORIES, compare_boxes, info, photo, raw  # noqa: E402

RAW_TOLERANCE = 1e-3  # relative to the largest raw value


@pytest.fixture(scope="module")
def nets():
    return {name: yolo.read(DATA / f"{name}.pt") for name in FIXTURES}


@pytest.fixture(scope="module")
def onnx_models(nets, tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    out = {}
    for name, y in nets.items():
        yolo.export_onnx(y.net, d / f"{name}.onnx")
        out[name] = cpu_session(d / f"{name}.onnx", threads=1)
    return out


def _expected_layout(name):
    return {"yolov5-p6-tiny": ("yolov5", "YOLOv5 P6 (4 levels)", [8, 16, 32, 64]),
            "yolov5-p5-tiny": ("yolov5", "YOLOv5 P5 (3 levels)", [8, 16, 32]),
            "yolov8-tiny": ("ultralytics", "YOLOv8 (C2f)", [8, 16, 32]),
            "yolov11-tiny": ("ultralytics", "YOLOv11 (C3k2/C2PSA)", [8, 16, 32]),
            "yolov11l-tiny": ("ultralytics", "YOLOv11 (C3k2/C2PSA)", [8, 16, 32])}[name]


@pytest.mark.parametrize("name", FIXTURES)
def test_checkpoint_describes_its_network(nets, name):
    y, rec = nets[name], info(name)
    family, arch, strides = _expected_layout(name)
    assert (y.family, y.architecture, y.strides) == (family, arch, strides)
    assert y.names == ["animal", "person", "vehicle"]
    assert y.parameters == rec["parameters"]  # the publisher's module counted the same weights
    if name == "yolov5-p6-tiny":
        assert y.info == {}  # MDv5a's layout: no metadata in the archive
    else:
        md = {"yolov5-p5-tiny": "v1000.0.0-spruce", "yolov11-tiny": "v1000.0.0-sorrel",
              "yolov11l-tiny": "v1000.0.0-larch"}.get(name)
        assert y.info.get("model_version_string") == md
    if name == "yolov11l-tiny":  # the 'l' scale's C3k2 holds C3k blocks
        assert type(y.net.model[2].m[0]).__name__ == "C3k"
    # every Conv's activation is the one the file holds (Attention's q/k/v, proj and pe have none)
    with unpickle.read(DATA / f"{name}.pt") as ck:
        tree = module_tree(ck.root["model"])
        acts = {n: (tree[n].attrs["_modules"]["act"].qualname.rsplit(".", 1)[-1], type(m.act).__name__)
                for n, m in y.net.named_modules() if isinstance(m, Conv)}
    assert all(a == b for a, b in acts.values())
    assert {a for a, _ in acts.values()} == ({"SiLU", "Identity"} if name.startswith("yolov11") else {"SiLU"})


def _relative(got, ref):
    return float(np.abs(got - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("name", FIXTURES)
def test_letterbox_and_raw_predictions_equal_the_publishers(real, nets, onnx_models, name):
    y, rec, arrays = nets[name], info(name), raw(name)
    stride = int(max(y.strides))
    for k, p in enumerate(rec["photos"]):
        img = photo(real, p["photo"])
        canvas, g = yolo_boxes.letterbox(img, rec["input_size"], stride)
        assert list(canvas.shape[:2]) == p["input_shape"]
        assert hashlib.sha256(canvas.tobytes()).hexdigest() == p["input_sha256"], f"{p['photo']}: letterbox differs"
        x = np.ascontiguousarray(canvas.transpose(2, 0, 1), dtype=np.float32)[None] / 255.0
        with torch.no_grad():
            torch_out = y.net(torch.from_numpy(x))[0].numpy()
        onnx_out = onnx_models[name].run(None, {"images": x})[0][0]
        assert torch_out.shape == onnx_out.shape == (p["anchors"], p["outputs"])
        idx, ref = arrays[k]
        assert _relative(torch_out[idx], ref) <= RAW_TOLERANCE
        assert _relative(onnx_out[idx], ref) <= RAW_TOLERANCE
        # and every anchor, ONNX against torch
        assert _relative(onnx_out, torch_out) <= RAW_TOLERANCE


@pytest.mark.parametrize("name", FIXTURES)
def test_final_boxes_equal_the_publishers(real, onnx_models, nets, name):
    y, rec = nets[name], info(name)
    deepfaune = rec["nms"].startswith("ultralytics")
    totals = {"matched": 0, "reference": 0}
    for p in rec["photos"]:
        img = photo(real, p["photo"])
        x, g = yolo_boxes.letterbox_chw(img, rec["input_size"], int(max(y.strides)))
        out = onnx_models[name].run(None, {"images": x[None] / 255.0})[0][0]
        nms_iou = 0.7 if deepfaune else 0.45
        dets = yolo_boxes.detections(out, g, y.names, objectness=y.family == "yolov5",
                                     mapping="yolov5" if y.family == "yolov5" else "ultralytics",
                                     round_pixels=not deepfaune, min_conf=rec["threshold"], nms_iou=nms_iou)
        ref = [(MD_CATEGORIES[b["category"]], b["conf"], b["bbox"]) for b in p["boxes"]]
        cmp = compare_boxes(ref, [(d.category, d.conf, d.bbox) for d in dets], nms_iou)
        assert not cmp["unexplained"], f"{name} {p['photo']}: {cmp}"
        assert abs(cmp["patou"] - cmp["reference"]) <= cmp["tie_swaps"]
        totals["matched"] += cmp["matched"]
        totals["reference"] += cmp["reference"]
    assert totals["reference"] > 0
    # ties are the exception: most boxes match one to one
    assert totals["matched"] >= 0.4 * totals["reference"], totals


def test_a_yaml_that_does_not_fit_its_tensors_is_refused(tmp_path):
    """The yaml says one network, the tensors another: refused with the key and both shapes."""
    src = DATA / "yolov5-p5-tiny.pt"
    with zipfile.ZipFile(src) as z:
        names = z.namelist()
        pkl = next(n for n in names if n.endswith("data.pkl"))
        data = z.read(pkl)
        blobs = {n: z.read(n) for n in names}
    # widen the network the yaml describes (width_multiple 0.04 -> 0.08): same keys, other shapes
    marker = pickle.dumps(0.04, protocol=2)[2:-1]  # BINFLOAT opcode and its 8 bytes
    assert data.count(marker) == 1
    blobs[pkl] = data.replace(marker, pickle.dumps(0.08, protocol=2)[2:-1])
    bad = tmp_path / "wider.pt"
    with zipfile.ZipFile(bad, "w", zipfile.ZIP_STORED) as z:
        for n in names:
            z.writestr(n, blobs[n])
    with pytest.raises(LayoutError, match=r"wider\.pt: model\.\d+\.\S+ has shape \[[\d, ]+\] in the checkpoint, the yaml gives \[[\d, ]+\]"):
        yolo.read(bad)


def test_not_a_detector_checkpoint(tmp_path):
    p = tmp_path / "sd.pt"
    torch.save({"model": {"a": torch.zeros(2)}}, p)
    with pytest.raises(LayoutError, match="no pickled model"):
        yolo.read(p)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(LayoutError, match="empty"):
        yolo.read(tmp_path / "empty.pt")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_that_would_run_code_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    p = tmp_path / "evil.pt"
    torch.save({"model": _Payload(marker), "ema": None}, p)
    with pytest.raises(LayoutError):
        yolo.read(p)
    assert not marker.exists()
    # the same file does run code through a plain unpickler: the payload is real
    subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(p)!r}, weights_only=False)"], check=False,
                   capture_output=True)
    assert marker.exists()
