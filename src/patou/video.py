"""Videos: pick a few frames, decode them with OpenCV, and read the container's creation time.

A video is one ImageRecord: its sampled frames are detected and classified like photos (each box
carries its `frame_number`), and decide.py gives the video one verdict from its frames.

Sampling follows DeepFaune's video rule (predictTools.PredictorVideo): 8 frames, one per second
of video from the first frame; when the video is too short for that, the spacing shrinks until
the 8 frames fit. `VideoSampling(fps, frames)` changes the rate and the count.
"""
from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image

from .media import DECODE_SIDE, VIDEO_EXTENSIONS
from .options import VIDEO_FPS, VIDEO_FRAMES
from .record import ImageRecord

# OpenCV's FFmpeg backend prints its complaints about broken files on stderr; patou reports
# each broken file itself as one failure line.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

_MP4_EPOCH = datetime(1904, 1, 1)
_EARLIEST_CLOCK = datetime(1995, 1, 1)  # before this, a camera's clock was simply never set


@dataclass(frozen=True)
class VideoSampling:
    fps: float = VIDEO_FPS  # frames sampled per second of video (DeepFaune: 1)
    frames: int = VIDEO_FRAMES  # how many frames at most (DeepFaune: 8)

    def __post_init__(self):
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise ValueError(f"--video-fps must be a positive number, not {self.fps!r}")
        if int(self.frames) != self.frames or self.frames < 1:
            raise ValueError(f"--video-frames must be a whole number >= 1, not {self.frames!r}")

    def key(self) -> str:
        return f"video:{self.fps:g}x{int(self.frames)}"


def is_video(path: Path | str) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def frame_numbers(total: int, frame_rate: float, sampling: VideoSampling) -> list[int]:
    """The frames to analyse: every `frame_rate / fps`-th frame from 0, `frames` of them.

    As in DeepFaune, a video shorter than that keeps its frame count by sampling closer together.
    `total` <= 0 means the container does not say how long it is: reading stops at its end.
    """
    n = int(sampling.frames)
    lag = max(1, round(frame_rate / sampling.fps))
    if total > 0:
        while lag > 1 and (n - 1) * lag >= total:
            lag -= 1
    numbers = [k * lag for k in range(n)]
    return [k for k in numbers if k < total] if total > 0 else numbers


def read_frames(record: ImageRecord, sampling: VideoSampling, side: int = DECODE_SIDE) -> list[tuple[int, Image.Image]]:
    """Decode the sampled frames of `record.path` as RGB images (long side <= `side`).

    Fills width, height, frame_rate, frames_processed (the frames actually decoded) and
    timestamp; on failure sets `record.failure` and returns [].
    """
    import cv2  # imported here: only videos need OpenCV

    path = record.path
    record.timestamp = creation_time(path)
    try:
        if path.stat().st_size == 0:
            record.failure = "empty file (0 bytes)"
            return []
    except OSError as e:
        record.failure = f"cannot read: {e.strerror or e}"
        return []
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            record.failure = "not a video OpenCV can read"
            return []
        rate = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not (rate > 0 and math.isfinite(rate)):
            record.failure = "video without a frame rate"
            return []
        record.frame_rate = round(rate, 3)
        wanted = frame_numbers(int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0), rate, sampling)
        frames: list[tuple[int, Image.Image]] = []
        # Reading on (grab) rather than seeking: exact frame numbers with every codec and container.
        want = set(wanted)
        for n in range(wanted[-1] + 1):
            if not cap.grab():
                break
            if n in want:
                ok, bgr = cap.retrieve()
                if ok and bgr is not None and bgr.size:
                    frames.append((n, _to_image(bgr, side)))
                    record.height, record.width = bgr.shape[:2]
    except cv2.error as e:
        record.failure = f"cannot decode video: {str(e).strip().splitlines()[-1]}"
        return []
    finally:
        cap.release()
    if not frames:
        record.failure = "no frame of the video could be decoded"
        return []
    record.frames_processed = [n for n, _ in frames]
    return frames


def _to_image(bgr: np.ndarray, side: int) -> Image.Image:
    import cv2

    if bgr.ndim == 2:
        bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
    h, w = bgr.shape[:2]
    if max(h, w) > side:  # the same size budget as a draft-decoded photo
        s = side / max(h, w)
        bgr = cv2.resize(bgr, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]))


def creation_time(path: Path) -> datetime | None:
    """The MP4/MOV header's creation time (`mvhd`), as the camera wrote it; None elsewhere.

    Camera traps write their clock there (usually local time, though the format says UTC),
    so it is kept as a naive time like a photo's EXIF time. The file's modification time is
    never used: copying a card resets it. AVI and MKV have no such field that cameras fill.
    """
    try:
        with open(path, "rb") as f:
            moov = _find_box(f, b"moov", os.fstat(f.fileno()).st_size)
            if moov is None:
                return None
            mvhd = _find_box(f, b"mvhd", moov)
            if mvhd is None:
                return None
            head = f.read(12)
            version = head[0]
            secs = struct.unpack(">Q", head[4:12])[0] if version == 1 else struct.unpack(">I", head[4:8])[0]
    except (OSError, struct.error, IndexError):
        return None
    try:
        t = _MP4_EPOCH + timedelta(seconds=secs)
    except OverflowError:
        return None
    return t if _EARLIEST_CLOCK <= t <= datetime.now() + timedelta(days=2) else None


def _find_box(f, name: bytes, end: int) -> int | None:
    """Walk boxes from the current position to `end`; leave the file at the named box's payload
    and return where that box ends."""
    pos = f.tell()
    while pos + 8 <= end:
        f.seek(pos)
        size, kind = struct.unpack(">I4s", f.read(8))
        header = 8
        if size == 1:
            size = struct.unpack(">Q", f.read(8))[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header:
            return None
        if kind == name:
            f.seek(pos + header)
            return pos + size
        pos += size
    return None
