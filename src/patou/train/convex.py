"""The roll-up correction fitted as a convex problem, its strength chosen by grouped cross-validation.

The roll-up head's logits are `base(f) + W f + b` (rollup.py), the base fixed. With the features
frozen, fitting (W, b) is L2-regularised multinomial logistic regression with the base as an
offset: convex, so L-BFGS finds the one optimum, deterministically, with no learning rate, no
epochs and no sampler. Details, each for a reason:

  - rows: both cached views of every crop (the mirror is free augmentation), each at half weight;
  - class-balanced weights (each class weighs the same in the loss) instead of resampling: the
    score that matters is balanced accuracy, and weights lose no crop;
  - features centred on the training mean and divided by one global scale (the RMS distance to
    it), not per feature: with a few crops per-feature variances are noise, and one scale keeps the
    geometry the ImageNet classifier (a linear map of the same features) was trained in. The
    penalty lam/2 (|W|^2 + |b|^2) then acts on logit changes per unit of typical feature spread.
    Centring and scale fold back into a plain Linear on the raw features for export;
  - candidates: the default itself (no correction: lam = inf), a bias-only correction (a prior
    shift: camera-trap class frequencies are not ImageNet's) and the full linear correction, each
    bias/linear at every lam of PENALTIES;
  - choice: balanced accuracy of out-of-fold predictions (what patou selects on everywhere; ties:
    balanced log-loss, then the stronger penalty), by grouped k-fold on the training crops only
    (groups: events or sites, as the validation split). The default is a candidate, so a
    correction is only kept when it predicts held-out groups better than doing nothing;
  - when a class has all its crops in one group, CV has no evidence for it (held out, nothing is
    left to learn it from): the linear correction at the textbook penalty 1 / n (scikit-learn's
    C = 1), with n the effective number of crops under the class-balanced weights (Kish: 1 / sum
    w^2 = classes x harmonic mean of the class counts). The balanced weights count one bear crop
    beside 550 others as 275 crops; a penalty of 1 / (all crops) would let that one crop set the
    correction, and does (a bear-vs-other fold of the learning curve: no bear gained, false bears).
"""
from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch

PENALTIES = tuple(10.0 ** e for e in (1.0, 0.5, 0.0, -0.5, -1.0, -1.5, -2.0, -2.5, -3.0))
KINDS = ("bias", "linear")
CV_FOLDS = 5
MAX_ITER = 200


def balanced_weights(y: np.ndarray) -> np.ndarray:
    """Per-row weight so that every present class sums to 1 / (number of classes); total 1."""
    y = np.asarray(y)
    classes, counts = np.unique(y, return_counts=True)
    per = dict(zip(classes.tolist(), (1.0 / (counts * len(classes))).tolist()))
    return np.array([per[v] for v in y.tolist()])


def balanced_accuracy(p: np.ndarray, y: np.ndarray) -> float:
    """Mean over the classes present of their recall at the top-1 label."""
    y = np.asarray(y)
    return float(np.sum(balanced_weights(y) * (p.argmax(1) == y)))


def balanced_log_loss(p: np.ndarray, y: np.ndarray) -> float:
    """Mean over the classes present of their crops' mean -log p(true class)."""
    y = np.asarray(y)
    nll = -np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1.0))
    return float(np.sum(balanced_weights(y) * nll))


class Scaler:
    """Centre on the training mean, divide by the RMS distance to it (one number)."""

    def __init__(self, feats: np.ndarray):
        f = feats.reshape(-1, feats.shape[-1]).astype(np.float64)
        self.mean = f.mean(0)
        self.scale = float(np.sqrt(((f - self.mean) ** 2).sum(1).mean())) or 1.0

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        return (feats.astype(np.float64) - self.mean) / self.scale


