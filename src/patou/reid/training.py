"""`patou reid train`: metric learning on CPU, exported as ONNX + an embedding card.

Recipe (chosen to fit a 2-core CPU in well under 30 minutes for ~1,000 photos):
- a split that keeps whole sequences on one side (patou.train.splits with events as groups);
- EfficientNet-Lite0 (ImageNet) cut after `cut` blocks: the frozen prefix runs once per augmented
  view (`views` per photo, patou.train.augment) and its feature maps are kept in RAM as float16;
  the trainable suffix (last blocks + projection + BatchNorm) learns with an ArcFace loss, one
  random cached view per photo and epoch;
- each epoch: validation hit-rates (validation sequences as queries, training photos as gallery),
  `checkpoint.pt` (atomic) for `--resume`, `history.csv`, `best.pt` on the best validation hit@1;
- export of the best epoch: model.onnx + model.json (`task: embedding`), checked against torch on
  real crops through the same Embedder `patou reid search` uses; the new-individual threshold is
  chosen on the validation queries.
"""
from __future__ import annotations

import math
import resource
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

import patou
from patou.models.card import ModelCard
from patou.atomic import atomic_output
from patou.reid import metrics
from patou.reid.data import scan_individuals
from patou.reid.embed import DETECTION_THRESHOLD, Embedder, crop_photo
from patou.reid.net import ArcFace, EmbeddingNet
from patou.reid.ranking import choose_threshold
from patou.convert.torch_files import load as load_weights
from patou.convert.torch_files import need
from patou.train import augment
from patou.train.job import write_split
from patou.train.loop import save_atomic, write_history
from patou.train.records import CROP_SIZE
from patou.train.splits import split

NAME = "model"
CHECKPOINT, BEST, HISTORY = "checkpoint.pt", "best.pt", "history.csv"
TOLERANCE = 1e-3  # on unit-vector components
PRETRAINED_LR_FACTOR = 0.25  # ImageNet blocks move slower than the new projection and ArcFace weights
EVAL_EVERY = 2  # validation embeds every training photo: not every epoch on a busy CPU
RESUME_KEYS = ("cut", "dim", "image_size", "views", "epochs", "lr", "batch_size", "seed", "n_train", "n_val",
               "individuals", "no_detector", "margin_m", "scale_s")


def _crops(images, detector, threshold, log) -> tuple[list, np.ndarray]:
    kept, arrs = [], []
    for img in images:
        c = crop_photo(img.path, CROP_SIZE, detector, threshold)
        if c.crop is None:
            log(c.problem)
            continue
        kept.append(img)
        arrs.append(c.crop)
    return kept, (np.stack(arrs) if arrs else np.zeros((0, CROP_SIZE, CROP_SIZE, 3), np.uint8))


class _PrefixRunner:
    """The frozen prefix on ONNX Runtime: several times faster than torch's CPU kernels for
    depthwise convolutions, and it is what most of the caching time is spent on."""

    def __init__(self, model, size: int, path: Path, threads: int | None):
        from patou.models.runtime import cpu_session

        with atomic_output(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model.prefix, torch.zeros(1, 3, size, size), str(tmp), dynamo=False, opset_version=17,
                              input_names=["input"], output_names=["features"],
                              dynamic_axes={"input": {0: "batch"}, "features": {0: "batch"}})
        self.session = cpu_session(path, threads)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(["features"], {"input": x.numpy()})[0])


@torch.no_grad()
def _prefix_features(prefix, x_uint8: np.ndarray, size: int, spec, gen: torch.Generator | None) -> torch.Tensor:
    """Prefix outputs (float16) of one view per crop: augmented with `gen`, clean without."""
    out = []
    for i in range(0, len(x_uint8), 32):
        x = torch.from_numpy(x_uint8[i : i + 32]).permute(0, 3, 1, 2).float()
        x = augment.train_transform(x, size, gen) if gen is not None else augment.eval_transform(x, size)
        out.append(prefix(augment.normalise(x, spec.mean, spec.std).contiguous()).half())
    return torch.cat(out)


