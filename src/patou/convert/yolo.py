"""A YOLO detector checkpoint (YOLOv5's or Ultralytics' layout) as a plain-torch network, and its ONNX export.

The file is a pickled whole model (`{'model': <DetectionModel>, ...}`, Ultralytics' training
checkpoints keep it under 'ema'). It is read by the inert unpickler (convert/unpickle.py), so no code
from the file runs and neither the yolov5 nor the ultralytics package is needed: the model object is
a stand-in whose attributes are what the file set, among them the `yaml` dict the network was built
from, its class `names` and the Detect layer's `stride`. The network is built from that yaml on
PyTorch's meta device (no memory), every tensor name and shape compared with the file's before
anything is allocated, then the weights are loaded strictly.

MegaDetector's MDv1000 files also carry `megadetector_info.json` in the archive (image size, model
type, version string): read as JSON, never executed.
"""
from __future__ import annotations

import json
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from patou.convert import ultralytics_yolo, unpickle, yolov5
from patou.convert.yolo_layers import LayoutError, apply_details, check_shapes, load_strict, module_tree

MAX_INFO_BYTES = 1 << 20


@dataclass
class YoloNet:
    path: Path
    family: str  # "yolov5" | "ultralytics"
    architecture: str  # e.g. "YOLOv5 P6 (4 levels)", "YOLOv11 (C3k2/C2PSA)"
    net: object  # the torch network (eval mode, float32)
    names: list[str]  # class names in output order, as the file has them
    strides: list[float]
    yaml: dict
    info: dict = field(default_factory=dict)  # megadetector_info.json when the archive has one
    model_class: str = ""
    parameters: int = 0


def _names(value, nc: int, path: Path) -> list[str]:
    if isinstance(value, dict):
        try:
            out = [str(value[k]) for k in sorted(value, key=int)]
        except (TypeError, ValueError):
            raise LayoutError(f"{path}: class names {str(value)[:80]} are not indexed 0..n-1") from None
    elif isinstance(value, (list, tuple)):
        out = [str(v) for v in value]
    else:
        raise LayoutError(f"{path}: the model object holds no class names")
    if len(out) != nc:
        raise LayoutError(f"{path}: {len(out)} class names for {nc} classes")
    return out


def _archive_info(path: Path) -> dict:
    try:
        with zipfile.ZipFile(path) as z:
            found = [n for n in z.namelist() if n.endswith("/megadetector_info.json") and n.count("/") == 1]
            if not found or z.getinfo(found[0]).file_size > MAX_INFO_BYTES:
                return {}
            data = json.loads(z.read(found[0]))
    except (OSError, zipfile.BadZipFile, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read(path: str | Path) -> YoloNet:
    """Read and build the detector in the checkpoint at `path`; LayoutError (a ValueError, one
    line naming the file) for anything that is not such a checkpoint."""
    import torch

    path = Path(path)
    try:
        ck = unpickle.read(path)
    except unpickle.CheckpointError as e:
        raise LayoutError(str(e)) from None
    with ck:
        root = ck.root
        model = None
        if isinstance(root, dict):
            model = root.get("model") if isinstance(root.get("model"), unpickle.Inert) else root.get("ema")
        if not isinstance(model, unpickle.Inert) or "_modules" not in model.attrs:
            raise LayoutError(f"{path}: no pickled model under 'model' or 'ema' (not a YOLOv5/Ultralytics checkpoint)")
        attrs = model.attrs
        cfg = unpickle.plain(attrs.get("yaml"))
        if not isinstance(cfg, dict) or "backbone" not in cfg or "head" not in cfg:
            raise LayoutError(f"{path}: the model object carries no yaml dict with backbone and head")
        tree = module_tree(model)
        layers = (tree.get("model").attrs.get("_modules") or {}) if "model" in tree else {}
        detect = tree.get(f"model.{len(layers) - 1}") if layers else None
        stride = detect.attrs.get("stride") if detect is not None else None
        if not isinstance(stride, unpickle.TensorRef) or len(stride.shape) != 1 or not 1 <= stride.numel <= 8:
            raise LayoutError(f"{path}: the last layer holds no stride tensor (not a detection model)")
        strides = [float(s) for s in stride.tensor().float().tolist()]
        refs = unpickle.tensors(model)
        family = "yolov5" if "anchors" in cfg else "ultralytics"
        try:
            with torch.device("meta"):  # shapes only: nothing allocated before they match the file's
                if family == "yolov5":
                    net = yolov5.build(cfg, strides)
                    arch = f"YOLOv5 {'P6' if len(strides) == 4 else 'P5'} ({len(strides)} levels)"
                else:
                    legacy = any(k.startswith(f"model.{len(layers) - 1}.cv3.0.0.conv.") for k in refs)
                    net = ultralytics_yolo.build(cfg, strides, legacy_head=legacy)
                    arch = "YOLOv8 (C2f)" if legacy else "YOLOv11 (C3k2/C2PSA)"
        except LayoutError as e:
            raise LayoutError(f"{path}: {e}") from None
        except (TypeError, ValueError, IndexError, KeyError, AttributeError) as e:
            raise LayoutError(f"{path}: the yaml does not describe a network ({type(e).__name__}: {str(e)[:120]})") from None
        apply_details(net, tree)
        try:
            check_shapes(net.state_dict(), refs)
        except LayoutError as e:
            raise LayoutError(f"{path}: {e}") from None
        net = net.to_empty(device="cpu")
        try:
            load_strict(net, refs)
        except unpickle.CheckpointError as e:
            raise LayoutError(str(e)) from None
        except LayoutError as e:
            raise LayoutError(f"{path}: {e}") from None
        nc = int(cfg["nc"])
        names = _names(attrs.get("names"), nc, path)
        parameters = sum(p.numel() for p in net.parameters())
    net.float().eval()
    return YoloNet(path, family, arch, net, names, strides, cfg, _archive_info(path),
                   getattr(model, "qualname", ""), parameters)


def export_onnx(net, path: Path, size: tuple[int, int] = (640, 640)) -> None:
    """ONNX with free batch, height and width (any multiple of the largest stride); one output
    `boxes`: (N, anchors, 4 + [1] + classes), boxes decoded in input pixels."""
    import torch

    x = torch.zeros(1, 3, *size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # dynamo=False: the legacy exporter's graph is plain ops that ORT and its quantiser know
        torch.onnx.export(net, x, str(path), dynamo=False, opset_version=17, input_names=["images"],
                          output_names=["boxes"],
                          dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"},
                                        "boxes": {0: "batch", 1: "anchors"}})
