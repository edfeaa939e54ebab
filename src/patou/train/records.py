"""The records the training steps pass along (torch-free, so tests and tools can use them)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path


@dataclass
class LabelledImage:
    """An image a user labelled: by its leaf folder, or by a row of a `path,label` CSV."""

    path: Path
    root: Path  # the DATA folder it was found under (sites and events are relative to it)
    label: str  # normalised: lower-case snake_case, after merges; never empty
    site: str = "."
    timestamp: datetime | None = None
    event_id: str | None = None  # set by splits.assign_events


@dataclass
class Crop:
    """One training/evaluation example: a detector box (or the whole image with --no-crop)."""

    path: Path  # cached crop on disk: square RGB JPEG, CROP_SIZE px
    label: str
    source: Path  # the original image
    site: str = "."
    event_id: str | None = None
    bbox: tuple[float, float, float, float] | None = None  # normalised x, y, w, h; None = whole image
    conf: float | None = None  # detector confidence; None = whole image


CROP_SIZE = 288  # cached crops leave room for random-resized-crop augmentation down to 224
