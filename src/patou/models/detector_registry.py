"""Installable detectors: MegaDetector v5a and v1000 (YOLOv5 and Ultralytics YOLOv11), DeepFaune's own YOLOv8s.

Data only, like registry.py's classifier entries: where the publisher's file is, what the publisher
says of its licence (word for word where short), what the network is, how the publisher runs it
(input size, letterbox stride, NMS IoU, how boxes map back, the thresholds it recommends). The
installer (install.py) turns an entry into an `.onnx` + card; `--detector NAME` runs it.

Sources, as read for this entry list (none of the files could be downloaded on the machine patou is
developed on, so sizes and the MD5s are the publishers' own figures, not checked here):
- MegaDetector's Python package 10.0.28 (`megadetector.detection.run_detector.known_models`: URLs,
  MD5s, MDv5's thresholds 0.2 / 0.05, MDv1000-redwood's 0.3; `pytorch_detector.PTDetector`: image
  size 1280 and letterbox stride 64 for MDv5, NMS IoU 0.45 in its default "classic" mode);
- the MDv1000 release notes (MegaDetector repository, docs/release-notes/mdv1000-release.md):
  architectures, input sizes, normalised animal AP against MDv5a, GFLOPs, "a good default threshold
  for the new models is probably more like 0.3 or even 0.4", the "ILMS" licence column;
- MegaDetector's Hugging Face model card (agentmorris/megadetector) for MDv5's licence statement;
- DeepFaune's download folder and detector code (a 960-px Ultralytics model run with Ultralytics'
  defaults, boxes kept above 0.6; not checked against DeepFaune's own repository here).
"""
from __future__ import annotations

from dataclasses import dataclass

MD_CITATION = ("Beery S., Morris D., Yang S. (2019). Efficient pipeline for camera trap image review. "
               "arXiv:1907.06772")
MD_HOME = "https://github.com/agentmorris/MegaDetector"
_MDV5_LICENCE = ("MegaDetector's statement (Hugging Face model card agentmorris/megadetector): \"Both variations "
                 "were trained with a GPL-licensed version of the YOLOv5 framework. No restrictions are placed on "
                 "the use of the model by the MegaDetector developers; the applicable license may be determined by "
                 "the code you use to run the model.\"")
_ILMS = ("(MDv1000 release notes, column ILMS: \"an acronym I just made up for 'inference license that makes "
         "sense'. It's above my pay grade to tell you what the applicable license is if you, e.g., export the "
         "weights to another format and use your own code to run it; I'm just capturing the license of the "
         "default inference code.\")")
_V1000 = "https://github.com/agentmorris/MegaDetector/releases/download/v1000.0/md_v1000.0.0-{}.pt"
_DF_LICENCE = ("CC BY-SA 4.0 (DeepFaune's statement for its models from v1.3 on, https://www.deepfaune.cnrs.fr; "
               "not checked here for the detector file, which was trained with Ultralytics, AGPL-3.0)")
_DF_CITATION = ("Rigoudy N., Dussert G., Miele V. et al. (2023). The DeepFaune initiative: a collaborative effort "
                "towards the automatic identification of European fauna in camera trap images. European Journal "
                "of Wildlife Research 69, 113. https://doi.org/10.1007/s10344-023-01742-7")
CLASSES = ("animal", "person", "vehicle")


