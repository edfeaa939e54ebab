"""Installable models: what patou knows how to fetch, and where installed models live.

An entry is data (timm's registry pattern): name, task, versions with their URL, file and class
order, licence, citation, preprocessing and the converter that turns the publisher's file into
patou's `.onnx` + card. `patou models install NAME` (install.py) does the rest; once installed,
a model is a folder like any other model folder, and `--model NAME` finds it (`resolve`).
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field, replace
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
    # what a version may change from its entry (None: the entry's own; `Entry.version` fills them in)
    backbone: str | None = None
    input_size: int | None = None
    network: dict | None = None
    description: str | None = None
    # the publisher's decision rule for this version, written into the card's extra (card data that
    # the classifier and decide.py read, never model-specific code): "temperature" (each crop's logits
    # are divided by it), "event_average" ("logits": an event's or a video's verdict is the softmax of
    # its images' mean logit...) at "event_temperature"
    decision: dict = field(default_factory=dict)
    # what proved patou's conversion of this version equal to the publisher's own network (the card keeps it)
    reference: str | None = None


@dataclass(frozen=True)
class Entry:
    name: str
    task: str
    description: str
    versions: dict[str, Version]
    default_version: str
    citation: str
    homepage: str
    converter: str  # how the publisher's file is read ("deepfaune": a timm training checkpoint, install.py)
    backbone: str  # what the checkpoint's args should name (another name is a warning: the shapes decide)
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str  # a crop mode the Classifier knows (classifier.CROP_MODES)
    resample: str = "bicubic"
    class_table: Path | None = None  # publisher class -> patou label, group, Camtrap DP taxon (read_class_table)
    # the largest network a checkpoint of this entry may describe (checked on the tensors' shapes
    # before anything is built: a few KB of stride-0 tensors can declare gigabytes); "family" names
    # patou's network for it (install.FAMILIES: convert/vit.py's DINOv2, convert/eva.py's DINOv3)
    network: dict = field(default_factory=dict)
    mirror: bool = True  # the publisher averages each crop with its mirror image (DeepFaune does not)
    extra: dict = field(default_factory=dict)

    def version(self, v: str | None) -> tuple[str, Version]:
        """The version's name and its record, with what it leaves to the entry filled in."""
        v = v or self.default_version
        if v not in self.versions:
            raise ValueError(f"{self.name}: no version {v!r} (known: {', '.join(self.versions)})")
        ver = self.versions[v]
        own = {k: getattr(self, k) for k in ("backbone", "input_size", "network", "description")
               if getattr(ver, k) is None}
        return v, replace(ver, **own)


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
_DF_LICENCE_NC = "CC BY-NC-SA 4.0 (DeepFaune's statement for v1.1 and v1.2: no commercial use; https://www.deepfaune.cnrs.fr)"
_DF_LICENCE = "CC BY-SA 4.0 (DeepFaune's statement for v1.3 and later; https://www.deepfaune.cnrs.fr)"
_DF_DINOV2 = {"family": "dinov2", "width": 1024, "depth": 24, "patch": 14, "mlp": 4096, "grid": 37}  # ViT-L/14, 518 px
_DF_DINOV3 = {"family": "dinov3", "width": 1024, "depth": 24, "patch": 16, "mlp": 4096, "registers": 4}  # ViT-L/16
# DeepFaune's decision rule, from its predictTools.py: each image's animal logits divided by a
# temperature, a sequence's (and a video's) verdict the softmax of its animal images' mean logit at a
# second one. v1.4: 1.10 and 1.04 (two public copies of 1.4's predictTools); v1.5: 1.12 and 1.10 (the
# vendored 1.5.0 copy). The one older copy found (2023) takes the softmax of the mean logit without a
# temperature: 1.0 for v1.1-1.3, not checked version by version.
_DF_RULE_OLD = {"temperature": 1.0, "event_average": "logits", "event_temperature": 1.0}
_DF_REF = ("tools/deepfaune_reference.py: timm 1.0.31's {b} built as DeepFaune {v}'s classifTools.py builds it, random "
           "weights, saved in DeepFaune's checkpoint layout; patou's ONNX against timm on 4 real crops cut as DeepFaune "
           "cuts them: {full}; reduced-width fixtures of every version (tests/data/deepfaune): <= 1e-4, same top-1")
_DF_REF_V2 = _DF_REF.format(b="vit_large_patch14_dinov2.lvd142m", v="1.4", full="full size (v1.4's head) max |logit "
                            "difference| 1.5e-5 for logits up to 20.2, features 3.7e-6, same top-1 on 4/4")
_DF_REF_V3 = _DF_REF.format(b="vit_large_patch16_dinov3.lvd1689m", v="1.5", full="full size max |logit difference| "
                            "2.3e-5 for logits up to 19.8, features 4.5e-6, same top-1 on 4/4")
_DF_URL15 = "https://pbil.univ-lyon1.fr/software/download/deepfaune/v1.5/deepfaune-vit_large_patch16_dinov3.lvd1689m.pt"

REGISTRY: dict[str, Entry] = {
    "deepfaune": Entry(
        name="deepfaune",
        task="classification",
        description="DeepFaune: European fauna on camera-trap crops (DINOv2 ViT-L/14, 182 px)",
        versions={
            "1.1": Version(_DF_URL.format(v="1.1", suffix=""), _DF_26, _DF_LICENCE_NC, size_mb=1216,
                           decision=_DF_RULE_OLD, reference=_DF_REF_V2),
            "1.2": Version(_DF_URL.format(v="1.2", suffix=".v2"), _DF_30, _DF_LICENCE_NC, size_mb=1216,
                           decision=_DF_RULE_OLD, reference=_DF_REF_V2),
            "1.3": Version(_DF_URL.format(v="1.3", suffix=".v3"), _DF_34, _DF_LICENCE, size_mb=1216,
                           decision=_DF_RULE_OLD, reference=_DF_REF_V2),
            "1.4": Version(_DF_URL.format(v="1.4", suffix=".v4"), _DF_38, _DF_LICENCE, size_mb=1216,
                           decision={"temperature": 1.10, "event_average": "logits", "event_temperature": 1.04},
                           reference=_DF_REF_V2),
            "1.5": Version(_DF_URL15, _DF_40, _DF_LICENCE, backbone="vit_large_patch16_dinov3.lvd1689m",
                           input_size=224, network=_DF_DINOV3,
                           description="DeepFaune: European fauna on camera-trap crops (DINOv3 ViT-L/16, 224 px)",
                           decision={"temperature": 1.12, "event_average": "logits", "event_temperature": 1.10},
                           reference=_DF_REF_V3),
        },
        default_version="1.5",
        citation=("Rigoudy N., Dussert G., Miele V. et al. (2023). The DeepFaune initiative: a collaborative effort "
                  "towards the automatic identification of European fauna in camera trap images. European Journal "
                  "of Wildlife Research 69, 113. https://doi.org/10.1007/s10344-023-01742-7"),
        homepage="https://www.deepfaune.cnrs.fr",
        converter="deepfaune",
        backbone="vit_large_patch14_dinov2.lvd142m",
        input_size=182,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        resize="square-clip",  # DeepFaune's crop: grow the short side to a square, clip to the image
        resample="bicubic",
        class_table=DEEPFAUNE_CLASSES,
        network=_DF_DINOV2,
        mirror=False,  # DeepFaune classifies each crop once
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
