"""Backbone features of the crops, computed once and cached (crop + its mirror), for heads in seconds.

An entry is keyed like the crop cache: by the crop file's bytes, plus everything that shapes the
features (backbone identity, input size, the part of the crop kept). It is one `.npy` of shape
(2, D): the crop and its mirror, the two views `Classifier` averages at inference. Written
atomically, so a killed run leaves no half entry.

Two extractors honour one signature (`crops -> (n, 2, D) float32`):
  TorchFeatures  a patou backbone (backbones.py) in eval mode, preprocessing as loop.evaluate.
  OnnxFeatures   an installed classifier whose ONNX has a second output "features" (the contract
                 of `patou models install`: card extra `features_output` and `feature_dim`).
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Callable

import numpy as np

from patou.digest import file_sha256
from patou.models.card import ModelCard
from patou.atomic import atomic_output
from patou.train.crops import read_crop
from patou.train.records import Crop

FEATURES_VERSION = "1"
BATCH = 32


def find_backbone_card(name: str | Path) -> ModelCard | None:
    """The card of an installed model (its name, as `patou models` installed it, or a path); None
    if `name` names no folder or card (then it is one of the bundled torch backbones, or unknown)."""
    from patou.models.registry import installed

    path = Path(name).expanduser()
    if not (path.is_dir() or (path.suffix in (".json", ".onnx") and path.is_file())):
        path = installed().get(str(name))
        if path is None:
            return None
    card = ModelCard.load(path)
    extra = card.extra or {}
    if not extra.get("features_output") or not extra.get("feature_dim"):
        raise ValueError(f"{path}: card has no extra.features_output/feature_dim: it cannot serve as a backbone")
    return card


class TorchFeatures:
    """Pooled features of a patou backbone (`Net.backbone`), eval mode, as loop.evaluate feeds it."""

    def __init__(self, model, spec, view: float = 1.0):
        self.model, self.spec, self.view = model, spec, float(view)
        self.identity = f"torch|{spec.name}|{spec.source}|{spec.input_size}|{self.view:.6f}"
        self.dim = spec.n_features

    def __call__(self, crops: list[Crop]) -> np.ndarray:
        import torch

        from patou.train import augment

        self.model.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(crops), BATCH):
                a = np.stack([read_crop(c.path, self.view) for c in crops[i:i + BATCH]])
                x = torch.from_numpy(a).permute(0, 3, 1, 2)
                x = augment.normalise(augment.eval_transform(x, self.spec.input_size), self.spec.mean, self.spec.std)
                f = self.model.backbone(torch.cat([x, x.flip(-1)]).contiguous()).numpy()
                out.append(np.stack([f[: len(a)], f[len(a):]], 1))
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 2, self.dim), np.float32)


class OnnxFeatures:
    """The "features" output of an installed classifier, fed exactly as `Classifier` feeds it."""

    def __init__(self, card: ModelCard, view: float = 1.0, threads: int | None = None):
        from patou.models.classifier import Classifier

        self.card, self.view = card, float(view)
        extra = card.extra or {}
        self.output, self.dim = str(extra["features_output"]), int(extra["feature_dim"])
        self.clf = Classifier(card, threads=threads, flip=False)
        names = [o.name for o in self.clf.session.get_outputs()]
        if self.output not in names:
            raise ValueError(f"{card.path}: the ONNX has no output {self.output!r} (outputs: {', '.join(names)})")
        self.identity = f"onnx|{file_sha256(card.onnx_path)}|{card.input_size}|{card.mean}|{card.std}|{self.view:.6f}"

    def __call__(self, crops: list[Crop]) -> np.ndarray:
        out = []
        for i in range(0, len(crops), BATCH):
            x = self.clf.preprocess([read_crop(c.path, self.view) for c in crops[i:i + BATCH]])
            f = self.clf.session.run([self.output], {self.clf._input: np.ascontiguousarray(
                np.concatenate([x, x[..., ::-1]]))})[0].reshape(2 * len(x), -1)
            if f.shape[1] != self.dim:
                raise ValueError(f"{self.card.path}: features have {f.shape[1]} values, the card says {self.dim}")
            out.append(np.stack([f[: len(x)], f[len(x):]], 1))
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 2, self.dim), np.float32)


class FeatureCache:
    """`features(crops)` -> (n, 2, D), computing (and storing) only the crops not cached yet."""

    def __init__(self, root: Path, extractor: Callable[[list[Crop]], np.ndarray]):
        self.extractor = extractor
        tag = hashlib.sha256(f"{extractor.identity}|patou-features-{FEATURES_VERSION}".encode()).hexdigest()[:16]
        self.dir = Path(root) / tag
        self.counts = {"cached": 0, "computed": 0}

    def _path(self, crop: Crop) -> Path:
        key = file_sha256(crop.path)
        return self.dir / key[:2] / f"{key}.npy"

    def features(self, crops: list[Crop]) -> np.ndarray:
        paths = [self._path(c) for c in crops]
        out: list[np.ndarray | None] = [None] * len(crops)
        for i, p in enumerate(paths):
            try:
                out[i] = np.load(p, allow_pickle=False)
            except (OSError, ValueError):
                pass
        todo = [i for i, f in enumerate(out) if f is None or f.shape != (2, self.extractor.dim)]
        self.counts = {"cached": len(crops) - len(todo), "computed": len(todo)}
        for start in range(0, len(todo), 4 * BATCH):
            part = todo[start:start + 4 * BATCH]
            feats = self.extractor([crops[i] for i in part])
            for i, f in zip(part, feats):
                out[i] = f
                paths[i].parent.mkdir(parents=True, exist_ok=True)
                buf = io.BytesIO()
                np.save(buf, f)
                with atomic_output(paths[i]) as tmp:
                    tmp.write_bytes(buf.getvalue())
        if not crops:
            return np.zeros((0, 2, self.extractor.dim), np.float32)
        return np.stack(out).astype(np.float32)
