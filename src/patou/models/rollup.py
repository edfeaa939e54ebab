"""Roll a classifier's fine classes (ImageNet-1k for the bundled model) up into patou's labels.

The mapping is data, not code: a CSV with columns `index,imagenet_name,label`, one row per
network output, read once into an index vector. The roll-up is

    p = softmax(logits / temperature)            over the network's classes
    P[label] = sum of p over the label's classes
    P[label] *= exp(log_prior[label])            optional calibration, then renormalised
    P[fold[label]] += P[label]                   helper labels folded into output labels

so temperature, priors and folds are tuned from the model card's `extra` without a code change
(the CSV is the card's `extra.taxonomy`, a name cards keep; the Camtrap DP taxa of the labels are
another table, formats/camtrap_dp.py's).
The bundled card uses a helper label `object` (ImageNet's man-made things that are neither
people nor vehicles): the detector already said "animal", so that mass is down-weighted by a
prior, then folded into `other`.
NumPy only.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LABEL_RE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")  # lower-case snake_case
COLUMNS = ("index", "imagenet_name", "label")


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of (n, k) scores divided by `temperature`, in float64 for stability."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def apply_log_prior(probs: np.ndarray, labels: list[str] | tuple[str, ...], log_prior: dict | None) -> np.ndarray:
    """Multiply each label's mass by exp(log_prior[label]) and renormalise rows to sum to 1.
    Labels absent from `log_prior` keep a term of 0; an unknown label is an error (a typo in a
    card must not silently do nothing)."""
    if not log_prior:
        return probs
    unknown = sorted(set(log_prior) - set(labels))
    if unknown:
        raise ValueError(f"log_prior names unknown labels: {', '.join(unknown)} (labels: {', '.join(labels)})")
    terms = np.array([float(log_prior.get(lab, 0.0)) for lab in labels], dtype=np.float64)
    out = np.asarray(probs, dtype=np.float64) * np.exp(terms - terms.max())
    total = out.sum(axis=-1, keepdims=True)
    return np.divide(out, total, out=np.full_like(out, 1.0 / out.shape[-1]), where=total > 0)


@dataclass(frozen=True)
class Rollup:
    """Which output label each network class rolls up into."""

    labels: tuple[str, ...]  # output order (the model card's `labels`)
    index: np.ndarray  # (n_classes,) int: position in `labels` of each network class
    names: tuple[str, ...]  # the network classes' names (for people, not used in the maths)

    @property
    def n_classes(self) -> int:
        return len(self.index)

    @property
    def matrix(self) -> np.ndarray:
        """(n_classes, n_labels) 0/1 matrix: probs @ matrix sums each label's classes."""
        m = np.zeros((self.n_classes, len(self.labels)), dtype=np.float64)
        m[np.arange(self.n_classes), self.index] = 1.0
        return m

    def classes_of(self, label: str) -> list[int]:
        return np.flatnonzero(self.index == self.labels.index(label)).tolist()

    @classmethod
    def load(cls, path: str | Path, labels: list[str] | tuple[str, ...] | None = None) -> "Rollup":
        """Read the CSV. `labels` fixes the output order (a card's labels) and must name every
        label the CSV uses; without it the order is that of first appearance in the CSV."""
        path = Path(path)
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != COLUMNS:
                raise ValueError(f"{path}: columns must be {','.join(COLUMNS)}, got {reader.fieldnames}")
            rows = [(int(r["index"]), r["imagenet_name"], r["label"].strip()) for r in reader]
        n = len(rows)
        if sorted(i for i, _, _ in rows) != list(range(n)):
            raise ValueError(f"{path}: indices must cover 0..{n - 1} exactly once")
        rows.sort()
        bad = sorted({lab for _, _, lab in rows if not LABEL_RE.match(lab)})
        if bad:
            raise ValueError(f"{path}: labels must be lower-case snake_case: {', '.join(bad)}")
        if labels is None:
            labels = list(dict.fromkeys(lab for _, _, lab in rows))
        labels = tuple(labels)
        if len(set(labels)) != len(labels):
            raise ValueError(f"duplicate labels: {labels}")
        pos = {lab: k for k, lab in enumerate(labels)}
        missing = sorted({lab for _, _, lab in rows} - pos.keys())
        if missing:
            raise ValueError(f"{path}: labels {', '.join(missing)} are not among the model's labels")
        index = np.array([pos[lab] for _, _, lab in rows], dtype=np.int64)
        return cls(labels=labels, index=index, names=tuple(name for _, name, _ in rows))

    @classmethod
    def for_card(cls, card) -> "Rollup":
        """The taxonomy a classification card names, with its helper labels (`extra.fold`)."""
        extra = card.extra or {}
        return cls.load(card.path.parent / extra["taxonomy"], labels=list(card.labels) + list(extra.get("fold") or {}))

    def rollup(self, logits: np.ndarray, temperature: float = 1.0, log_prior: dict | None = None,
               fold: dict | None = None) -> np.ndarray:
        return rollup(logits, self, temperature=temperature, log_prior=log_prior, fold=fold)


def rollup(
    logits: np.ndarray, taxonomy: Rollup, temperature: float = 1.0, log_prior: dict | None = None,
    fold: dict | None = None,
) -> np.ndarray:
    """(n, n_classes) logits -> (n, n_labels) probabilities, rows summing to 1 (float32).

    With `fold` {helper: label}, each helper label's mass is added to its target label and the
    helper column dropped: the result has one column per label of `taxonomy.labels` minus the
    helpers, in that order."""
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[1] != taxonomy.n_classes:
        raise ValueError(f"expected logits of shape (n, {taxonomy.n_classes}), got {logits.shape}")
    p = softmax(logits, temperature)
    mass = np.zeros((len(p), len(taxonomy.labels)), dtype=np.float64)
    for k in range(len(taxonomy.labels)):
        mass[:, k] = p[:, taxonomy.index == k].sum(axis=1)
    mass = apply_log_prior(mass, taxonomy.labels, log_prior)
    if fold:
        pos = {lab: k for k, lab in enumerate(taxonomy.labels)}
        unknown = sorted(set(fold) - pos.keys() | set(fold.values()) - pos.keys())
        if unknown:
            raise ValueError(f"fold names unknown labels: {', '.join(unknown)}")
        for src, dst in fold.items():
            mass[:, pos[dst]] += mass[:, pos[src]]
        mass = mass[:, [k for k, lab in enumerate(taxonomy.labels) if lab not in fold]]
    return mass.astype(np.float32)
