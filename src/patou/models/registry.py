"""Installable models: what patou knows how to fetch, and where installed models live.

An entry is data (timm's registry pattern): name, task, versions with their URL, file and class
order, licence, citation, preprocessing and the converter that turns the publisher's file into
patou's `.onnx` + card. `patou models install NAME` (install.py) does the rest; once installed,
a model is a folder like any other model folder, and `--model NAME` finds it (`resolve`).
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from patou.models import ASSETS

MODELS_ENV = "PATOU_MODELS"
IMAGENET_MEAN = (123.675, 116.28, 103.53)  # ImageNet mean/std on 0..255 pixels
IMAGENET_STD = (58.395, 57.12, 57.375)
DEEPFAUNE_CLASSES = ASSETS / "deepfaune_taxonomy.csv"  # publisher class -> label, group, Camtrap DP taxon


@dataclass(frozen=True)
class Version:
    url: str
    classes: tuple[str, ...]  # the network's outputs, in order, as the publisher names them
    licence: str
    sha256: str | None = None  # pinned when the publisher states one; else recorded at install
    size_mb: int | None = None


@dataclass(frozen=True)
class Entry:
    name: str
    task: str
    description: str
    versions: dict[str, Version]
    default_version: str
    citation: str
    homepage: str
    converter: str  # a key of install.CONVERTERS
    backbone: str  # what the checkpoint's args must name
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str  # a crop mode the Classifier knows (classifier.CROP_MODES)
    resample: str = "bicubic"
    class_table: Path | None = None  # publisher class -> patou label, group, Camtrap DP taxon (read_class_table)
    # the largest network a checkpoint of this entry may describe (checked on the tensors' shapes
    # before anything is built: a few KB of stride-0 tensors can declare gigabytes)
    network: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def version(self, v: str | None) -> tuple[str, Version]:
        v = v or self.default_version
        if v not in self.versions:
            raise ValueError(f"{self.name}: no version {v!r} (known: {', '.join(self.versions)})")
        return v, self.versions[v]


_DF_URL = "https://pbil.univ-lyon1.fr/software/download/deepfaune/v{v}/deepfaune-vit_large_patch14_dinov2.lvd142m{suffix}.pt"
_DF_26 = ("badger", "ibex", "red deer", "chamois", "cat", "goat", "roe deer", "dog", "squirrel", "equid", "genet",
          "hedgehog", "lagomorph", "wolf", "lynx", "marmot", "micromammal", "mouflon", "sheep", "mustelid", "bird",
          "bear", "nutria", "fox", "wild boar", "cow")
_DF_34 = ("bison", "badger", "ibex", "beaver", "red deer", "chamois", "cat", "goat", "roe deer", "dog", "fallow deer",
          "squirrel", "moose", "equid", "genet", "wolverine", "hedgehog", "lagomorph", "wolf", "otter", "lynx", "marmot",
          "micromammal", "mouflon", "sheep", "mustelid", "bird", "bear", "nutria", "raccoon", "fox", "reindeer",
          "wild boar", "cow")
_DF_38 = ("bison", "badger", "ibex", "beaver", "red deer", "golden jackal", "chamois", "cat", "goat", "roe deer", "dog",
          "raccoon dog", "fallow deer", "squirrel", "moose", "equid", "genet", "wolverine", "hedgehog", "lagomorph",
          "wolf", "otter", "lynx", "marmot", "micromammal", "mouflon", "sheep", "mustelid", "bird", "bear",
          "porcupine", "nutria", "muskrat", "raccoon", "fox", "reindeer", "wild boar", "cow")
# v1.2: AddaxAI's deepfaune-v1.2 script (EcoAssist classification_utils/model_types/deepfaune-v1.2) and an
# independent classifier script for the same .v2.pt file agree on this order
_DF_30 = ("badger", "ibex", "beaver", "red deer", "chamois", "cat", "goat", "roe deer", "dog", "fallow deer", "squirrel",
          "equid", "genet", "hedgehog", "lagomorph", "wolf", "otter", "lynx", "marmot", "micromammal", "mouflon", "sheep",
          "mustelid", "bird", "bear", "nutria", "raccoon", "fox", "wild boar", "cow")
# v1.5: txt_animalclasses['en'] of its classifTools.py (a vendored 1.5.0 copy: rasanderson/mustelid-shiny,
# deepfaune/classifTools.py): v1.4's 38 with mongoose after lynx and arctic fox after fox
_DF_40 = ("bison", "badger", "ibex", "beaver", "red deer", "golden jackal", "chamois", "cat", "goat", "roe deer", "dog",
          "raccoon dog", "fallow deer", "squirrel", "moose", "equid", "genet", "wolverine", "hedgehog", "lagomorph",
          "wolf", "otter", "lynx", "mongoose", "marmot", "micromammal", "mouflon", "sheep", "mustelid", "bird", "bear",
          "porcupine", "nutria", "muskrat", "raccoon", "fox", "arctic fox", "reindeer", "wild boar", "cow")
_DF_LICENCE_OLD = ("the terms DeepFaune states for this version at https://www.deepfaune.cnrs.fr (not checked by "
                   "patou; DeepFaune has restricted commercial use in some versions)")
_DF_LICENCE = "CC BY-SA 4.0 (DeepFaune's statement for v1.3 and later; https://www.deepfaune.cnrs.fr)"

REGISTRY: dict[str, Entry] = {
    "deepfaune": Entry(
        name="deepfaune",
        task="classification",
        description="DeepFaune: European fauna on camera-trap crops (DINOv2 ViT-L/14, 182 px)",
        versions={
            # v1.2 (30 classes) is left out: its class order could not be checked against a public source
            "1.1": Version(_DF_URL.format(v="1.1", suffix=""), _DF_26, _DF_LICENCE_OLD, size_mb=1216),
            "1.3": Version(_DF_URL.format(v="1.3", suffix=".v3"), _DF_34, _DF_LICENCE, size_mb=1216),
            "1.4": Version(_DF_URL.format(v="1.4", suffix=".v4"), _DF_38, _DF_LICENCE, size_mb=1216),
        },
        default_version="1.4",
        citation=("Rigoudy N., Dussert G., Miele V. et al. (2023). The DeepFaune initiative: a collaborative effort "
                  "towards the automatic identification of European fauna in camera trap images. European Journal "
                  "of Wildlife Research 69, 113. https://doi.org/10.1007/s10344-023-01742-7"),
        homepage="https://www.deepfaune.cnrs.fr",
        converter="deepfaune_vit",
        backbone="vit_large_patch14_dinov2.lvd142m",
        input_size=182,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        resize="square-clip",  # DeepFaune's crop: grow the short side to a square, clip to the image
        resample="bicubic",
        class_table=DEEPFAUNE_CLASSES,
        network={"width": 1024, "depth": 24, "patch": 14, "mlp": 4096, "grid": 37},  # ViT-L/14 at 518 px
    ),
}


def get(name: str) -> Entry:
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}: installable models are {', '.join(REGISTRY)}")
    return REGISTRY[name]


def models_dir() -> Path:
    """Where installed models live: $PATOU_MODELS, else the user's cache (XDG) /patou/models."""
    if os.environ.get(MODELS_ENV):
        return Path(os.environ[MODELS_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "patou" / "models"


def installed() -> dict[str, Path]:
    """Installed model name -> its folder (one card in it). Temp and partial folders start with '.'."""
    root = models_dir()
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir())
            if p.is_dir() and not p.name.startswith(".") and any(p.glob("*.json"))}


def looks_like_name(value: str | Path) -> bool:
    s = str(value)
    return bool(s) and "/" not in s and os.sep not in s and not s.endswith((".json", ".onnx")) and s not in (".", "..")


def resolve(model: str | Path) -> Path:
    """A model folder from `--model`: an existing path as it is, else the name of an installed model."""
    path = Path(model).expanduser()
    if path.exists() or not looks_like_name(model):
        return path
    found = installed().get(str(model))
    if found is not None:
        return found
    hint = f"; install it with `patou models install {model}`" if str(model) in REGISTRY else ""
    raise ValueError(f"--model {model}: no such folder, and no installed model of that name in {models_dir()}{hint}")


@dataclass(frozen=True)
class ClassRow:
    source: str  # the publisher's class name
    label: str  # patou's fine label
    group: str  # patou's coarse label (the bundled model's labels)
    row: dict  # the Camtrap DP columns


def read_class_table(path: Path) -> dict[str, ClassRow]:
    """Publisher class name -> its patou label, group and Camtrap DP taxon row."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for r in rows:
        src = r.pop(next(iter(r)))  # first column: the publisher's name
        out[src] = ClassRow(src, r["label"], r.pop("group"), r)
    return out
