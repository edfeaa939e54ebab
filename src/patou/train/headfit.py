"""A head fitted on cached backbone features (features.py): seconds instead of minutes.

Each epoch draws the same class-balanced sample as the full loop (sampler.py, seeded from
(seed, epoch)) and, per crop, one of its two views (the crop or its mirror: the augmentation that
costs nothing once both are cached). AdamW, cosine-decayed lr. A roll-up head's base (the
ImageNet roll-up of the frozen features) has no parameter, so it is computed once per view.
Validation, when given, averages each crop's two views as `Classifier` does, and the epoch with
the best balanced accuracy (ties: lower log-loss) is kept.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from patou.train.loop import default_sampler, epoch_indices, epoch_seed
from patou.train.rollup import RollupHead

HEAD_EPOCHS = 30
HEAD_LR = 1e-3  # of 3e-3 and 1e-3, the better on benchmarks/learning_curve.py (task a): a small step keeps the roll-up
HEAD_WEIGHT_DECAY = 0.05
HEAD_BATCH = 32


def _logits(head, f: torch.Tensor, base: torch.Tensor | None) -> torch.Tensor:
    return head(f, base) if isinstance(head, RollupHead) else head(f)


def _bases(head, feats: torch.Tensor) -> torch.Tensor | None:
    if not isinstance(head, RollupHead):
        return None
    with torch.no_grad():
        return torch.stack([head.base(feats[:, v]) for v in range(feats.shape[1])], 1)


def predict_features(head, feats: np.ndarray) -> np.ndarray:
    """(n, K) probabilities: the mean over the views of the softmax, as Classifier with flip."""
    head.eval()
    f = torch.from_numpy(np.asarray(feats, dtype=np.float32))
    with torch.no_grad():
        p = torch.stack([torch.softmax(_logits(head, f[:, v], None), 1) for v in range(f.shape[1])]).mean(0)
    return p.numpy()


def scores(probs: np.ndarray, y: np.ndarray, n_classes: int) -> dict:
    """Balanced accuracy (mean recall over the classes present), accuracy, log-loss, recalls."""
    y = np.asarray(y)
    pred = probs.argmax(1)
    recalls = {int(c): float((pred[y == c] == c).mean()) for c in np.unique(y)}
    p_true = np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0)
    return {"bal_acc": float(np.mean(list(recalls.values()))), "acc": float((pred == y).mean()),
            "loss": float(-np.log(p_true).mean()), "recall": recalls,
            "confusion": np.bincount(y * n_classes + pred, minlength=n_classes**2)
            .reshape(n_classes, n_classes).tolist()}


def fit_head(
    head: torch.nn.Module,
    train_feats: np.ndarray,
    y_train: list[int],
    val_feats: np.ndarray | None = None,
    y_val: list[int] | None = None,
    *,
    epochs: int = HEAD_EPOCHS,
    lr: float = HEAD_LR,
    weight_decay: float = HEAD_WEIGHT_DECAY,
    batch_size: int = HEAD_BATCH,
    balance_ratio: float = 5.0,
    seed: int = 0,
    sample: Callable | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> dict:
    """Fit `head` in place on (n, 2, D) features; returns {"head", "history", "best", "best_epoch", "seconds"}.
    Without validation every epoch runs and the last one is kept."""
    t0 = time.perf_counter()
    n_classes = int(_logits(head.eval(), torch.zeros(1, train_feats.shape[2]), None).shape[1])
    f = torch.from_numpy(np.ascontiguousarray(train_feats, dtype=np.float32))
    y = torch.as_tensor(y_train, dtype=torch.long)
    base = _bases(head, f)
    names = [str(v) for v in y_train]
    sample = sample if sample is not None else default_sampler()
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = [math.ceil(len(epoch_indices(names, balance_ratio, seed, e, sample)) / batch_size)
                       for e in range(epochs)]
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(sum(steps_per_epoch), 1))
    history, best, best_state, best_epoch = [], None, None, None
    for epoch in range(epochs):
        torch.manual_seed(epoch_seed(seed, epoch))  # dropout
        rng = np.random.default_rng([seed, epoch, 1])
        idx = torch.as_tensor(epoch_indices(names, balance_ratio, seed, epoch, sample), dtype=torch.long)
        views = torch.as_tensor(rng.integers(0, f.shape[1], len(idx)), dtype=torch.long)
        head.train()
        loss_sum = 0.0
        for s in range(0, len(idx), batch_size):
            i, v = idx[s:s + batch_size], views[s:s + batch_size]
            logits = _logits(head, f[i, v], None if base is None else base[i, v])
            loss = F.cross_entropy(logits, y[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(i)
        row = {"epoch": epoch + 1, "phase": "head (cached features)",
               "train_loss": round(loss_sum / max(len(idx), 1), 5)}
        if val_feats is not None and len(val_feats):
            ev = scores(predict_features(head, val_feats), np.asarray(y_val), n_classes)
            row.update(val_loss=round(ev["loss"], 5), val_acc=round(ev["acc"], 4), val_bal_acc=round(ev["bal_acc"], 4))
            improved = best is None or ev["bal_acc"] > best["bal_acc"] or (
                ev["bal_acc"] == best["bal_acc"] and ev["loss"] < best["loss"])
            if improved:
                best, best_epoch = ev, epoch + 1
                best_state = {k: v.clone() for k, v in head.state_dict().items()}
            row["best"] = bool(improved)
        history.append(row)
    if best_state is not None:
        head.load_state_dict(best_state)
    else:
        best_epoch = epochs
    head.eval()
    dt = time.perf_counter() - t0
    log(f"head on cached features: {epochs} epochs, {len(y_train)} crops, {dt:.1f} s"
        + (f"; best balanced validation accuracy {best['bal_acc']:.3f} at epoch {best_epoch}" if best else ""))
    return {"head": head, "history": history, "best": best, "best_epoch": best_epoch, "seconds": dt}
