"""Model cards: weights never travel without their config (the timm lesson).

A model is `<name>.onnx` plus `<name>.json` (this card). Loading any model, bundled or trained
by a user, needs only these two files, never a code change.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from patou.models import ASSETS
from patou.models.registry import resolve


@dataclass
class ModelCard:
    name: str
    task: str  # "detection" | "classification"
    file: str  # ONNX file name, relative to the card
    input_size: tuple[int, int]  # (height, width) fed to the network
    labels: list[str]  # detector categories, or classifier output labels
    # network input = (pixel - mean) / std, pixel in 0..255 RGB, per channel
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resize: str = "letterbox-top-left"  # or "square-pad" / "square-clip" (classifier crops, see classifier.crop)
    pad_value: int = 0
    licence: str = ""
    source: str = ""
    description: str = ""
    version: str = "1"
    extra: dict = field(default_factory=dict)  # task-specific: strides, taxonomy file, metrics...
    path: Path | None = None  # where the card was read from (not written)

    @property
    def onnx_path(self) -> Path:
        if self.path is None:
            raise ValueError(f"card {self.name!r} was not loaded from disk")
        return self.path.parent / self.file

    @classmethod
    def load(cls, path: str | Path) -> "ModelCard":
        """Read a card; `path` may be the .json, the .onnx beside it, or a folder with one card."""
        path = Path(path)
        if not path.exists():
            path = resolve(path)  # an installed model's name (`--model deepfaune`)
        if path.is_dir():
            cards = sorted(p for p in path.glob("*.json") if _is_card(p))
            if len(cards) != 1:
                raise ValueError(f"{path}: expected one model card (*.json with a 'task'), found {len(cards)}")
            path = cards[0]
        elif path.suffix == ".onnx":
            path = path.with_suffix(".json")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError) as e:
            raise ValueError(f"{path}: cannot read model card: {e}") from e
        if not isinstance(data, dict):
            raise ValueError(f"{path}: model card is {type(data).__name__}, not an object")
        known = {f for f in cls.__dataclass_fields__ if f != "path"}
        missing = {"name", "task", "file", "input_size", "labels"} - data.keys()
        if missing:
            raise ValueError(f"{path}: model card lacks {', '.join(sorted(missing))}")
        bad = _bad_fields(data)
        if bad:
            raise ValueError(f"{path}: model card field {bad}")
        card = cls(**{k: v for k, v in data.items() if k in known}, path=path)
        card.input_size = tuple(card.input_size)
        card.mean, card.std = tuple(card.mean), tuple(card.std)
        if not card.onnx_path.is_file():
            raise ValueError(f"{path}: model file {card.file} not found beside the card")
        return card

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        data = asdict(self)
        data.pop("path")
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        self.path = path
        return path

    def summary(self) -> dict:
        """What run.json records about the model (provenance, not weights)."""
        d = asdict(self)
        d.pop("path")
        d["labels"] = len(self.labels) if len(self.labels) > 50 else self.labels
        return d


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _bad_fields(d: dict) -> str | None:
    """What in a card's JSON is of the wrong kind (a card is a file from anyone), or None."""
    checks = {
        "name": lambda v: isinstance(v, str), "task": lambda v: isinstance(v, str),
        # the ONNX file sits beside its card: a bare name, never a path elsewhere
        "file": lambda v: isinstance(v, str) and v not in ("", ".", "..") and "/" not in v and "\\" not in v,
        "input_size": lambda v: isinstance(v, list) and len(v) == 2 and all(type(x) is int and 0 < x <= 8192 for x in v),
        "labels": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
        "mean": lambda v: isinstance(v, list) and len(v) == 3 and all(_number(x) for x in v),
        "std": lambda v: isinstance(v, list) and len(v) == 3 and all(_number(x) and x != 0 for x in v),
        "extra": lambda v: isinstance(v, dict),
    }
    for k, ok in checks.items():
        if k in d and not ok(d[k]):
            return f"{k} = {str(d[k])[:60]} is not valid"
    return None


def _is_card(p: Path) -> bool:
    try:
        return "task" in json.loads(p.read_text())
    except (OSError, ValueError, RecursionError, TypeError):
        return False


def load_card(model: "ModelCard | str | Path | None", default: str | Path) -> "ModelCard":
    """The one way a model is opened: a card as it is, a card/ONNX/folder path or an installed
    model's name, or `default` (a bundled card) when None."""
    return model if isinstance(model, ModelCard) else ModelCard.load(model or default)


__all__ = ["ASSETS", "ModelCard", "load_card"]