@torch.no_grad()
def _embed_cached(model, feats: torch.Tensor, flipped: torch.Tensor | None = None) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(feats), 64):
        e = F.normalize(model.suffix(feats[i : i + 64].float()), dim=1)
        if flipped is not None:
            e = F.normalize(e + F.normalize(model.suffix(flipped[i : i + 64].float()), dim=1), dim=1)
        out.append(e)
    return torch.cat(out).numpy()


def train(
    known_dir: str | Path,
    out_dir: str | Path,
    *,
    no_detector: bool = False,
    epochs: int = 10,
    views: int = 6,
    cut: int = 14,
    dim: int = 256,
    image_size: int = 224,
    batch_size: int = 32,
    lr: float = 2e-3,
    val_fraction: float = 0.15,
    seed: int = 0,
    resume: bool = False,
    threads: int | None = None,
    detection_threshold: float = DETECTION_THRESHOLD,
    margin_m: float = 0.3,
    scale_s: float = 30.0,
    log: Callable[[str], None] = print,
) -> ModelCard:
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    if out_dir.exists() and (out_dir / f"{NAME}.json").exists() and not resume:
        raise ValueError(f"{out_dir}: already holds a model; choose another --out or pass --resume")
    if resume and not (out_dir / CHECKPOINT).is_file():
        raise ValueError(f"{out_dir}: nothing to resume (no {CHECKPOINT})")
    if threads:
        torch.set_num_threads(int(threads))
    images, problems = scan_individuals(known_dir)
    for p in problems:
        log(p)
    counts: dict[str, int] = {}
    for img in images:
        counts[img.label] = counts.get(img.label, 0) + 1
    if len(counts) < 2:
        raise ValueError(f"{known_dir}: re-identification training needs at least 2 individuals, found {len(counts)}")
    train_imgs, val_imgs = split(images, val_fraction, by="event", seed=seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_split(out_dir / "split.csv", train_imgs, val_imgs)

    detector = None
    if not no_detector:
        from patou.models.detector import Detector

        detector = Detector(threads=threads)
    log(f"cropping {len(train_imgs)} training and {len(val_imgs)} validation photos "
        f"({'whole photos' if no_detector else 'detector boxes'})")
    train_imgs, x_train = _crops(train_imgs, detector, detection_threshold, log)
    val_imgs, x_val = _crops(val_imgs, detector, detection_threshold, log)
    ids = sorted({i.label for i in train_imgs})
    index = {k: n for n, k in enumerate(ids)}
    if not any(i.label in index for i in val_imgs):  # validation can only rank animals training saw
        log(f"warning: {known_dir}: no validation photo is of an individual among the training photos (each "
            "needs photos from two sequences, one on each side): the validation figures and the new-individual "
            "threshold of this model mean nothing")
    y_train = torch.tensor([index[i.label] for i in train_imgs])
    config = {"cut": cut, "dim": dim, "image_size": image_size, "views": views, "epochs": epochs, "lr": lr,
              "batch_size": batch_size, "seed": seed, "n_train": len(train_imgs), "n_val": len(val_imgs),
              "individuals": len(ids), "no_detector": no_detector, "margin_m": margin_m, "scale_s": scale_s}

    torch.manual_seed(seed)
    model = EmbeddingNet(image_size, dim, cut)
    spec = model.spec
    head = ArcFace(dim, len(ids), scale_s, margin_m, seed)
    pretrained = [p for n, p in model.suffix.named_parameters() if not n.startswith(("proj", "bn."))]
    new_params = [p for n, p in model.suffix.named_parameters() if n.startswith(("proj", "bn."))]
    opt = torch.optim.AdamW([{"params": pretrained, "lr": lr * PRETRAINED_LR_FACTOR},
                             {"params": new_params + list(head.parameters()), "lr": lr}], weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(train_imgs) / batch_size)
    total = steps_per_epoch * epochs
    warm = steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(total - warm, 1))))
    history, start, best = [], 0, (-1.0, -1.0)
    if resume:
        ck = load_weights(out_dir / CHECKPOINT, "--resume")  # tensors and plain data only: no code runs
        changed = [k for k in RESUME_KEYS if need(need(ck, dict, str(out_dir / CHECKPOINT)).get("config"), dict,
                                                  f"{out_dir / CHECKPOINT}: config").get(k) != config.get(k)]
        if changed:
            raise ValueError(f"{out_dir}: cannot resume, settings differ from the killed run: {', '.join(changed)}")
        try:  # the file is data: a field of the wrong kind is one line, not a traceback
            model.suffix.load_state_dict(ck["suffix"])
            head.load_state_dict(ck["head"])
            opt.load_state_dict(ck["opt"])
            sched.load_state_dict(ck["sched"])
            history, start, best = list(ck["history"]), int(ck["epoch"]) + 1, tuple(float(v) for v in ck["best"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as e:
            raise ValueError(f"{out_dir / CHECKPOINT}: not a checkpoint of this training ({type(e).__name__}: "
                             f"{(str(e).splitlines() or [''])[0][:160]}); delete it to start afresh") from None
        log(f"resuming after epoch {start}")

    t0 = time.perf_counter()
    model.eval()
    prefix = _PrefixRunner(model, image_size, out_dir / ".prefix.onnx", threads)
    feats = [_prefix_features(prefix, x_train, image_size, spec, torch.Generator().manual_seed(seed * 1000 + v))
             for v in range(views)]
    clean_train = _prefix_features(prefix, x_train, image_size, spec, None)
    clean_val = _prefix_features(prefix, x_val, image_size, spec, None)
    flip_train = _prefix_features(prefix, x_train[:, :, ::-1].copy(), image_size, spec, None)
    flip_val = _prefix_features(prefix, x_val[:, :, ::-1].copy(), image_size, spec, None)
    del prefix
    (out_dir / ".prefix.onnx").unlink(missing_ok=True)
    feats = torch.stack(feats)  # (views, n, c, h, w)
    log(f"cached {views} augmented views of {len(train_imgs)} crops in {time.perf_counter() - t0:.0f} s "
        f"({feats.numel() * 2 / 1e6:.0f} MB)")

    val_ids = [i.label for i in val_imgs]
    train_ids = [i.label for i in train_imgs]
    for epoch in range(start, epochs):
        te = time.perf_counter()
        g = torch.Generator().manual_seed(seed * 7919 + epoch)
        torch.manual_seed(seed * 7919 + epoch)
        order = torch.randperm(len(train_imgs), generator=g)
        view = torch.randint(views, (len(train_imgs),), generator=g)
        model.train()
        head.train()
        loss_sum, correct = 0.0, 0
        for s in range(0, len(order), batch_size):
            b = order[s : s + batch_size]
            if len(b) < 2:
                continue
            x = feats[view[b], b].float()
            emb = model.suffix(x)
            loss, cos = head(emb, y_train[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(b)
            correct += int((cos.argmax(1) == y_train[b]).sum())
        val = {}
        if len(val_ids) and ((epoch + 1) % EVAL_EVERY == 0 or epoch + 1 == epochs):
            val = metrics.scores(_embed_cached(model, clean_val), val_ids, _embed_cached(model, clean_train), train_ids)
        row = {"epoch": epoch + 1, "loss": loss_sum / len(order), "train_acc": correct / len(order),
               "val_hit@1": val.get("individual_hit@1"), "val_hit@5": val.get("individual_hit@5"),
               "val_mAP": val.get("image_mAP"), "seconds": time.perf_counter() - te}
        history.append(row)
        log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        score = (row["val_hit@1"] or 0.0, row["val_mAP"] or 0.0)
        if val and score >= best:
            best = score
            save_atomic({"suffix": model.suffix.state_dict(), "epoch": epoch, "val": val}, out_dir / BEST)
        save_atomic({"suffix": model.suffix.state_dict(), "head": head.state_dict(), "opt": opt.state_dict(),
               "sched": sched.state_dict(), "epoch": epoch, "history": history, "best": list(best),
               "config": config}, out_dir / CHECKPOINT)
        write_history(history, out_dir / HISTORY)

    if not (out_dir / BEST).is_file():  # no validation photos: the last epoch is the model
        save_atomic({"suffix": model.suffix.state_dict(), "epoch": epochs - 1, "val": {}}, out_dir / BEST)
    best_ck = load_weights(out_dir / BEST, "best epoch")
    try:
        model.suffix.load_state_dict(best_ck["suffix"])
        best_val, best_epoch = need(best_ck["val"], dict, "val"), int(best_ck["epoch"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{out_dir / BEST}: not a checkpoint of this training ({type(e).__name__}); "
                         "delete it and train again") from None
    g_emb = _embed_cached(model, clean_train, flip_train)
    q_emb = _embed_cached(model, clean_val, flip_val)
    threshold = choose_threshold(q_emb, val_ids, g_emb, train_ids) if len(val_ids) else {"threshold": None}
    train_minutes = (time.perf_counter() - t_start) / 60
    cpu_minutes = sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) / 60  # this process, since it started
    extra = {
        "embedding_size": dim,
        "backbone": spec.name,
        "frozen_blocks": cut,
        "crop_margin": 0.1,
        "new_individual_threshold": threshold.get("threshold"),
        "threshold_selection": threshold,
        "validation": {**best_val, "epoch": best_epoch + 1,
                       "protocol": "validation sequences as queries vs training photos as gallery (same individuals)"},
        "training_data": {"folder": str(Path(known_dir).resolve()), "individuals": len(ids),
                          "train_photos": len(train_imgs), "val_photos": len(val_imgs),
                          "inputs": "whole photos (--no-detector)" if no_detector else "detector crops",
                          "split": "whole sequences on one side (events: EXIF time gap, else file-name bursts)"},
        "training": {**config, "loss": f"ArcFace s={scale_s} m={margin_m}", "minutes": round(train_minutes, 2),
                     "process_cpu_minutes": round(cpu_minutes, 2),
                     "trained": datetime.now(timezone.utc).isoformat(timespec="seconds")},
    }
    card = export(model, out_dir, spec, extra, list(x_val[:16]) or list(x_train[:16]))
    log(f"exported {card.path} (validation hit@1 {best_val.get('individual_hit@1')}, "
        f"threshold {threshold.get('threshold')}, {train_minutes:.1f} min)")
    return card


def export(model: EmbeddingNet, out_dir: Path, spec, extra: dict, verify_crops: list[np.ndarray]) -> ModelCard:
    """model.onnx + model.json, kept only if ONNX Runtime agrees with torch on real crops."""
    import onnx

    model.eval()
    size = int(spec.input_size)
    onnx_path, card_path = out_dir / f"{NAME}.onnx", out_dir / f"{NAME}.json"
    card_path.unlink(missing_ok=True)
    with atomic_output(onnx_path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 3, size, size), str(tmp), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["embedding"],
                          dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}})
        onnx.checker.check_model(onnx.load(str(tmp)))
    card = ModelCard(
        name=out_dir.resolve().name or NAME, task="embedding", file=onnx_path.name, input_size=(size, size),
        labels=[], mean=tuple(map(float, spec.mean)), std=tuple(map(float, spec.std)), resize="square-pad",
        pad_value=0,
        licence=f"Weights fine-tuned from ImageNet weights under {spec.licence}, on the user's own photos "
                "(whose terms also apply).",
        source=f"patou {patou.__version__} `patou reid train` from {spec.source}",
        description=f"Individual re-identification embedding ({extra['embedding_size']}-d, unit length): "
                    f"{spec.name} ImageNet backbone, last blocks fine-tuned with ArcFace by patou reid train.",
        extra=extra,
    )
    with atomic_output(card_path) as tmp:
        card.save(tmp)
    emb = Embedder(card_path, threads=2, flip=False)
    x = emb.preprocess(verify_crops)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    got = emb.raw(verify_crops)
    diff = float(np.abs(ref - got).max())
    check = {"crops": len(verify_crops), "max_abs_diff": diff, "tolerance": TOLERANCE,
             "min_cosine": float((ref * got).sum(1).min())}
    if diff > TOLERANCE:
        card_path.unlink(missing_ok=True)
        onnx_path.unlink(missing_ok=True)
        raise RuntimeError(f"ONNX export disagrees with torch: {check}")
    card.extra["verification"] = check
    with atomic_output(card_path) as tmp:
        card.save(tmp)
    return ModelCard.load(card_path)
