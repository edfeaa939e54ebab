"""The training loop: head first on a frozen backbone, then fine-tuning (fastai's fine_tune).

Phase 1 (`head_epochs`): backbone frozen, BatchNorm in eval, no graph through it; only the head
learns, one-cycle at `lr`. Phase 2: everything learns, one-cycle over the remaining epochs with
head lr / 2 (fastai halves it once the head is trained) and backbone lr = head lr / 10.
Each epoch draws a class-balanced sample of the training crops, validates on the fixed
validation crops and writes `checkpoint.pt` (atomically), `history.csv` and, when balanced
validation accuracy improves, `best.pt`. Early stopping (phase 2 only: the head alone says little
about fine-tuning) after `patience` epochs without improvement. The global torch RNG (dropout,
drop-connect), the sampler and the augmentation are seeded from (seed, epoch), so a resumed run
repeats exactly what the killed one would have done next.
"""
from __future__ import annotations

import csv
import json
import math
import resource
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from patou.atomic import atomic_output
from patou.convert.torch_files import load as load_weights
from patou.convert.torch_files import need
from patou.train import augment
from patou.train.backbones import build
from patou.train.crops import read_crop
from patou.train.records import Crop
from patou.train.rollup import make_head

CHECKPOINT, BEST, HISTORY, METRICS = "checkpoint.pt", "best.pt", "history.csv", "metrics.json"
BACKBONE_LR_FACTOR = 0.1
# Crops per forward/backward (gradients accumulate up to batch_size). Measured at 224 px, 2
# threads, efficientnet-lite0 fine-tuning: 32 at once peaked at 3.4 GB RSS (2.5 GB of saved
# activations, half of them in the first three blocks), 16 at 1.9-2.0 GB, same crops/s.
MICRO_BATCH = 16
WEIGHT_DECAY = 0.01
# what a resumed run must share with the killed one for "where it stopped" to mean anything
RESUME_KEYS = ("backbone", "init", "view", "labels", "image_size", "epochs", "head_epochs", "lr", "batch_size",
               "balance_ratio", "seed", "n_train", "n_val")


class CropDataset(Dataset):
    """Cached crop JPEGs -> (uint8 (3, CROP_SIZE, CROP_SIZE), class index); decoded on demand
    so RAM holds one batch, not the dataset."""

    def __init__(self, crops: list[Crop], targets: list[int], view: float = 1.0):
        self.paths = [c.path for c in crops]
        self.targets = targets
        self.view = float(view)  # < 1: the centred part, i.e. the crop at a smaller margin

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        a = read_crop(self.paths[i], self.view)
        return torch.from_numpy(a).permute(2, 0, 1), self.targets[i]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def default_sampler() -> Callable | None:
    try:
        from patou.train.sampler import balanced_indices
    except ModuleNotFoundError as e:
        if e.name != "patou.train.sampler":
            raise
        return None
    return balanced_indices


def epoch_indices(names: list[str], ratio: float, seed: int, epoch: int, sample: Callable | None) -> list[int]:
    rng = np.random.default_rng([seed, epoch])
    idx = np.arange(len(names)) if sample is None else np.asarray(sample(names, ratio, rng), dtype=np.int64)
    return [int(i) for i in rng.permutation(idx)]


def _loader(ds: Dataset, indices: list[int], batch_size: int, drop_last: bool, workers: int) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, sampler=indices, num_workers=workers, drop_last=drop_last)


def _optimiser(model, phase: int, lr: float, total_steps: int):
    if phase == 1:
        groups, max_lr = [{"params": list(model.head_parameters())}], [lr]
    else:  # one group per lr: backbone lr = head lr / 10
        head_lr = lr / 2
        groups = [{"params": list(model.backbone_parameters())}, {"params": list(model.head_parameters())}]
        max_lr = [head_lr * BACKBONE_LR_FACTOR, head_lr]
    opt = torch.optim.AdamW(groups, lr=max_lr[-1], weight_decay=WEIGHT_DECAY)
    # warm-up of ~25% (fastai), put between two steps: OneCycleLR divides by zero when
    # pct_start * total_steps == 1 (e.g. one epoch of 4 batches)
    total = max(total_steps, 3)
    pct = (max(1, round(0.25 * total)) + 0.5) / total
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=total, pct_start=pct)
    return opt, sched


