"""Boxes from the bundled detector: one ONNX session, at one input size or several passes merged."""
from __future__ import annotations

from ..decide import DIRECT_LABELS
from ..models.detector import FAST_CARD, YOLO_LETTERBOX, Detector, MultiSizeDetector, parse_detector_size
from ..record import Detection, ImageRecord
from .source import BoxSource

DIRECT_CATEGORIES = frozenset(DIRECT_LABELS)  # person, vehicle: labelled, not classified


def detector_card(name: str | None, fast: bool = False):
    """The card `--detector NAME` (an installed detector, or a folder) means, None for the bundled
    one; with `--fast`, NAME-int8 (installed by `patou models install ... --int8` when it kept the
    fp32 boxes)."""
    if not name:
        return FAST_CARD if fast else None
    from ..models.card import ModelCard
    from ..models.registry import installed

    if fast:
        if f"{name}-int8" not in installed():
            raise ValueError(f"--detector {name} --fast: {name}-int8 is not installed (`patou models install ... "
                             "--int8` installs it when it keeps the fp32 boxes)")
        name = f"{name}-int8"
    from pathlib import Path

    from ..models.registry import models_dir

    if not Path(name).expanduser().exists() and name not in installed():
        raise ValueError(f"--detector {name}: no such folder, and no installed detector of that name in {models_dir()} "
                         "(`patou models list` shows the installable ones: patou models install megadetector ...)")
    card = ModelCard.load(name)  # an installed model's name, or a folder
    if card.task != "detection":
        raise ValueError(f"--detector {name}: {card.name} is a {card.task} model, not a detector")
    return card


def bundled_detector(fast: bool = False, threads: int | None = None, detector_size: str | int | None = None,
                     detector: str | None = None):
    """The run's detector: the bundled one (`--fast`: int8) or `--detector NAME` (an installed
    MegaDetector...), at `--detector-size` (640+1280: two passes merged)."""
    sizes = parse_detector_size(detector_size)
    card = detector_card(detector, fast)
    if sizes and len(sizes) > 1:
        return MultiSizeDetector(card, threads, sizes)
    return Detector(card, threads=threads, input_size=sizes[0] if sizes else None)


class DetectorBoxes(BoxSource):
    """Every animal box the detector finds goes to the classifier (above the detection threshold);
    an installed MegaDetector's person and vehicle boxes are labelled human / vehicle at the
    detector's confidence, as a MegaDetector file's are (decide.decide_direct)."""

    def __init__(self, detector: Detector | MultiSizeDetector):
        self.detector = detector

    def prepare(self, record: ImageRecord, img):
        return self.detector.preprocess(img)  # the letterbox, in a decoding thread

    def find(self, prepared, img) -> list[Detection]:
        x, ratio = prepared
        return self.detector.detect_prepared(x, ratio, img.size)

    def classifies(self, d: Detection) -> bool:
        return d.category not in DIRECT_CATEGORIES

    @property
    def typical_threshold(self) -> float | None:
        """The installed detector's recommended threshold (its publisher's), None for the bundled one."""
        v = (self.detector.card.extra or {}).get("typical_detection_threshold")
        return float(v) if isinstance(v, (int, float)) and self.detector.card.resize == YOLO_LETTERBOX else None