def _fit(base: torch.Tensor, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, lam: float, kind: str,
         start: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """argmin sum_i w_i CE(base_i + x_i W^T + b, y_i) + lam/2 (|W|^2 + |b|^2); (W, b) float64."""
    k, d = base.shape[1], x.shape[1]
    wt = (start[0].clone() if start is not None else torch.zeros(k, d, dtype=torch.float64)).requires_grad_(
        kind == "linear")
    b = (start[1].clone() if start is not None else torch.zeros(k, dtype=torch.float64)).requires_grad_(True)
    params = [wt, b] if kind == "linear" else [b]
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=MAX_ITER, tolerance_grad=1e-7, tolerance_change=1e-10,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        z = base + b if kind == "bias" else base + x @ wt.T + b
        loss = (w * torch.nn.functional.cross_entropy(z, y, reduction="none")).sum()
        loss = loss + 0.5 * lam * ((wt * wt).sum() + (b * b).sum() if kind == "linear" else (b * b).sum())
        loss.backward()
        return loss

    opt.step(closure)
    return wt.detach() if kind == "linear" else torch.zeros(k, d, dtype=torch.float64), b.detach()


def _rows(base: np.ndarray, x: np.ndarray, y: np.ndarray):
    """(n, V, .) crops -> (n * V, .) rows, each crop's weight split over its views."""
    n, v = base.shape[:2]
    w = np.repeat(balanced_weights(y) / v, v)
    return (torch.from_numpy(base.reshape(n * v, -1).astype(np.float64)),
            torch.from_numpy(x.reshape(n * v, -1)), torch.as_tensor(np.repeat(y, v), dtype=torch.long),
            torch.from_numpy(w))


def _path(base: np.ndarray, feats: np.ndarray, y: np.ndarray, candidates: list) -> dict:
    """Fit every candidate on (base, feats, y): {candidate: (W, b, scaler)}; warm starts along lam."""
    scaler = Scaler(feats)
    rb, rx, ry, rw = _rows(base, scaler(feats), y)
    out, start = {}, {}
    for kind, lam in candidates:
        if kind == "default":
            out[(kind, lam)] = None
            continue
        wt, b = _fit(rb, rx, ry, rw, lam, kind, start.get(kind))
        start[kind] = (wt, b)
        out[(kind, lam)] = (wt, b, scaler)
    return out


def predict(base: np.ndarray, feats: np.ndarray, fitted) -> np.ndarray:
    """(n, K) probabilities: the mean over views of softmax(base + correction)."""
    z = torch.from_numpy(base.astype(np.float64))
    if fitted is not None:
        wt, b, scaler = fitted
        z = z + torch.from_numpy(scaler(feats)) @ wt.T + b
    return torch.softmax(z, -1).mean(1).numpy()


def candidates(penalties=PENALTIES, kinds=KINDS) -> list:
    """Most regularised first (ties go to the earlier one): the default, then each kind from big lam down."""
    return [("default", math.inf)] + [(k, lam) for k in kinds for lam in sorted(penalties, reverse=True)]


def group_folds(y: np.ndarray, groups: list, k: int = CV_FOLDS, seed: int = 0) -> list[np.ndarray]:
    """Fold index per crop: whole groups per fold, classes spread (StratifiedGroupKFold); [] if < 2 groups."""
    import warnings

    from sklearn.model_selection import StratifiedGroupKFold

    g = np.unique(np.asarray([str(v) for v in groups]), return_inverse=True)[1]
    n_splits = min(k, len(set(g.tolist())), int(np.bincount(np.unique(y, return_inverse=True)[1]).max()))
    if n_splits < 2:
        return []
    with warnings.catch_warnings():  # "least populated class has only n members": expected with few photos
        warnings.simplefilter("ignore", UserWarning)
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        return [test for _, test in splitter.split(np.zeros(len(y)), y, g)]


def effective_crops(y: np.ndarray) -> float:
    """Kish's effective sample size of the class-balanced weights: 1 / sum w^2 (weights sum to 1)."""
    return float(1.0 / np.sum(balanced_weights(y) ** 2))


def choose(base: np.ndarray, feats: np.ndarray, y: np.ndarray, groups: list, *, penalties=PENALTIES,
           kinds=KINDS, folds: int = CV_FOLDS, seed: int = 0, criterion: str = "bal_acc",
           splits: list[np.ndarray] | None = None) -> dict:
    """Out-of-fold scores of every candidate on the training crops alone (`splits`: the held-out
    crops of each fold, default group_folds); {"choice", "cv", "folds", "oof"}."""
    cands = candidates(penalties, kinds)
    per_class = min(len({str(g) for g, v in zip(groups, y) if v == c}) for c in np.unique(y))
    if per_class < 2:  # a class in one group: held out, nothing is left to learn it from, no evidence
        return {"choice": ("linear", 1.0 / effective_crops(y)), "cv": {}, "folds": 0, "oof": {}}
    splits = group_folds(y, groups, folds, seed) if splits is None else splits
    oof = {c: np.zeros(base.shape[0:1] + base.shape[2:]) for c in cands}
    for test in splits:
        train = np.setdiff1d(np.arange(len(y)), test)
        if len(np.unique(y[train])) < 2:  # nothing to contrast: only the default can predict this fold
            for c in cands:
                oof[c][test] = predict(base[test], feats[test], None)
            continue
        fitted = _path(base[train], feats[train], y[train], cands)
        for c in cands:
            oof[c][test] = predict(base[test], feats[test], fitted[c])
    cv = {c: {"bal_acc": balanced_accuracy(oof[c], y), "bal_log_loss": balanced_log_loss(oof[c], y)} for c in cands}
    best = min(cands, key=lambda c: (-round(cv[c]["bal_acc"], 6), round(cv[c]["bal_log_loss"], 6), cands.index(c))
               if criterion == "bal_acc" else (round(cv[c]["bal_log_loss"], 6), cands.index(c)))
    return {"choice": best, "cv": cv, "folds": len(splits), "oof": oof}


def fit_rollup_convex(head, train_feats: np.ndarray, y_train, groups: list, *, seed: int = 0,
                      penalties=PENALTIES, kinds=KINDS, folds: int = CV_FOLDS, criterion: str = "bal_acc",
                      log: Callable[[str], None] = lambda s: None) -> dict:
    """Choose the correction by grouped CV on (train_feats, y_train), refit it on all of them, and
    write it into `head.correction` (a RollupHead; raw-feature Linear). Returns what was chosen."""
    t0 = time.perf_counter()
    f = np.ascontiguousarray(train_feats, dtype=np.float32)
    y = np.asarray(y_train)
    with torch.no_grad():
        ft = torch.from_numpy(f)
        base = torch.stack([head.base(ft[:, v]) for v in range(f.shape[1])], 1).double().numpy()
    sel = choose(base, f, y, groups, penalties=penalties, kinds=kinds, folds=folds, seed=seed, criterion=criterion)
    kind, lam = sel["choice"]
    wt = torch.zeros(head.correction.weight.shape, dtype=torch.float64)
    b = torch.zeros(head.correction.bias.shape, dtype=torch.float64)
    if kind != "default":
        path = [(kind, p) for p in sorted(penalties, reverse=True) if p > lam] + [(kind, lam)]  # warm starts
        fitted = _path(base, f, y, path)
        wt, b, scaler = fitted[(kind, lam)]
        wt = wt / scaler.scale  # fold centring and scale into a Linear on the raw features
        b = b - wt @ torch.from_numpy(scaler.mean)
    with torch.no_grad():
        head.correction.weight.copy_(wt.float())
        head.correction.bias.copy_(b.float())
    head.eval()
    dt = time.perf_counter() - t0
    cv = sel["cv"]
    r = lambda d: {k: round(v, 5) for k, v in d.items()}  # noqa: E731
    note = {"method": "convex", "correction": kind, "penalty": None if math.isinf(lam) else lam,
            "criterion": criterion, "cv_folds": sel["folds"], "cv": r(cv[(kind, lam)]) if cv else None,
            "cv_default": r(cv[("default", math.inf)]) if cv else None}
    log(f"roll-up correction: {kind}" + ("" if kind == "default" else f", penalty {lam:.3g}")
        + (f" (grouped {sel['folds']}-fold CV balanced accuracy {cv[(kind, lam)]['bal_acc']:.3f}, default "
           f"{cv[('default', math.inf)]['bal_acc']:.3f})" if cv else
           " (a class has its crops in one group: no CV, the textbook penalty 1 / effective crops)")
        + f"; {len(y)} crops, {dt:.1f} s")
    return {"head": head, "choice": note, "seconds": dt}
