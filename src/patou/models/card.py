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
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: cannot read model card: {e}") from e
        known = {f for f in cls.__dataclass_fields__ if f != "path"}
        missing = {"name", "task", "file", "input_size", "labels"} - data.keys()
        if missing:
            raise ValueError(f"{path}: model card lacks {', '.join(sorted(missing))}")
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


def _is_card(p: Path) -> bool:
    try:
        return "task" in json.loads(p.read_text())
    except (OSError, ValueError):
        return False


def load_card(model: "ModelCard | str | Path | None", default: str | Path) -> "ModelCard":
    """The one way a model is opened: a card as it is, a card/ONNX/folder path or an installed
    model's name, or `default` (a bundled card) when None."""
    return model if isinstance(model, ModelCard) else ModelCard.load(model or default)


__all__ = ["ASSETS", "ModelCard", "load_card"]
