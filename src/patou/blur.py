"""People blurred out of copies (`--blur-humans` with `--sort copy` or Camtrap DP `--media copy`).

Each person's box (grown by a margin: detector boxes can cut off a hand or a foot) is replaced by a
smooth field made from 6 colour cells along its long side: no face, shape or text survives, only a
few blurred colours. The original file is only read. The copy is written losslessly:
- JPEG: in the DCT domain (jpeglib): the blocks of every MCU the box touches are re-encoded with the
  file's own quantisation tables, every other block is the original's, bit for bit, so outside
  those MCUs (and the next ring of pixels, which chroma upsampling reads from them) the copy
  decodes to exactly the original's pixels;
- PNG, TIFF (LZW), BMP, WebP (lossless): the whole image rewritten without loss.
EXIF is kept (capture time, camera), minus what could show the person again: its thumbnail and
the maker's notes (cameras keep previews there); other embedded images (an MPO's second picture,
Photoshop previews) are not written. The ICC profile is kept. What cannot be blurred this way
(a CMYK JPEG, a GIF, a video, an unreadable file) raises BlurError: the caller leaves it uncopied.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from PIL import Image

from patou.record import ImageRecord
from patou.video import is_video

CELLS = 6  # colour cells along a box's long side: nothing recognisable survives
MARGIN = 0.1  # of the box's width/height, added on every side
PERSON_CATEGORIES = {"person", "human"}  # MD / installed detector / SpeciesNet box classes
HUMAN = "human"
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}
_UNDO = {**_TRANSPOSE, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
LOSSLESS_SAVE = {"PNG": {}, "TIFF": {"compression": "tiff_lzw"}, "BMP": {}, "WEBP": {"lossless": True, "quality": 100}}
THUMBNAIL_TAGS = (0x927C,)  # MakerNote: cameras keep full previews there


class BlurError(Exception):
    """This file cannot be blurred safely; it must not be copied."""


def human_boxes(r: ImageRecord, detection_threshold: float, verified_label: str | None = None) -> list[tuple]:
    """The boxes to blur: every box >= the detection threshold that is a person (its category, from
    an MD or SpeciesNet file or an installed detector) or that the classifier calls `human` (its
    top class, at any score: a person is hidden even when the label stays undefined); every box
    when a reviewer said the photo shows a person, and the whole photo when it has none."""
    kept = [d for d in r.detections if d.conf >= detection_threshold]
    if verified_label == HUMAN:
        return [d.bbox for d in kept] or [(0.0, 0.0, 1.0, 1.0)]
    return [d.bbox for d in kept if d.category in PERSON_CATEGORIES or (d.top() or ("",))[0] == HUMAN]


def people_boxes(records, corrections: dict, detection_threshold: float) -> dict[str, list]:
    """{photo path: the boxes to blur} for every photo that shows a person (`human_boxes`), a
    reviewer's label (corrections.json) counting as the photo's truth."""
    out = {}
    for r in records:
        verified = (corrections.get((str(r.root), r.rel)) or {}).get("label")
        boxes = human_boxes(r, detection_threshold, verified) if r.failure is None else []
        if boxes:
            out[str(r.path)] = boxes
    return out


def blurred_region(region: Image.Image) -> Image.Image:
    """The region as a smooth field of CELLS colour cells along its long side (bilinear between them)."""
    w, h = region.size
    long = max(w, h)
    cw, ch = max(1, round(CELLS * w / long)), max(1, round(CELLS * h / long))
    return region.resize((cw, ch), Image.Resampling.BOX).resize((w, h), Image.Resampling.BILINEAR)


def _pixel_box(bbox, width: int, height: int) -> tuple[int, int, int, int] | None:
    x, y, w, h = (float(v) for v in bbox)
    x0, y0 = (x - MARGIN * w) * width, (y - MARGIN * h) * height
    x1, y1 = (x + w + MARGIN * w) * width, (y + h + MARGIN * h) * height
    box = (max(0, int(np.floor(x0))), max(0, int(np.floor(y0))), min(width, int(np.ceil(x1))),
           min(height, int(np.ceil(y1))))
    return box if box[2] > box[0] and box[3] > box[1] else None


def blur_boxes(img: Image.Image, boxes) -> Image.Image:
    """A copy of the (upright) image with every box, grown by MARGIN, blurred."""
    out = img.copy()
    for b in boxes:
        px = _pixel_box(b, *img.size)
        if px is not None:
            out.paste(blurred_region(img.crop(px)), px[:2])
    return out


def write_blurred(src: str | Path, dst: str | Path, boxes, max_pixels: int | None = None) -> str:
    """Write `src` with `boxes` (normalised, upright image) blurred to `dst` (a new file); returns
    how: "jpeg-dct" or "lossless". Raises BlurError when it cannot be done without loss or leak."""
    src, dst = Path(src), Path(dst)
    if is_video(src):
        raise BlurError("a video: its frames are not blurred")
    try:
        with Image.open(src) as im:
            fmt = im.format
            if max_pixels is not None and im.size[0] * im.size[1] > max_pixels:
                raise BlurError(f"{im.size[0]}x{im.size[1]} pixels, above --max-pixels")
            if fmt in ("JPEG", "MPO"):
                if im.mode not in ("RGB", "L"):
                    raise BlurError(f"a {im.mode} JPEG cannot be blurred without loss")
            elif fmt not in LOSSLESS_SAVE:
                raise BlurError(f"{fmt or 'this'} files cannot be blurred without loss")
            im.seek(0)
            stored = im.convert("RGB") if im.mode not in ("RGB", "L") else im.copy()
            exif = im.getexif()
            icc = im.info.get("icc_profile")
    except BlurError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise BlurError(f"cannot read ({e})") from None
    orientation = exif.get(0x0112, 1)
    upright = stored.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE else stored
    blurred = blur_boxes(upright, boxes)
    if orientation in _UNDO:
        blurred = blurred.transpose(_UNDO[orientation])
    exif_bytes = _clean_exif(exif)
    if fmt in ("JPEG", "MPO"):
        _write_jpeg(src, dst, np.asarray(stored), np.asarray(blurred), exif_bytes, icc)
        return "jpeg-dct"
    opts = dict(LOSSLESS_SAVE[fmt])
    if exif_bytes:
        opts["exif"] = exif_bytes
    if icc:
        opts["icc_profile"] = icc
    with open(dst, "xb") as f:  # a new file: never one that is already there
        blurred.save(f, fmt, **opts)
    return "lossless"


def _clean_exif(exif: Image.Exif) -> bytes:
    """EXIF without its thumbnail (Pillow writes IFD0 and its sub-IFDs, not IFD1) or maker notes."""
    if not exif:
        return b""
    sub = exif.get_ifd(0x8769)  # load the Exif sub-IFD so that it is written back
    for tag in THUMBNAIL_TAGS:
        sub.pop(tag, None)
    exif.get_ifd(0x8825)  # GPS
    return exif.tobytes()


# ---------------------------------------------------------------------------- JPEG, DCT domain


def _dct_matrix() -> np.ndarray:
    """The 8-point DCT-II of JPEG (orthonormal): F = D f D^T."""
    k = np.arange(8)
    d = np.cos((2 * k[None, :] + 1) * k[:, None] * np.pi / 16) * np.sqrt(2 / 8)
    d[0] /= np.sqrt(2)
    return d


_D = _dct_matrix()


def _ycbcr(rgb: np.ndarray) -> list[np.ndarray]:
    """JFIF's full-range YCbCr planes, as floats."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    return [0.299 * r + 0.587 * g + 0.114 * b,
            -0.168735892 * r - 0.331264108 * g + 0.5 * b + 128.0,
            0.5 * r - 0.418687589 * g - 0.081312411 * b + 128.0]