def evaluate(model, crops: list[Crop], targets: list[int], spec, n_classes: int, batch_size: int = 32,
             view: float = 1.0) -> dict:
    """Loss, accuracy, balanced accuracy (mean recall over the classes present), per-class
    recall and the confusion matrix (rows: true class, columns: predicted)."""
    model.eval()
    loader = _loader(CropDataset(crops, targets, view), list(range(len(crops))), batch_size, False, 0)
    loss, preds = 0.0, []
    with torch.no_grad():
        for xb, yb in loader:
            x = augment.normalise(augment.eval_transform(xb, spec.input_size), spec.mean, spec.std)
            logits = model(x.contiguous(memory_format=torch.channels_last))
            loss += F.cross_entropy(logits, yb, reduction="sum").item()
            preds.append(logits.argmax(1).numpy())
    y, p = np.asarray(targets), np.concatenate(preds)
    recalls = {int(c): float((p[y == c] == c).mean()) for c in np.unique(y)}
    return {
        "loss": loss / len(y),
        "acc": float((p == y).mean()),
        "bal_acc": float(np.mean(list(recalls.values()))),
        "recall": recalls,
        "confusion": np.bincount(y * n_classes + p, minlength=n_classes**2).reshape(n_classes, n_classes).tolist(),
    }


def _train_epoch(model, loader, opt, sched, spec, gen: torch.Generator, micro_batch: int) -> dict:
    model.train()
    n, loss_sum, correct, t0 = 0, 0.0, 0, time.perf_counter()
    for xb, yb in loader:
        x = augment.normalise(augment.train_transform(xb, spec.input_size, gen), spec.mean, spec.std)
        x = x.contiguous(memory_format=torch.channels_last)
        opt.zero_grad(set_to_none=True)
        # gradients accumulated over near-equal chunks: RAM holds one chunk's activations
        chunks = math.ceil(len(yb) / micro_batch)
        for xs, ys in zip(x.tensor_split(chunks), yb.tensor_split(chunks)):
            logits = model(xs)
            loss = F.cross_entropy(logits, ys, reduction="sum") / len(yb)
            loss.backward()
            loss_sum += loss.item() * len(yb)
            correct += int((logits.argmax(1) == ys).sum())
        opt.step()
        if sched.last_epoch + 1 < sched.total_steps:  # a sampler returning more than planned
            sched.step()
        n += len(yb)
    dt = time.perf_counter() - t0
    return {"loss": loss_sum / max(n, 1), "acc": correct / max(n, 1), "crops": n, "seconds": dt,
            "crops_per_s": n / dt if dt > 0 else 0.0}


def save_atomic(obj, path: Path) -> None:
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def write_history(rows: list[dict], path: Path) -> None:
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as f:
        if rows:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


