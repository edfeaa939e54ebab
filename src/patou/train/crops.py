"""Detector crops for training, cached on disk so that a second run never detects again.

An entry is keyed by the file's bytes (not its path or mtime: renamed or re-copied folders still
hit) and by everything that shapes the crops (detector name/version, threshold, margin, size).
Labels are not in the key: relabelling or merging classes reuses the same crops.
Layout: `cache_dir/<key[:2]>/<key>/{0,1,..}.jpg` + `meta.json`, the latter written last and
atomically, so an entry without meta.json (a killed run) is simply recomputed.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from patou.digest import update_with_file
from patou.media import decode
from patou.models.classifier import PAD_VALUE, crop
from patou.options import DETECTION_THRESHOLD
from patou.atomic import atomic_output
from patou.record import EMPTY, ImageRecord
from patou.train.records import CROP_SIZE, Crop, LabelledImage

CACHE_VERSION = "1"  # bump when the cropping code changes what a key's crops look like
JPEG_QUALITY = 95


class CropCache:
    def __init__(self, cache_dir: Path, detector=None, detection_threshold: float = DETECTION_THRESHOLD, margin: float = 0.1):
        """`detector`: anything with `.card` and `.detect(img)`; None = the bundled one, loaded
        only when an image is not cached yet (a fully cached run never builds an ONNX session)."""
        self.cache_dir = Path(cache_dir)
        self._detector = detector
        self.threshold = float(detection_threshold)
        self.margin = float(margin)
        self.counts: dict[str, int] = {}

    @property
    def detector(self):
        if self._detector is None:
            from patou.models.detector import Detector

            self._detector = Detector()
        return self._detector

    def _card(self):
        if self._detector is not None:
            return self._detector.card
        from patou.models.card import ModelCard
        from patou.models.detector import DEFAULT_CARD

        return ModelCard.load(DEFAULT_CARD)  # the JSON only: enough for the key

    def key(self, path: Path, no_crop: bool = False, card=None) -> str:
        h = update_with_file(hashlib.sha256(), path)
        if no_crop:  # whole images do not depend on the detector or its settings
            setting = f"whole|{CROP_SIZE}|{PAD_VALUE}"
        else:
            card = card or self._card()
            setting = f"{card.name}|{card.version}|{self.threshold}|{self.margin}|{CROP_SIZE}|{PAD_VALUE}"
        h.update(f"|patou-crops-{CACHE_VERSION}|{setting}".encode())
        return h.hexdigest()

    def entry(self, key: str) -> Path:
        return self.cache_dir / key[:2] / key

    def crops_for(
        self,
        images: list[LabelledImage],
        no_crop: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[list[Crop], list[str]]:
        """Crops of every labelled image, and one-line problems. `progress(done, total)` after each.

        `empty` images give no crop (they serve evaluation); a non-empty image where the detector
        finds no box above the threshold gives none either and is noted. Counts land in `self.counts`.
        """
        card = None if no_crop else self._card()
        crops: list[Crop] = []
        problems: list[str] = []
        counts = dict.fromkeys(("images", "cached", "computed", "empty", "no_box", "failed", "crops"), 0)
        for done, img in enumerate(images, 1):
            counts["images"] += 1
            if img.label == EMPTY:
                counts["empty"] += 1
            else:
                try:
                    key = self.key(img.path, no_crop, card)
                except OSError as e:
                    problems.append(f"{img.path}: cannot read ({e.strerror or e})")
                    counts["failed"] += 1
                    key = None
                if key is not None:
                    meta = self._load(key)
                    if meta is not None:
                        counts["cached"] += 1
                    else:
                        meta, failure = self._compute(img.path, key, no_crop)
                        if failure:
                            problems.append(f"{img.path}: {failure}")
                            counts["failed"] += 1
                        else:
                            counts["computed"] += 1
                    if meta is not None:
                        found = self._crops(img, key, meta)
                        if not found:
                            counts["no_box"] += 1
                            note = f"labelled {img.label!r} but no detection >= {self.threshold}, no crop"
                            problems.append(f"{img.path}: {note}")
                        crops += found
            if progress:
                progress(done, len(images))
        counts["crops"] = len(crops)
        self.counts = counts
        return crops, problems

    def _load(self, key: str) -> dict | None:
        entry = self.entry(key)
        try:
            meta = json.loads((entry / "meta.json").read_text())
        except (OSError, ValueError):
            return None
        # a crop file lost since (cleaning by hand, a full disk): recompute the whole entry
        if not all((entry / f"{i}.jpg").is_file() for i in range(len(meta.get("boxes", [])))):
            return None
        return meta

    def _compute(self, path: Path, key: str, no_crop: bool) -> tuple[dict | None, str | None]:
        # the same decode as inference, so training crops have the resolution the classifier will see
        rec = ImageRecord(path=path, root=path.parent)
        img = decode(rec)
        if img is None:
            return None, rec.failure
        if no_crop:
            boxes, confs = [(0.0, 0.0, 1.0, 1.0)], [None]
            arrays = [crop(img, boxes[0], CROP_SIZE, margin=0.0, pad_value=PAD_VALUE)]  # centred square pad
        else:
            dets = [d for d in self.detector.detect(img) if d.conf >= self.threshold]
            boxes, confs = [tuple(d.bbox) for d in dets], [d.conf for d in dets]
            arrays = [crop(img, b, CROP_SIZE, margin=self.margin, pad_value=PAD_VALUE) for b in boxes]
        entry = self.entry(key)
        entry.mkdir(parents=True, exist_ok=True)
        for i, a in enumerate(arrays):
            # tmp + rename: a concurrent reader never sees half a JPEG
            tmp = entry / f".{i}.{secrets.token_hex(4)}.tmp"
            Image.fromarray(np.asarray(a, dtype=np.uint8)).save(tmp, "JPEG", quality=JPEG_QUALITY)
            os.replace(tmp, entry / f"{i}.jpg")
        meta = {"boxes": [list(b) for b in boxes], "confs": confs, "whole": no_crop, "source": str(path)}
        with atomic_output(entry / "meta.json") as tmp:  # last: its presence marks a complete entry
            tmp.write_text(json.dumps(meta))
        return meta, None

    def _crops(self, img: LabelledImage, key: str, meta: dict) -> list[Crop]:
        entry = self.entry(key)
        whole = meta.get("whole", False)
        return [
            Crop(
                path=entry / f"{i}.jpg",
                label=img.label,
                source=img.path,
                site=img.site,
                event_id=img.event_id,
                bbox=None if whole else tuple(box),
                conf=None if whole else conf,
            )
            for i, (box, conf) in enumerate(zip(meta["boxes"], meta["confs"]))
        ]


def read_crop(path: Path, view: float = 1.0) -> np.ndarray:
    """A cached crop as (h, w, 3) uint8 RGB, resized to CROP_SIZE if cut elsewhere; `view` < 1
    keeps the centred square of that fraction: the crop at a smaller margin (see `view_fraction`)."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (CROP_SIZE, CROP_SIZE):  # e.g. crops cut by hand: same geometry anyway
            im = im.resize((CROP_SIZE, CROP_SIZE), Image.Resampling.BILINEAR)
        if view < 1.0:
            side = round(CROP_SIZE * view)
            lo = (CROP_SIZE - side) // 2
            im = im.crop((lo, lo, lo + side, lo + side))
        return np.array(im)


def view_fraction(margin: float, cached_margin: float) -> float:
    """The share of a crop cut at `cached_margin` that a crop at `margin` covers: both squares
    are centred on the box, with sides (1 + 2 * margin) x its longer side."""
    if margin > cached_margin:
        raise ValueError(f"crop margin {margin} is wider than the cached crops' ({cached_margin})")
    return (1.0 + 2.0 * margin) / (1.0 + 2.0 * cached_margin)
