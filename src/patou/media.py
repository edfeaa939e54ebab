"""Find media files and decode them fast and safely.

Decoding asks Pillow for a reduced JPEG (`draft`) at about the size the models need, so a
12 MP frame costs a fraction of a full decode; EXIF orientation is applied, odd modes
(CMYK, greyscale, 16-bit) become 8-bit RGB, and every problem becomes a one-line failure text.
"""
from __future__ import annotations

import mimetypes
import os
import re
import warnings
from collections import Counter
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .options import MAX_PIXELS
from .record import ImageRecord

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif"}  # gif: its first frame
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv"}  # decoded by video.py
MEDIA_EXTENSIONS = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
# Photo and video types cameras and phones write that patou does not decode: counted when skipped
# (with mimetypes' image/* and video/*), so a folder of HEIC files is never silently "nothing".
SKIPPED_MEDIA = {".heic", ".heif", ".avif", ".jxl", ".jp2", ".j2k", ".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw",
                 ".arw", ".srf", ".sr2", ".orf", ".rw2", ".raf", ".pef", ".srw", ".x3f", ".raw", ".3fr", ".erf",
                 ".kdc", ".mrw", ".psd", ".wmv", ".m4v", ".3gp", ".mts", ".m2ts", ".mpg", ".mpeg", ".flv", ".webm",
                 ".ogv", ".asf", ".vob", ".mxf", ".dv", ".insv"}
# Draft decoding keeps the long side at least this large: enough for 640 px detection and crops.
DECODE_SIDE = 1024
# Decoded pixels (after JPEG draft reduction) above which an image is refused before decoding: a
# PNG declaring 24000x24000 RGBA in 2 MB would take 11 GB. Huge JPEGs pass, drafted at 1/2..1/8.
# (`--max-pixels`: the default lives with the other options.)
# Pillow's own guard stays as a backstop for every other reader (it only warns up to twice this).
Image.MAX_IMAGE_PIXELS = 300_000_000

_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 0x9003
_DATETIME = 0x0132


def scan(inputs: list[Path], exclude: list[Path] = (), site_depth: int | None = None):
    """Walk the inputs recursively; return (records, problems).

    `problems` are one-line texts for unreadable folders and symlink loops: reported, not fatal.
    Files under `exclude` (e.g. the results or sort folder) are skipped, unless an exclusion holds the
    input itself (`--out` above the photos). Hidden files and folders (".name") are skipped alike.
    """
    records: list[ImageRecord] = []
    problems: list[str] = []
    skipped: Counter[str] = Counter()
    excluded = [Path(p).resolve() for p in exclude]
    seen_files: set[Path] = set()
    for given in inputs:
        root = Path(given).absolute()
        if _loops(root):
            problems.append(f"{root}: symlink loop, skipped")
            continue
        if root.is_file():
            if root.suffix.lower() in MEDIA_EXTENSIONS:
                records.append(ImageRecord(path=root, root=root.parent, site=site_of(root.parent, root, site_depth)))
            else:
                problems.append(f"{root}: not a supported image or video type ({root.suffix or 'no extension'})")
            continue
        if not root.is_dir():
            problems.append(f"{root}: no such file or folder")
            continue
        visited: set[tuple[int, int]] = set()
        real_root = root.resolve()
        excluded_here = [x for x in excluded if not (real_root == x or x in real_root.parents)]

        def onerror(err: OSError) -> None:
            problems.append(f"{err.filename}: cannot read folder ({err.strerror})")

        for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=True):
            here = Path(dirpath)
            st = here.stat()
            if (st.st_dev, st.st_ino) in visited:  # a symlink loop or a second link to a folder
                problems.append(f"{here}: folder already scanned (symlink loop?), skipped")
                dirnames[:] = []
                continue
            visited.add((st.st_dev, st.st_ino))
            real_here = here.resolve()
            if any(real_here == x or x in real_here.parents for x in excluded_here):
                dirnames[:] = []
                continue
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                suffix = Path(name).suffix.lower()
                if suffix not in MEDIA_EXTENSIONS:
                    if is_media_type(suffix):
                        skipped[suffix] += 1
                    continue
                path = here / name
                try:
                    key = path.resolve()
                except (RuntimeError, OSError):  # a file symlink loop (RuntimeError up to Python 3.12)
                    problems.append(f"{path}: symlink loop, skipped")
                    continue
                if key in seen_files:  # the same file reached twice (overlapping inputs, links)
                    continue
                seen_files.add(key)
                records.append(ImageRecord(path=path, root=root, site=site_of(root, path, site_depth)))
    if skipped:
        problems.append(f"{sum(skipped.values())} files of types patou does not read were skipped ("
                        + ", ".join(f"{k} {n}" for k, n in skipped.most_common()) + "): convert them to JPEG "
                        "(or MP4) to analyse them")
    return records, problems