def fit(
    train: list[Crop],
    val: list[Crop],
    labels: list[str],
    out_dir: Path,
    *,
    backbone: str = "efficientnet-lite0",
    epochs: int = 10,
    head_epochs: int = 2,
    lr: float = 2e-3,
    batch_size: int = 32,
    image_size: int = 224,
    balance_ratio: float = 5.0,
    seed: int = 0,
    resume: bool = False,
    patience: int = 3,
    sample: Callable | None = None,
    log: Callable[[str], None] = print,
    max_epochs_this_run: int | None = None,
    num_workers: int = 0,
    threads: int = 2,
    micro_batch: int = MICRO_BATCH,
    init: str = "random",
    view: float = 1.0,
    merge: dict | None = None,
) -> dict:
    """Train a classifier over `labels` on the crops; returns a summary with the best model
    (`model`, `spec`, `best`, `history`, `data`, `finished`...). `max_epochs_this_run` stops after
    that many epochs as a kill would (the run is then `finished: False`); `resume` continues
    from out_dir/checkpoint.pt. `sample(train_labels, ratio, rng)` -> indices is the per-epoch
    balanced sampler (default: patou.train.sampler.balanced_indices, else every crop).
    `init` (rollup.INITS): where the head starts; `view` < 1 trains on the centred part of the
    cached crops (a smaller crop margin, e.g. the bundled card's for a roll-up start)."""
    torch.set_num_threads(threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not train or not val:
        raise ValueError(f"need training and validation crops (got {len(train)} and {len(val)})")
    index = {lab: i for i, lab in enumerate(labels)}
    unknown = sorted({c.label for c in train + val} - index.keys())
    if unknown:
        raise ValueError(f"crops with labels outside {labels}: {', '.join(unknown)}")
    y_train, y_val = [index[c.label] for c in train], [index[c.label] for c in val]
    names = [c.label for c in train]
    sample = sample if sample is not None else default_sampler()
    head_epochs = min(max(int(head_epochs), 0), epochs)
    config = {"backbone": backbone, "init": init, "view": float(view), "labels": list(labels),
              "image_size": int(image_size), "epochs": int(epochs),
              "head_epochs": head_epochs, "lr": float(lr), "batch_size": int(batch_size),
              "balance_ratio": float(balance_ratio), "seed": int(seed), "n_train": len(train), "n_val": len(val)}

    model, spec = build(backbone, len(labels), image_size, seed=seed)
    head = make_head(init, list(labels), spec.n_features, model.head[0].p, seed, merge)
    if head is not None:
        model.head = head
    model.to(memory_format=torch.channels_last)  # oneDNN's fast layout: 1.3-2x the crops/s here
    st = fresh = {"epoch": 0, "best": None, "best_loss": math.inf, "best_epoch": None, "bad": 0, "stopped": False,
                  "phase": None, "history": []}
    opt = sched = None
    ck_path = out_dir / CHECKPOINT
    if resume and ck_path.is_file():
        ck = load_weights(ck_path, "--resume")
        diff = [k for k in RESUME_KEYS if need(need(ck, dict, f"{ck_path}").get("config"), dict,
                                               f"{ck_path}: config").get(k) != config[k]]
        if diff:
            raise ValueError(f"{ck_path}: cannot resume, the run differs in {', '.join(diff)}")
        try:  # the file is data: any field of the wrong kind is one line, not a traceback
            model.load_state_dict(ck["model"])
            st = need(ck["state"], dict, "state")
            absent = sorted(set(fresh) - set(st))
            if absent:
                raise KeyError(", ".join(absent))
            st["epoch"], st["history"] = int(st["epoch"]), list(st["history"])
            if st["phase"] is not None and ck.get("optimiser") is not None:
                model.freeze_backbone(st["phase"] == 1)
                opt, sched = _optimiser(model, st["phase"], lr, 2)
                opt.load_state_dict(ck["optimiser"])
                sched.load_state_dict(ck["scheduler"])
            torch.set_rng_state(ck["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as e:
            raise ValueError(f"{ck_path}: not a checkpoint of this training ({type(e).__name__}: "
                             f"{(str(e).splitlines() or [''])[0][:160]}); delete it to start afresh") from None
        log(f"resuming after epoch {st['epoch']} of {epochs}")
    else:
        if resume:
            log(f"no {CHECKPOINT} in {out_dir}: starting afresh")
        (out_dir / METRICS).unlink(missing_ok=True)  # a previous run's, not this one's

    ds = CropDataset(train, y_train, view)
    ran = 0
    while st["epoch"] < epochs and not st["stopped"]:
        if max_epochs_this_run is not None and ran >= max_epochs_this_run:
            break
        epoch = st["epoch"]
        phase = 1 if epoch < head_epochs else 2
        torch.manual_seed(epoch_seed(seed, epoch))
        gen = torch.Generator().manual_seed(epoch_seed(seed, epoch) ^ 0x5A5A)
        idx = epoch_indices(names, balance_ratio, seed, epoch, sample)
        drop_last = len(idx) > batch_size  # no 1-crop batch at the end (BatchNorm in train mode)
        if phase != st["phase"]:
            model.freeze_backbone(phase == 1)
            per_epoch = len(idx) // batch_size if drop_last else 1
            n_epochs = head_epochs if phase == 1 else epochs - head_epochs
            opt, sched = _optimiser(model, phase, lr, per_epoch * n_epochs)
            st["phase"] = phase
        loader = _loader(ds, idx, batch_size, drop_last, num_workers)
        tr = _train_epoch(model, loader, opt, sched, spec, gen, max(int(micro_batch), 1))
        ev = evaluate(model, val, y_val, spec, len(labels), batch_size, view)
        improved = st["best"] is None or ev["bal_acc"] > st["best"] or (
            ev["bal_acc"] == st["best"] and ev["loss"] < st["best_loss"])
        if improved:
            st.update(best=ev["bal_acc"], best_loss=ev["loss"], best_epoch=epoch + 1, bad=0)
            save_atomic({"model": model.state_dict(), "epoch": epoch + 1, "val": ev, "config": config}, out_dir / BEST)
        elif phase == 2:
            st["bad"] += 1
        row = {"epoch": epoch + 1, "phase": "head" if phase == 1 else "fine-tune",
               "train_loss": round(tr["loss"], 5), "train_acc": round(tr["acc"], 4),
               "val_loss": round(ev["loss"], 5), "val_acc": round(ev["acc"], 4), "val_bal_acc": round(ev["bal_acc"], 4),
               "train_crops": tr["crops"], "crops_per_s": round(tr["crops_per_s"], 2),
               "seconds": round(tr["seconds"], 1), "peak_rss_mb": round(peak_rss_mb()), "best": bool(improved)}
        st["history"].append(row)
        st["epoch"] = epoch + 1
        st["stopped"] = phase == 2 and st["bad"] >= patience
        save_atomic({"config": config, "model": model.state_dict(), "optimiser": opt.state_dict(),
               "scheduler": sched.state_dict(), "state": st, "rng": torch.get_rng_state()}, ck_path)
        write_history(st["history"], out_dir / HISTORY)
        ran += 1
        log(f"epoch {epoch + 1}/{epochs} {row['phase']}: train loss {row['train_loss']:.3f} acc {row['train_acc']:.3f}"
            f" | val loss {row['val_loss']:.3f} acc {row['val_acc']:.3f} balanced {row['val_bal_acc']:.3f}"
            f"{' *' if improved else ''} | {row['crops_per_s']:.1f} crops/s, peak RSS {row['peak_rss_mb']} MB")
        if st["stopped"]:
            log(f"early stop: no better balanced accuracy for {patience} epochs (best: epoch {st['best_epoch']})")

    finished = st["epoch"] >= epochs or st["stopped"]
    out = {"finished": finished, "epochs_run": st["epoch"], "best_epoch": st["best_epoch"], "history": st["history"],
           "stopped_early": st["stopped"], "peak_rss_mb": round(peak_rss_mb()), "config": config,
           "data": {"n_train": len(train), "n_val": len(val),
                    "train_counts": {lab: names.count(lab) for lab in labels},
                    "val_counts": {lab: y_val.count(i) for i, lab in enumerate(labels)}},
           "spec": spec}
    if finished and (out_dir / BEST).is_file():
        best = load_weights(out_dir / BEST, "best epoch")
        try:
            model.load_state_dict(best["model"])
            v = best["val"]
            out["best"] = {"val_loss": v["loss"], "val_acc": v["acc"], "val_bal_acc": v["bal_acc"],
                           "val_recall": {labels[c]: r for c, r in v["recall"].items()}, "val_confusion": v["confusion"]}
        except (KeyError, TypeError, RuntimeError, AttributeError, IndexError) as e:
            raise ValueError(f"{out_dir / BEST}: not a checkpoint of this training ({type(e).__name__}: "
                             f"{(str(e).splitlines() or [''])[0][:160]}); delete it and train again") from None
        metrics = {k: out[k] for k in ("best_epoch", "epochs_run", "stopped_early", "peak_rss_mb", "best", "data")}
        metrics.update(backbone=backbone, image_size=spec.input_size, labels=list(labels))
        with atomic_output(out_dir / METRICS) as tmp:
            tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    model.freeze_backbone(False)
    model.eval()
    out["model"] = model
    return out