def _write_jpeg(src: Path, dst: Path, before: np.ndarray, after: np.ndarray, exif: bytes, icc: bytes | None) -> None:
    import jpeglib  # only this writer needs it

    try:
        jp = jpeglib.read_dct(str(src))
    except Exception as e:  # noqa: BLE001  jpeglib raises plain Exceptions for libjpeg errors
        raise BlurError(f"cannot read its JPEG coefficients ({e})") from None
    comps = [jp.Y] + ([jp.Cb, jp.Cr] if jp.Cb is not None else [])
    if getattr(jp, "has_black", False) or (len(comps) == 3) != (after.ndim == 3):
        raise BlurError("an unusual JPEG colour layout cannot be blurred without loss")
    factors = [tuple(int(v) for v in f) for f in jp.samp_factor[:len(comps)]]  # (vertical, horizontal)
    vmax, hmax = max(f[0] for f in factors), max(f[1] for f in factors)
    mh, mw = 8 * vmax, 8 * hmax  # an MCU, in pixels
    height, width = after.shape[:2]
    changed = after != before if after.ndim == 2 else np.any(after != before, axis=2)
    rows, cols = -(-height // mh), -(-width // mw)
    mcus = np.pad(changed, ((0, rows * mh - height), (0, cols * mw - width))).reshape(rows, mh, cols, mw).any(axis=(1, 3))
    if not mcus.any():
        mcus[0, 0] = True  # nothing to blur: the copy is still written the same way
    # only the rows and columns of MCUs that change are converted and transformed
    r0, r1 = np.nonzero(mcus.any(axis=1))[0][[0, -1]]
    c0, c1 = np.nonzero(mcus.any(axis=0))[0][[0, -1]]
    part = after[r0 * mh:(r1 + 1) * mh, c0 * mw:(c1 + 1) * mw]
    pad = ((0, (r1 + 1 - r0) * mh - part.shape[0]), (0, (c1 + 1 - c0) * mw - part.shape[1]))
    planes = [part.astype(np.float64)] if part.ndim == 2 else _ycbcr(part)
    sub = mcus[r0:r1 + 1, c0:c1 + 1]
    for c, (coef, (v, h)) in enumerate(zip(comps, factors)):
        plane = np.pad(planes[c], pad, mode="edge")  # libjpeg fills the last MCUs by repeating the edge
        fy, fx = vmax // v, hmax // h
        if fy > 1 or fx > 1:  # chroma at its own resolution: the mean of each fy x fx cell
            plane = plane.reshape(plane.shape[0] // fy, fy, plane.shape[1] // fx, fx).mean(axis=(1, 3))
        blocks = plane.reshape(plane.shape[0] // 8, 8, plane.shape[1] // 8, 8).swapaxes(1, 2) - 128.0
        want = np.repeat(np.repeat(sub, v, axis=0), h, axis=1)
        # the component's blocks of the part; the last MCUs may hold blocks the file does not store
        by, bx = r0 * v, c0 * h
        n_y, n_x = min(want.shape[0], coef.shape[0] - by), min(want.shape[1], coef.shape[1] - bx)
        want = want[:n_y, :n_x]
        q = jp.qt[int(jp.quant_tbl_no[c])].astype(np.float64)
        f = np.einsum("ij,njk,lk->nil", _D, blocks[:n_y, :n_x][want], _D) / q
        target = coef[by:by + n_y, bx:bx + n_x]
        target[want] = np.clip(np.round(f), -2047, 2047).astype(coef.dtype)
    jp.markers = []  # written below: the EXIF without its thumbnail, the ICC profile; no other images
    tmp = dst.with_name(dst.name + ".dct")
    try:
        jp.write_dct(str(tmp))
        data = tmp.read_bytes()
    finally:
        tmp.unlink(missing_ok=True)
    segments = b""
    if exif:
        segments += _segment(0xE1, b"Exif\x00\x00" + exif)
    if icc:
        segments += b"".join(_icc_segments(icc))
    with open(dst, "xb") as f:
        f.write(data[:2] + segments + data[2:])


def _segment(marker: int, payload: bytes) -> bytes:
    if len(payload) + 2 > 0xFFFF:
        raise BlurError("its EXIF is too large for one JPEG segment")
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def _icc_segments(icc: bytes) -> list[bytes]:
    """The ICC profile in APP2 chunks, as the ICC specification splits it."""
    size = 0xFFFF - 2 - 14
    parts = [icc[i:i + size] for i in range(0, len(icc), size)] or [b""]
    return [_segment(0xE2, b"ICC_PROFILE\x00" + bytes([i + 1, len(parts)]) + p) for i, p in enumerate(parts)]


def high_frequency_energy(img: Image.Image, box: tuple[int, int, int, int]) -> float:
    """Mean squared Laplacian of the grey image inside `box` (pixels): what edges and texture,
    hence faces and outlines, are made of."""
    g = np.asarray(img.convert("L").crop(box), dtype=np.float64)
    lap = -4 * g[1:-1, 1:-1] + g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:]
    return float((lap ** 2).mean()) if lap.size else 0.0

