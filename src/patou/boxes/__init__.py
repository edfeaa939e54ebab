"""Where a photo's boxes come from: the bundled detector, a MegaDetector file, or the whole image.

Every source is a `BoxSource` (source.py): it prepares a decoded image in the decoding threads,
finds its `Detection`s in inference, and says which of them the classifier decides. The source
is chosen where the detector is chosen (`choose`, from the run's options); pipeline.Analyser asks
it for boxes and decide, events and the outputs never know which one it was.

    detector.py     the bundled YOLOX detector (one input size, or several passes merged)
    md_file.py      a MegaDetector batch file's boxes (`--detections`), matched to the scanned inputs
    whole_image.py  one box per photo or frame (`--no-detector`: the inputs are crops)
"""
from __future__ import annotations

from ..options import RunOptions
from ..record import ImageRecord
from .detector import DetectorBoxes, bundled_detector
from .md_file import MdFileBoxes, match
from .source import BoxSource
from .whole_image import WholeImage

__all__ = ["BoxSource", "DetectorBoxes", "MdFileBoxes", "WholeImage", "bundled_detector", "choose", "match"]


def choose(options: RunOptions, records: list[ImageRecord]) -> tuple[BoxSource | None, list[str]]:
    """The boxes `options` ask for instead of the bundled detector's (None: the detector's) and
    notes for the log. A MegaDetector file is read and checked here, before any model loads: a
    file that cannot be trusted stops the run at once."""
    if options.no_detector:
        return WholeImage(), []
    if options.detections:
        return match(options.detections, records)
    return None, []
