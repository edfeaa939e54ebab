"""An installed backbone's ONNX + a head trained on its features -> one model.onnx + card.

The backbone honours the `patou models` contract: a second ONNX output (card extra
`features_output`, `feature_dim` values per crop). The head is exported alone (features ->
logits) at the backbone's opset, prefixed so no name clashes, and joined to the backbone's
graph with onnx.compose; the result's first output is the new logits (what `Classifier`
reads) and it keeps the features output, so the trained model honours the contract too.
Checked like export.py: ONNX Runtime on crops against the torch head on the same features.
"""
from __future__ import annotations

import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import patou
from patou.models.card import ModelCard
from patou.atomic import atomic_output
from patou.train.export import NAME, TOLERANCE

PREFIX = "head_"


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)


def compose_onnx(backbone_onnx: Path, features_output: str, head: torch.nn.Module, feature_dim: int,
                 n_classes: int, path: Path) -> None:
    import onnx
    from onnx import compose

    base = onnx.load(str(backbone_onnx))
    opset = _opset(base)
    head = head.eval()
    with atomic_output(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(head, torch.zeros(1, feature_dim), str(tmp), dynamo=False, opset_version=opset,
                          input_names=["features"], output_names=["logits"],
                          dynamic_axes={"features": {0: "batch"}, "logits": {0: "batch"}})
        h = compose.add_prefix(onnx.load(str(tmp)), PREFIX)
        h.ir_version = base.ir_version
        merged = compose.merge_models(base, h, io_map=[(features_output, PREFIX + "features")],
                                      outputs=[PREFIX + "logits", features_output])
        outs = sorted(merged.graph.output, key=lambda o: o.name != PREFIX + "logits")  # logits first: Classifier's
        merged.graph.ClearField("output")
        merged.graph.output.extend(outs)
        dims = merged.graph.output[0].type.tensor_type.shape.dim
        dims[0].dim_param, dims[1].dim_value = "batch", n_classes
        onnx.checker.check_model(merged)
        onnx.save(merged, str(tmp))


def export_composed(backbone: ModelCard, head: torch.nn.Module, labels: list[str], out_dir: Path,
                    card_extra: dict, verify_crops: list[np.ndarray]) -> ModelCard:
    """out_dir/model.onnx + model.json: `backbone` + `head`, checked against torch on the crops."""
    from patou.models.classifier import Classifier

    if not verify_crops:
        raise ValueError("export needs a few crops to check ONNX Runtime against torch")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    extra_b = backbone.extra or {}
    feat_out, dim = str(extra_b["features_output"]), int(extra_b["feature_dim"])
    onnx_path, card_path = out_dir / f"{NAME}.onnx", out_dir / f"{NAME}.json"
    card_path.unlink(missing_ok=True)  # no stale card beside a half-written new model
    compose_onnx(backbone.onnx_path, feat_out, head, dim, len(labels), onnx_path)
    card = ModelCard(
        name=out_dir.resolve().name or NAME, task="classification", file=onnx_path.name,
        input_size=tuple(backbone.input_size), labels=list(labels), mean=tuple(backbone.mean),
        std=tuple(backbone.std), resize=backbone.resize, pad_value=backbone.pad_value,
        licence=f"Backbone: {backbone.licence or 'see its card'}; head trained on the user's own images.",
        source=f"patou {patou.__version__} `patou train` on the features of installed model {backbone.name} "
               f"({backbone.source})",
        description=f"{len(labels)}-class camera-trap crop classifier: frozen {backbone.name} + a linear head "
                    "trained by patou train on its features. Outputs logits.",
        extra={"backbone": backbone.name, "outputs": "logits", "features_output": feat_out, "feature_dim": dim,
               "trained": datetime.now(timezone.utc).isoformat(timespec="seconds"), **card_extra},
    )
    with atomic_output(card_path) as tmp:
        card.save(tmp)
    card.path = card_path
    clf = Classifier(card_path, threads=2, flip=False)
    x = clf.preprocess(verify_crops)
    got, feats = clf.session.run([PREFIX + "logits", feat_out], {clf._input: x})
    with torch.no_grad():
        ref = head.eval()(torch.from_numpy(feats.reshape(len(x), -1))).numpy()
    diff = float(np.abs(ref - got).max())
    ok = diff <= TOLERANCE * max(1.0, float(np.abs(ref).max())) and (ref.argmax(1) == got.argmax(1)).all()
    if not ok:
        card_path.unlink(missing_ok=True)
        onnx_path.unlink(missing_ok=True)
        raise RuntimeError(f"composed ONNX disagrees with the torch head (max logit diff {diff:.2g})")
    card.extra["verification"] = {"crops": len(x), "max_abs_logit_diff": diff, "tolerance": TOLERANCE}
    with atomic_output(card_path) as tmp:
        card.save(tmp)
    return ModelCard.load(card_path)