@dataclass(frozen=True)
class DetectorEntry:
    name: str  # the installed model's name: `--detector NAME`
    description: str
    url: str
    licence: str
    family: str  # "yolov5" | "ultralytics": the checkpoint layout and the converter
    architecture: str  # as the publisher names it
    input_size: int  # long side of the letterbox (the publisher's default)
    levels: int  # detection levels: 4 for YOLOv5 P6 (strides 8-64), else 3
    typical_threshold: float
    conservative_threshold: float
    nms_iou: float
    box_mapping: str  # "yolov5" | "ultralytics" (models/yolo_boxes.to_image)
    round_pixels: bool  # MegaDetector's classic mode rounds box corners to whole pixels
    citation: str
    homepage: str
    threshold_source: str
    megadetector_version: str | None = None  # what MD files name it (info.detector_metadata)
    md5: str | None = None  # the publisher's
    sha256: str | None = None
    size_mb: int | None = None
    relative_ap: float | None = None  # normalised animal AP .5:.95 against MDv5a (MDv1000 release notes)
    gflops: float | None = None
    classes: tuple[str, ...] = CLASSES
    task: str = "detection"

    @property
    def file(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def stride(self) -> int:
        """The letterbox stride: the largest stride of the network (MegaDetector: 64 at 1280 px)."""
        return 64 if self.levels == 4 else 32


DETECTORS: dict[str, DetectorEntry] = {e.name: e for e in (
    DetectorEntry(
        name="mdv5a", description="MegaDetector v5a (YOLOv5x6, 1280 px): animals, people, vehicles",
        url="https://github.com/agentmorris/MegaDetector/releases/download/v5.0/md_v5a.0.1.pt",
        licence=_MDV5_LICENCE, family="yolov5", architecture="YOLOv5x6", input_size=1280, levels=4,
        typical_threshold=0.2, conservative_threshold=0.05, nms_iou=0.45, box_mapping="yolov5", round_pixels=True,
        citation=MD_CITATION, homepage=MD_HOME, megadetector_version="v5a.0.1",
        md5="60f8e7ec1308554df258ed1f4040bc4f", size_mb=281, relative_ap=1.0, gflops=209.8,
        threshold_source="MegaDetector's known_models: typical 0.2, conservative 0.05"),
    DetectorEntry(
        name="mdv1000-redwood", description="MegaDetector v1000-redwood (YOLOv5x6, 1280 px): MD's most accurate",
        url=_V1000.format("redwood"), licence="GPL " + _ILMS, family="yolov5", architecture="YOLOv5x6",
        input_size=1280, levels=4, typical_threshold=0.3, conservative_threshold=0.1, nms_iou=0.45,
        box_mapping="yolov5", round_pixels=True, citation=MD_CITATION, homepage=MD_HOME,
        megadetector_version="v1000.0.0-redwood", md5="74474b3aec9cf1a990da38b37ddf9197", size_mb=281,
        relative_ap=1.009, gflops=209.8,
        threshold_source="MegaDetector's known_models: typical 0.3; conservative 0.1 is MD's fallback (no figure published)"),
    DetectorEntry(
        name="mdv1000-spruce", description="MegaDetector v1000-spruce (YOLOv5s, 640 px): made for edge devices",
        url=_V1000.format("spruce"), licence="GPL " + _ILMS, family="yolov5", architecture="YOLOv5s",
        input_size=640, levels=3, typical_threshold=0.3, conservative_threshold=0.1, nms_iou=0.45,
        box_mapping="yolov5", round_pixels=True, citation=MD_CITATION, homepage=MD_HOME,
        megadetector_version="v1000.0.0-spruce", md5="1c9d1d2b3ba54931881471fdd508e6f2", size_mb=14,
        relative_ap=0.864, gflops=16.5,
        threshold_source="MDv1000 release notes: 'probably more like 0.3 or even 0.4'; conservative 0.1 is MD's fallback"),
    DetectorEntry(
        name="mdv1000-sorrel", description="MegaDetector v1000-sorrel (YOLOv11s, 960 px): made for DeepFaune",
        url=_V1000.format("sorrel"), licence="AGPL " + _ILMS, family="ultralytics", architecture="YOLOv11s",
        input_size=960, levels=3, typical_threshold=0.3, conservative_threshold=0.1, nms_iou=0.45,
        box_mapping="ultralytics", round_pixels=True, citation=MD_CITATION, homepage=MD_HOME,
        megadetector_version="v1000.0.0-sorrel", md5="4339a2c8af7a381f18ded7ac2a4df03e", size_mb=19,
        relative_ap=0.967, gflops=30.0,
        threshold_source="MDv1000 release notes: 'probably more like 0.3 or even 0.4'; conservative 0.1 is MD's fallback"),
    DetectorEntry(
        name="mdv1000-larch", description="MegaDetector v1000-larch (YOLOv11L, 640 px)",
        url=_V1000.format("larch"), licence="AGPL " + _ILMS, family="ultralytics", architecture="YOLOv11L",
        input_size=640, levels=3, typical_threshold=0.3, conservative_threshold=0.1, nms_iou=0.45,
        box_mapping="ultralytics", round_pixels=True, citation=MD_CITATION, homepage=MD_HOME,
        megadetector_version="v1000.0.0-larch", md5="cab94ebd190c2278e12fb70ffd548b6d", size_mb=51,
        relative_ap=0.969, gflops=86.9,
        threshold_source="MDv1000 release notes: 'probably more like 0.3 or even 0.4'; conservative 0.1 is MD's fallback"),
    DetectorEntry(
        name="deepfaune-yolov8s_960", description="DeepFaune's own detector (YOLOv8s, 960 px)",
        url="https://pbil.univ-lyon1.fr/software/download/deepfaune/v1.4/deepfaune-yolov8s_960.pt",
        licence=_DF_LICENCE, family="ultralytics", architecture="YOLOv8s", input_size=960, levels=3,
        typical_threshold=0.6, conservative_threshold=0.4, nms_iou=0.7, box_mapping="ultralytics",
        round_pixels=False, citation=_DF_CITATION, homepage="https://www.deepfaune.cnrs.fr", size_mb=22,
        threshold_source="DeepFaune's detector code: boxes kept above 0.6 (people above 0.4); Ultralytics' NMS IoU 0.7"),
)}

# `patou models install megadetector [--version V]`: the MegaDetector family under one name
FAMILIES = {"megadetector": ({"5a": "mdv5a", "1000-redwood": "mdv1000-redwood", "1000-spruce": "mdv1000-spruce",
                              "1000-sorrel": "mdv1000-sorrel", "1000-larch": "mdv1000-larch"}, "5a")}


def detector_entry(name: str, version: str | None = None) -> DetectorEntry | None:
    """The entry `patou models install NAME [--version V]` means, or None when NAME is no detector."""
    if name in FAMILIES:
        versions, default = FAMILIES[name]
        v = version or default
        if v not in versions:
            raise ValueError(f"{name}: no version {v!r} (known: {', '.join(versions)})")
        return DETECTORS[versions[v]]
    entry = DETECTORS.get(name)
    if entry is not None and version not in (None, entry.megadetector_version, "1"):
        raise ValueError(f"{name}: one version only ({entry.megadetector_version or '1'}); "
                         f"for the MegaDetector family use `patou models install megadetector --version ...`")
    return entry
