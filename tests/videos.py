"""Short real videos for the tests, made with OpenCV from the real photos (test_video, test_ray, test_timelapse)."""
from __future__ import annotations

from pathlib import Path

import cv2

ENA = "zamba-ena24-small/tests/assets/images/ena24_small"
SIZE = (1024, 768)


def write_video(path: Path, frames: list, fps: float, fourcc: str = "mp4v") -> Path:
    h, w = frames[0].shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert out.isOpened(), f"OpenCV cannot write {path}"
    for f in frames:
        out.write(f)
    out.release()
    return path
