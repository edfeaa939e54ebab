"""Trained model -> MODEL_DIR/model.onnx + model.json, checked against torch before it is kept.

The check runs the exported graph through `Classifier` itself (its preprocessing and session),
so a card that passes is one that `patou run --model MODEL_DIR` reads the same way. A model
whose ONNX outputs disagree with torch is deleted, never left for a run to pick up.
"""
from __future__ import annotations

import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import patou
from patou.models.card import ModelCard
from patou.models.classifier import PAD_VALUE
from patou.atomic import atomic_output

NAME = "model"
TOLERANCE = 1e-3  # on logits, relative to max(1, |logit|): fp32 graphs agree to ~1e-5 here


def _export_onnx(model, size: int, n_classes: int, path: Path) -> None:
    import onnx

    x = torch.zeros(1, 3, size, size)
    with atomic_output(path) as tmp, warnings.catch_warnings():
        # the TorchScript exporter's deprecation/constant-folding notes say nothing about this graph
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(
            model, x, str(tmp), dynamo=False, opset_version=17, input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
        m = onnx.load(str(tmp))
        dims = m.graph.output[0].type.tensor_type.shape.dim  # let Classifier check the label count
        dims[0].dim_param, dims[1].dim_value = "batch", n_classes
        onnx.checker.check_model(m)
        onnx.save(m, str(tmp))


def verify(model, clf, crops: list[np.ndarray]) -> dict:
    """torch vs ONNX Runtime on the crops, both fed Classifier's preprocessing."""
    x = clf.preprocess(crops)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    got = clf.raw(crops)
    diff = float(np.abs(ref - got).max())
    agree = ref.argmax(1) == got.argmax(1)
    top2 = np.sort(ref, 1)[:, -2:]
    tie = (top2[:, 1] - top2[:, 0]) <= 2 * diff  # a flip there is rounding, not a broken graph
    scale = max(1.0, float(np.abs(ref).max()))
    return {"crops": len(crops), "max_abs_logit_diff": diff, "top1_agreement": float(agree.mean()),
            "ok": bool(diff <= TOLERANCE * scale and (agree | tie).all())}


def export_model(
    model, labels: list[str], spec, out_dir: Path, card_extra: dict, verify_crops: list[np.ndarray]
) -> ModelCard:
    """Write and verify out_dir/model.onnx + model.json; returns the saved card. `verify_crops`
    are (H, W, 3) uint8 RGB crops (any square size: resized like at inference). `card_extra`
    lands in card.extra (training data summary, metrics, crop_margin...)."""
    from patou.models.classifier import Classifier

    if not verify_crops:
        raise ValueError("export needs a few crops to check ONNX Runtime against torch")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.to(memory_format=torch.contiguous_format)  # the training layout is no part of the graph
    size = int(spec.input_size)
    onnx_path, card_path = out_dir / f"{NAME}.onnx", out_dir / f"{NAME}.json"
    card_path.unlink(missing_ok=True)  # no stale card beside a half-written new model
    _export_onnx(model, size, len(labels), onnx_path)
    card = ModelCard(
        name=out_dir.resolve().name or NAME,
        task="classification",
        file=onnx_path.name,
        input_size=(size, size),
        labels=list(labels),
        mean=tuple(float(v) for v in spec.mean),
        std=tuple(float(v) for v in spec.std),
        resize="square-pad",
        pad_value=PAD_VALUE,
        licence=f"Weights fine-tuned from ImageNet weights under {spec.licence}, on the user's own images "
                "(whose terms also apply).",
        source=f"patou {patou.__version__} `patou train` from {spec.source}",
        description=f"{len(labels)}-class camera-trap crop classifier: {spec.name} ImageNet backbone + new head, "
                    "fine-tuned by patou train. Outputs logits.",
        extra={"backbone": spec.name, "outputs": "logits",
               "trained": datetime.now(timezone.utc).isoformat(timespec="seconds"), **card_extra},
    )
    with atomic_output(card_path) as tmp:
        card.save(tmp)
    card.path = card_path
    check = verify(model, Classifier(card_path, threads=2, flip=False), verify_crops)
    if not check.pop("ok"):
        card_path.unlink(missing_ok=True)
        onnx_path.unlink(missing_ok=True)
        raise RuntimeError(f"ONNX export disagrees with torch: {check}")
    card.extra["verification"] = {**check, "tolerance": TOLERANCE}
    with atomic_output(card_path) as tmp:
        card.save(tmp)
    return ModelCard.load(card_path)