def is_media_type(suffix: str) -> bool:
    """A photo or video type (by its lower-case suffix), read by patou or not."""
    if suffix in SKIPPED_MEDIA:
        return True
    kind = mimetypes.guess_type(f"x{suffix}", strict=False)[0] or ""
    return kind.startswith(("image/", "video/"))


def _loops(path: Path) -> bool:
    """A symlink that never reaches a file (`ln -s self.jpg self.jpg`): resolve() would raise."""
    try:
        path.resolve(strict=False)
    except (RuntimeError, OSError):  # RuntimeError up to Python 3.12, OSError(ELOOP) after
        return True
    return False


def site_of(root: Path, path: Path, depth: int | None) -> str:
    """Default site: the parent folder relative to the root ('.' at the root itself).

    With `depth`, only the first `depth` folder levels count, so `StationA/PBE/x.jpg`
    is site `StationA` at depth 1 (species-sorted trees keep their station as site).
    """
    parts = path.parent.relative_to(root).parts
    if depth is not None:
        parts = parts[:depth]
    return "/".join(parts) or "."


def exif_time(img: Image.Image) -> datetime | None:
    """EXIF DateTimeOriginal, else DateTime; None when absent or malformed (e.g. all zeros)."""
    try:
        exif = img.getexif()
        raw = exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)
    except Exception:  # corrupt EXIF must not cost the image
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "ignore")
    if not isinstance(raw, str):
        return None
    m = re.match(r"\s*(\d{4})[:\-](\d{2})[:\-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})", raw)
    if not m:
        return None
    try:
        return datetime(*map(int, m.groups()))
    except ValueError:
        return None


def decode(record: ImageRecord, side: int = DECODE_SIDE, max_pixels: int | None = None) -> Image.Image | None:
    """Open `record.path`, fill width/height/timestamp, return an RGB image or None on failure.

    An image that would decode to more than `max_pixels` (default MAX_PIXELS) is a failure, found
    from its header before any pixel is decoded.

    The returned image may be smaller than the original (draft decoding); boxes are kept
    normalised, so that never matters downstream.
    """
    path = record.path
    try:
        if path.stat().st_size == 0:
            record.failure = "empty file (0 bytes)"
            return None
        with warnings.catch_warnings():  # the cap below says it in the failure row, once
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            w, h = img.size
            if img.format in ("JPEG", "MPO"):  # MPO: a JPEG with a second (preview) frame appended
                img.draft("RGB", _draft_request(w, h, side))
            cap = MAX_PIXELS if max_pixels is None else max_pixels
            # checked on the header alone, before getexif() (a PNG's loads every pixel) or load()
            if img.size[0] * img.size[1] > cap:  # the size draft will decode to
                record.width, record.height = w, h
                record.failure = (f"image too large to decode safely: {w}x{h} = {w * h:,} pixels "
                                  f"> {cap:,} (--max-pixels)")
                return None
            record.timestamp = exif_time(img)
            orientation = img.getexif().get(0x0112, 1)
            record.width, record.height = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
            img.load()
            ImageOps.exif_transpose(img, in_place=True)  # not a copy of every upright photo
            img = to_rgb8(img)
            if max(img.size) > side * 2:  # non-JPEG giants: shrink before the models see them
                img.thumbnail((side, side), Image.Resampling.BILINEAR)
            return img
    except UnidentifiedImageError:
        record.failure = "not an image Pillow can read"
    except Image.DecompressionBombError as e:
        record.failure = f"image too large to decode safely ({e})"
    except OSError as e:
        msg = str(e)
        # Pillow says "truncated" and "Truncated File Read": both mean the file ends too early
        record.failure = "truncated image file" if "truncated" in msg.lower() else f"cannot decode: {msg}"
    except (ValueError, SyntaxError, MemoryError) as e:
        record.failure = f"cannot decode: {e}"
    return None


def _draft_request(w: int, h: int, side: int) -> tuple[int, int]:
    # draft() keeps the image at least this large, so ask for the scaled size of the original
    s = min(1.0, side / max(w, h))
    return max(1, int(w * s)), max(1, int(h * s))


def to_rgb8(img: Image.Image) -> Image.Image:
    """8-bit RGB from any mode; 16-bit and float images are rescaled, not clipped to white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float32)
        hi = float(a.max()) if a.size else 0.0
        scale = 255.0 / (65535.0 if hi > 255 and img.mode.startswith("I;16") else max(hi, 1.0))
        img = Image.fromarray(np.clip(a * scale, 0, 255).astype(np.uint8), "L")
    if img.mode == "RGBA" or img.mode == "LA" or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, img)
    return img.convert("RGB") if img.mode != "RGB" else img
