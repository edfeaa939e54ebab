"""The one record that travels the whole pipeline: a media file and everything learnt about it.

Stages fill fields in order (scan -> decode -> detect -> classify -> decide -> group -> write);
none of them needs another stage's internals, only this record.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

EMPTY = "empty"
UNDEFINED = "undefined"


def normalise_label(name: str) -> str:
    """"Cerf élaphe" -> "cerf_elaphe": accents stripped, lower case, other characters -> "_"."""
    text = unicodedata.normalize("NFKD", str(name))
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    return re.sub(r"[^a-z0-9]+", "_", text).strip("_")


@dataclass
class Detection:
    """One detector box, in original-image coordinates."""

    bbox: tuple[float, float, float, float]  # normalised [x_min, y_min, width, height]
    conf: float  # detector confidence (objectness x class)
    category: str = "animal"
    scores: dict[str, float] | None = None  # classifier probabilities over the card's labels
    frame_number: int | None = None  # videos: the frame the box was found in

    def top(self) -> tuple[str, float] | None:
        if not self.scores:
            return None
        label = max(self.scores, key=self.scores.get)
        return label, self.scores[label]


def in_output_order(records) -> list["ImageRecord"]:
    """By input root, then path under it: the row order of every output file."""
    return sorted(records, key=lambda r: (str(r.root), r.rel))


@dataclass
class ImageRecord:
    path: Path  # absolute path of the file as found
    root: Path  # the input root it was found under
    site: str = ""
    timestamp: datetime | None = None
    width: int | None = None
    height: int | None = None
    detections: list[Detection] = field(default_factory=list)
    failure: str | None = None
    # image verdict (decide.py); scores is the class vector that the event averages
    label: str | None = None
    score: float | None = None
    scores: dict[str, float] | None = None
    target_score: float | None = None
    count: int | None = None  # boxes of the label at or above its threshold (decide.count_boxes)
    # event verdict (events.py + decide.py)
    event_id: str | None = None
    event_label: str | None = None
    event_score: float | None = None
    event_target_score: float | None = None
    event_count: int | None = None  # MaxN: the most boxes of the event's label in one of its photos
    # videos only (video.py): frames per second and the frame numbers analysed
    frame_rate: float | None = None
    frames_processed: list[int] | None = None
    # where `timestamp` came from: exif | filename | mtime (see timestamps.py); None = no time
    timestamp_source: str | None = None
    # what the box source's own classifier said (a SpeciesNet file's label and score), for comparison
    source_label: str | None = None
    source_score: float | None = None

    @property
    def rel(self) -> str:
        """Path relative to its input root, with forward slashes (the key in every output)."""
        try:
            return self.path.relative_to(self.root).as_posix()
        except ValueError:
            return self.path.name

    def to_json(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        d["root"] = str(self.root)
        d["timestamp"] = self.timestamp.isoformat() if self.timestamp else None
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ImageRecord":
        """Back from `to_json`; fields a later patou added are ignored, fields an earlier one
        lacked keep their defaults."""
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        d["path"] = Path(d["path"])
        d["root"] = Path(d["root"])
        d["timestamp"] = datetime.fromisoformat(d["timestamp"]) if d.get("timestamp") else None
        d["detections"] = [
            Detection(tuple(x["bbox"]), x["conf"], x.get("category", "animal"), x.get("scores"), x.get("frame_number"))
            for x in d.get("detections") or []
        ]
        return cls(**d)
