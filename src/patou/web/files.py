"""Which files the review app may serve, and their cached thumbnails.

Only files under a run's input roots or its results folder are served. A requested name is
refused before touching the disk when it could climb out (`..`, absolute, backslash, NUL), and
again after resolving symlinks when the real file lies outside the real base folder.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from patou.media import decode
from patou.atomic import atomic_output
from patou.record import ImageRecord
from patou.results import RunFolder
from patou.video import VideoSampling, is_video, read_frames

_DRIVE = re.compile(r"^[A-Za-z]:")


class Refused(Exception):
    """A request for a file outside what the app serves (answered 403)."""


def safe_file(base: str | Path, rel: str) -> Path:
    """The real path of `rel` under `base`; Refused if it could leave `base`, FileNotFoundError
    if it is not a regular file."""
    if not rel or "\x00" in rel or "\\" in rel or rel.startswith("/") or _DRIVE.match(rel):
        raise Refused(f"{rel!r}: not a plain relative path")
    if any(part in ("", ".", "..") for part in rel.split("/")):
        raise Refused(f"{rel!r}: '.', '..' and empty path parts are not allowed")
    real_base = Path(os.path.realpath(base))
    target = Path(os.path.realpath(real_base / rel))
    if not target.is_relative_to(real_base):
        raise Refused(f"{rel!r}: leads outside {base}")
    if not target.is_file():
        raise FileNotFoundError(rel)
    return target


def thumbnail(results_dir: Path, image: Path, side: int) -> Path | None:
    """A JPEG of `image` at most `side` pixels, made once and cached in RESULTS_DIR/.patou/thumbs/
    under a key of path, size and mtime (an edited photo gets a new thumbnail). None if the
    image cannot be decoded."""
    st = image.stat()
    key = hashlib.sha1(f"{image}|{st.st_size}|{st.st_mtime_ns}|{side}".encode()).hexdigest()
    # a read-only results folder (a colleague's, on a share) gets its cache in the temp folder
    places = [RunFolder(results_dir).thumbs / key[:2] / f"{key}.jpg", Path(tempfile.gettempdir()) / "patou-thumbs" / f"{key}.jpg"]
    for cached in places:
        if cached.is_file():
            return cached
    # decode() is the pipeline's: EXIF rotation, CMYK, 16-bit, draft mode, the same as the models saw;
    # a video shows its first frame
    if is_video(image):
        frames = read_frames(ImageRecord(image, image.parent), VideoSampling(frames=1), side)
        img = frames[0][1] if frames else None
    else:
        img = decode(ImageRecord(image, image.parent), side)
    if img is None:
        return None
    img.thumbnail((side, side))
    for cached in places:
        try:
            with atomic_output(cached) as tmp:
                img.save(tmp, "JPEG", quality=85)
            return cached
        except PermissionError:
            continue
    raise PermissionError(f"cannot write a thumbnail in {places[0].parent} or {places[1].parent}")
