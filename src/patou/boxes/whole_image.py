"""`--no-detector`: the inputs are crops already, so each photo (or video frame) is one box."""
from __future__ import annotations

from ..record import Detection, ImageRecord
from .source import BoxSource

WHOLE_IMAGE = (0.0, 0.0, 1.0, 1.0)


class WholeImage(BoxSource):
    """One animal box covering the image, at confidence 1."""

    key = "no-detector"

    def prepare(self, record: ImageRecord, img):
        return None

    def find(self, prepared, img) -> list[Detection]:
        return [Detection(WHOLE_IMAGE, 1.0)]

    def classifies(self, d: Detection) -> bool:
        return d.category == "animal"

    def detector_summary(self, bundled: dict) -> dict:
        return {**bundled, "file": "none (--no-detector: one box per image)"}

    def run_info(self) -> dict:
        return {"source": "no-detector (one box per photo or frame)"}
