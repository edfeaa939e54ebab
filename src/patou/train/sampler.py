"""Class balance by downsampling: each class at most `ratio` x the rarest class (DeepFaune).

Downsampling rather than oversampling keeps rare classes from being seen as the same few crops
over and over; drawing afresh every epoch still lets every crop of a common class be used.
"""
from __future__ import annotations

import numpy as np


def balanced_indices(labels: list[str], ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Indices into `labels`: every class capped at floor(ratio x rarest count), shuffled."""
    if ratio < 1:
        raise ValueError(f"balance ratio {ratio}: expected >= 1")
    labels = np.asarray(labels, dtype=object)
    if labels.size == 0:
        return np.zeros(0, dtype=np.int64)
    classes, inverse = np.unique(labels.astype(str), return_inverse=True)
    members = [np.flatnonzero(inverse == i) for i in range(len(classes))]
    cap = max(int(np.floor(ratio * min(len(m) for m in members) + 1e-9)), 1)
    chosen = [m if len(m) <= cap else rng.choice(m, size=cap, replace=False) for m in members]
    return rng.permutation(np.concatenate(chosen)).astype(np.int64)


def fixed_balanced(labels: list[str], ratio: float, seed: int = 0) -> np.ndarray:
    """One balanced draw for validation, the same for a seed (sorted, so order is stable too)."""
    return np.sort(balanced_indices(labels, ratio, np.random.default_rng(seed)))
