"""Embeddings of photos, cached on disk so a second search embeds only new photos.

An entry is keyed by the file's bytes (SHA-256: renamed or re-copied galleries still hit) and
lives in one file per (model, cropping setting): `cache_dir/<model key>-<crop key>.npz`. A
(path, size, mtime) -> digest memo in the same file spares re-hashing unchanged files. The file
is replaced atomically after merging with what is on disk, so a killed or concurrent search
leaves a usable cache (at worst missing the other's last entries).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from patou.atomic import atomic_output
from patou.reid.data import scan_individuals
from patou.digest import file_sha256
from patou.reid.embed import DETECTION_THRESHOLD, Cropped, Embedder


def default_cache_dir() -> Path:
    base = os.environ.get("PATOU_CACHE") or os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / ("" if os.environ.get("PATOU_CACHE") else "patou") / "reid"


class EmbeddingCache:
    def __init__(self, cache_dir: str | Path | None, embedder: Embedder, crop_key: str):
        self.path = Path(cache_dir or default_cache_dir()) / f"{embedder.key}-{crop_key}.npz"
        self.vectors: dict[str, np.ndarray] = {}
        self.boxes: dict[str, tuple] = {}
        self.digests: dict[str, str] = {}  # "path|size|mtime_ns" -> digest
        self._read(self.path)
        self.dirty = False

    def _read(self, path: Path) -> None:
        try:
            with np.load(path, allow_pickle=False) as z:
                for d, v, b in zip(z["digests"], z["vectors"], z["boxes"]):
                    self.vectors.setdefault(str(d), v)
                    self.boxes.setdefault(str(d), tuple(float(x) for x in b))
                self.digests.update(zip(map(str, z["stat_keys"]), map(str, z["stat_digests"])))
        except FileNotFoundError:
            pass
        except Exception:  # a damaged cache is only a cache: recompute rather than fail
            pass

    def digest(self, path: Path) -> str:
        st = path.stat()
        k = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        d = self.digests.get(k)
        if d is None:
            d = self.digests[k] = file_sha256(path)
            self.dirty = True
        return d

    def save(self) -> None:
        if not self.dirty:
            return
        self._read(self.path)  # keep entries another search added meanwhile
        digests = sorted(self.vectors)
        dim = len(next(iter(self.vectors.values()))) if digests else 0
        with atomic_output(self.path) as tmp, open(tmp, "wb") as f:
            np.savez(f, digests=np.asarray(digests, dtype=str),
                     vectors=np.asarray([self.vectors[d] for d in digests], dtype=np.float32).reshape(len(digests), dim),
                     boxes=np.asarray([self.boxes[d] for d in digests], dtype=np.float32).reshape(len(digests), 5),
                     stat_keys=np.asarray(list(self.digests), dtype=str),
                     stat_digests=np.asarray(list(self.digests.values()), dtype=str))
        self.dirty = False


@dataclass
class Embedded:
    paths: list[Path]
    vectors: np.ndarray  # (n, dim) unit vectors, one per path that had an animal
    boxes: list[tuple]  # (x, y, w, h, conf) per path; conf -1 for whole-photo crops
    problems: list[str] = field(default_factory=list)
    new: int = 0  # photos embedded now (not from the cache)


def embed_photos(paths: list[Path], embedder: Embedder, *, no_detector: bool = False, detector=None,
                 threshold: float = DETECTION_THRESHOLD, cache_dir: str | Path | None = None,
                 use_cache: bool = True, progress=None) -> Embedded:
    """Embed photos (cropped by `detector`, or whole with `no_detector`), through the cache."""
    if not no_detector and detector is None:
        from patou.models.detector import Detector

        detector = Detector()
    crop_key = "whole" if no_detector else f"{detector.card.name}.{detector.card.version}.{threshold}"
    cache = EmbeddingCache(cache_dir, embedder, crop_key) if use_cache else None
    out = Embedded([], np.zeros((0, 0), np.float32), [])
    vecs: dict[int, np.ndarray] = {}
    todo: list[tuple[int, Cropped, str | None]] = []
    for n, p in enumerate(paths):
        p = Path(p)
        try:
            d = cache.digest(p) if cache else None
        except OSError as e:
            out.problems.append(f"{p}: cannot read ({e.strerror})")
            continue
        if cache and d in cache.vectors:
            out.paths.append(p)
            vecs[len(out.paths) - 1] = cache.vectors[d]
            out.boxes.append(cache.boxes[d])
            continue
        c = embedder.crop_photo(p, None if no_detector else detector, threshold)
        if c.crop is None:
            out.problems.append(c.problem)
            continue
        out.paths.append(p)
        out.boxes.append((*c.bbox, -1.0 if c.conf is None else float(c.conf)))
        todo.append((len(out.paths) - 1, c, d))
        if len(todo) >= 64:
            _flush(todo, embedder, vecs, cache, out)
        if progress:
            progress(n + 1, len(paths))
    _flush(todo, embedder, vecs, cache, out)
    if cache:
        cache.save()
    if vecs:
        out.vectors = np.stack([vecs[i] for i in range(len(out.paths))]).astype(np.float32)
    return out


def _flush(todo, embedder, vecs, cache, out) -> None:
    if not todo:
        return
    emb = embedder.embed([c.crop for _, c, _ in todo])
    for (i, c, d), v in zip(todo, emb):
        vecs[i] = v
        if cache and d:
            cache.vectors[d] = v
            cache.boxes[d] = out.boxes[i]
            cache.dirty = True
    out.new += len(todo)
    todo.clear()


@dataclass
class Gallery:
    """Known individuals: their photos, ids and embeddings."""

    paths: list[Path]
    ids: list[str]
    vectors: np.ndarray
    problems: list[str]
    new: int = 0

    @classmethod
    def load(cls, root: str | Path, embedder: Embedder, **kw) -> "Gallery":
        images, problems = scan_individuals(root)
        e = embed_photos([i.path for i in images], embedder, **kw)
        label = {i.path: i.label for i in images}
        return cls(e.paths, [label[p] for p in e.paths], e.vectors, problems + e.problems, e.new)
