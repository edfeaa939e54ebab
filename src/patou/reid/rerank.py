"""Search-time re-ranking by neighbour averaging, NumPy only: DBA + alpha-QE.

Database-side augmentation (DBA) replaces each gallery vector by a similarity-weighted mean of
itself and its k nearest gallery photos, and alpha query expansion (alpha-QE) does the same for
each query with its k nearest (augmented) gallery photos; weights are similarity**alpha (negative
similarities count 0). Photos of one animal pull each other together, so a query that matches one
of them well inherits the evidence of the others. Both return plain unit vectors, so ranking,
metrics and the new-individual threshold work on them unchanged.

Cost: DBA is a gallery x gallery product (10,000 photos x 512-d: ~5e10 multiply-adds, done in
blocks of 1,024 rows so memory stays ~40 MB) once per search; QE is what ranking already costs.
"""
from __future__ import annotations

import numpy as np

from patou.reid.embed import l2n

BLOCK = 1024
ALPHA = 3.0


def _average(x: np.ndarray, base: np.ndarray, k: int, alpha: float, include_self: bool) -> np.ndarray:
    """Each row of `x` -> l2n(sum of w_j * base_j over its top-k rows of `base` [+ itself, weight 1])."""
    out = np.empty_like(x)
    k = min(k, len(base))
    for s in range(0, len(x), BLOCK):
        sim = x[s : s + BLOCK] @ base.T
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        w = np.maximum(np.take_along_axis(sim, top, axis=1), 0.0) ** alpha
        agg = np.einsum("qk,qkd->qd", w, base[top])
        out[s : s + BLOCK] = agg + (x[s : s + BLOCK] if include_self else 0.0)
    return l2n(out)


def dba(gallery: np.ndarray, k: int, alpha: float = ALPHA) -> np.ndarray:
    """Database-side augmentation: k counts the photo itself (its own similarity is 1), so k=1
    leaves the gallery as it is."""
    if k <= 1 or len(gallery) == 0:
        return gallery
    return _average(gallery, gallery, k, alpha, include_self=False)


def expand_query(query: np.ndarray, gallery: np.ndarray, k: int, alpha: float = ALPHA) -> np.ndarray:
    """Alpha query expansion with the k most similar gallery photos (k=0: unchanged)."""
    if k <= 0 or len(gallery) == 0 or len(query) == 0:
        return query
    return _average(query, gallery, k, alpha, include_self=True)


def rerank(query: np.ndarray, gallery: np.ndarray, k: int, alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """DBA on the gallery, then alpha-QE of the queries against it; k=0 returns the inputs."""
    if k <= 0:
        return query, gallery
    g = dba(gallery, k + 1, alpha)  # + the photo itself
    return expand_query(query, g, k, alpha), g
