"""Boxes from the bundled detector: one ONNX session, at one input size or several passes merged."""
from __future__ import annotations

from ..models.detector import FAST_CARD, Detector, MultiSizeDetector, parse_detector_size
from ..record import Detection, ImageRecord
from .source import BoxSource


def bundled_detector(fast: bool = False, threads: int | None = None, detector_size: str | int | None = None):
    """The bundled detector (`--fast`: int8) at `--detector-size` (640+1280: two passes merged)."""
    sizes = parse_detector_size(detector_size)
    card = FAST_CARD if fast else None
    if sizes and len(sizes) > 1:
        return MultiSizeDetector(card, threads, sizes)
    return Detector(card, threads=threads, input_size=sizes[0] if sizes else None)


class DetectorBoxes(BoxSource):
    """Every box the detector finds goes to the classifier (above the detection threshold)."""

    def __init__(self, detector: Detector | MultiSizeDetector):
        self.detector = detector

    def prepare(self, record: ImageRecord, img):
        return self.detector.preprocess(img)  # the letterbox, in a decoding thread

    def find(self, prepared, img) -> list[Detection]:
        x, ratio = prepared
        return self.detector.detect_prepared(x, ratio, img.size)
