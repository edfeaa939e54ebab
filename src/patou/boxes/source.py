"""The one small interface every box source has (see patou/boxes/__init__.py)."""
from __future__ import annotations

from ..record import Detection, ImageRecord


class BoxSource:
    """Turns a decoded photo (or video frame) into the `Detection`s the analyser classifies.

    `prepare` runs in the decoding threads, a few images ahead; `find` runs in inference. Boxes
    the source does not leave to the classifier (`classifies` False: a MegaDetector file's person
    and vehicle boxes) are decided without it (decide.decide_direct).
    """

    key: str | None = None  # for the checkpoint's fingerprint: other boxes, other results

    def covers(self, record: ImageRecord) -> bool:
        """Whether this source has the record's boxes (else the bundled detector finds them)."""
        return True

    def prepare(self, record: ImageRecord, img):
        raise NotImplementedError

    def find(self, prepared, img) -> list[Detection]:
        raise NotImplementedError

    def classifies(self, d: Detection) -> bool:
        return True

    def detector_summary(self, bundled: dict) -> dict:
        """The detector megadetector.json names, given the bundled detector's card summary."""
        return bundled

    def run_info(self) -> dict | None:
        """run.json's account of these boxes (None: the bundled detector's, told by its card)."""
        return None
