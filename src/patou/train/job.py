"""`patou train` and `patou export --int8`: the steps of this package put end to end.

train:  DATA -> labelled images -> events -> split (whole events or sites) -> detector crops
        (cached) -> fit -> MODEL_DIR/model.onnx + model.json, history.csv, metrics.json, split.csv
export: MODEL_DIR + calibration images -> int8 model, compared with fp32 on the validation split
        that `train` held out (never seen by calibration), figures printed and kept in the card.

`split.csv` records which image went where, so `export` (and a later `evaluate`) can measure on
images the model never trained on without the user keeping track.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
from patou.media import scan
from patou.models.card import ModelCard
from patou.options import DETECTION_THRESHOLD, TrainOptions
from patou.atomic import atomic_output
from patou.record import EMPTY
from patou.train.crops import CropCache, read_crop, view_fraction
from patou.train.labels import collect, parse_merge
from patou.train.records import Crop, LabelledImage
from patou.train.sampler import fixed_balanced
from patou.train.splits import assign_events, crops_by_side, split

OPTIONS = TrainOptions()  # the defaults of `patou train`'s options (detection threshold: the run's)

SPLIT = "split.csv"
CROP_MARGIN = 0.1  # the bundled classifier's margin, recorded in the card for `patou run`
VERIFY_CROPS = 16


def default_cache_dir() -> Path:
    """Shared by every training run of the user: a second run on the same photos detects nothing."""
    base = os.environ.get("PATOU_CACHE") or os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / ("" if os.environ.get("PATOU_CACHE") else "patou") / "crops"


def _classes(text: str | list[str] | None) -> list[str] | None:
    if text is None or isinstance(text, list):
        return text
    return [c.strip() for c in text.split(",") if c.strip()]


def write_split(path: Path, train: list[LabelledImage], val: list[LabelledImage]) -> None:
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "site", "event_id", "timestamp", "side"])
        for side, items in (("train", train), ("val", val)):
            for i in items:
                w.writerow([str(i.path), i.label, i.site, i.event_id,
                            i.timestamp.isoformat() if i.timestamp else "", side])


def read_split(model_dir: Path, side: str | None = None) -> list[LabelledImage]:
    """The images `patou train` put on `side` ("train", "val"; None: both), from MODEL_DIR/split.csv."""
    path = Path(model_dir) / SPLIT
    if not path.is_file():
        raise ValueError(f"{model_dir}: no {SPLIT} (not a model made by `patou train`)")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [LabelledImage(path=Path(r["path"]), root=Path(r["path"]).parent, label=r["label"], site=r["site"],
                          event_id=r["event_id"]) for r in rows if side is None or r["side"] == side]


def _arrays(crops: list[Crop], view: float = 1.0) -> list[np.ndarray]:
    return [read_crop(c.path, view) for c in crops]


MODES = ("auto", "head", "fine-tune")
HEAD_FITS = ("convex", "sgd")


def _better(a: dict | None, b: dict | None) -> bool:
    """a beats b on validation: higher balanced accuracy, then lower log-loss."""
    if b is None:
        return a is not None
    return a is not None and (a["val_bal_acc"] > b["val_bal_acc"] or (
        a["val_bal_acc"] == b["val_bal_acc"] and a["val_loss"] < b["val_loss"]))


def _head_only(train_crops, val_crops, labels, out: Path, *, backbone: str, backbone_card, init: str, view: float,
               image_size: int, seed: int, balance_ratio: float, merge_map: dict, cache_root: Path, threads: int,
               head_fit: str, split_by: str, log) -> dict:
    """A head on cached features of the frozen backbone (features.py): seconds. A roll-up head's
    correction is fitted convexly, its penalty chosen by CV grouped like the split (convex.py);
    other heads, or `head_fit="sgd"`, by AdamW epochs (headfit.py)."""
    import torch

    from patou.train.backbones import DROPOUT, build
    from patou.train.features import FeatureCache, OnnxFeatures, TorchFeatures
    from patou.train.headfit import fit_head
    from patou.train.loop import write_history
    from patou.train.rollup import make_head

    torch.set_num_threads(threads)
    index = {lab: i for i, lab in enumerate(labels)}
    y_train, y_val = [index[c.label] for c in train_crops], [index[c.label] for c in val_crops]
    if backbone_card is not None:
        extractor = OnnxFeatures(backbone_card, view, threads)
        head = torch.nn.Sequential(torch.nn.Dropout(DROPOUT), torch.nn.Linear(extractor.dim, len(labels)))
        gen = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            bound = 1.0 / extractor.dim**0.5
            head[1].weight.uniform_(-bound, bound, generator=gen)
            head[1].bias.zero_()
        model, spec = None, None
    else:
        model, spec = build(backbone, len(labels), image_size, seed=seed)
        head = make_head(init, list(labels), spec.n_features, DROPOUT, seed, merge_map) or model.head
        model.head = head
        extractor = TorchFeatures(model, spec, view)
    cache = FeatureCache(cache_root, extractor)
    t0 = time.perf_counter()
    tf, vf = cache.features(train_crops), cache.features(val_crops)
    log(f"features: {len(train_crops) + len(val_crops)} crops x 2 views in {time.perf_counter() - t0:.1f} s "
        f"({cache.counts['cached']} of the last {len(val_crops)} cached)")
    note = {"method": "sgd"}
    if head_fit == "convex" and init == "rollup" and backbone_card is None:
        from patou.train.convex import fit_rollup_convex
        from patou.train.headfit import predict_features, scores

        fit = fit_rollup_convex(head, tf, y_train, [c.event_id if split_by == "event" else c.site for c in train_crops],
                                seed=seed, log=log)
        b = scores(predict_features(head, vf), np.asarray(y_val), len(labels))
        note = fit["choice"]
        res = {"best": b, "best_epoch": 1, "seconds": fit["seconds"],
               "history": [{"epoch": 1, "phase": f"convex correction: {note['correction']}, penalty {note['penalty']}",
                            "val_loss": round(b["loss"], 5), "val_acc": round(b["acc"], 4),
                            "val_bal_acc": round(b["bal_acc"], 4), "best": True}]}
    else:
        res = fit_head(head, tf, y_train, vf, y_val, balance_ratio=balance_ratio, seed=seed, log=log)
    write_history(res["history"], out / "history_head.csv")
    b = res["best"]
    best = {"val_loss": b["loss"], "val_acc": b["acc"], "val_bal_acc": b["bal_acc"],
            "val_recall": {labels[c]: r for c, r in b["recall"].items()}, "val_confusion": b["confusion"]}
    if model is not None:
        model.eval()
    return {"finished": True, "model": model, "head": head, "spec": spec, "best": best, "best_epoch": res["best_epoch"],
            "history": res["history"], "seconds": res["seconds"], "head_fit": note}


def train(
    data: str | Path,
    out: str | Path,
    *,
    labels_csv: str | Path | None = OPTIONS.labels_csv,
    backbone: str = OPTIONS.backbone,
    classes: str | list[str] | None = OPTIONS.classes,
    merge: str | Path | None = OPTIONS.merge,
    epochs: int = OPTIONS.epochs,
    head_epochs: int = OPTIONS.head_epochs,
    val_fraction: float = OPTIONS.val_fraction,
    split_by: str = OPTIONS.split_by,
    balance_ratio: float = OPTIONS.balance_ratio,
    image_size: int = OPTIONS.image_size,
    batch_size: int = OPTIONS.batch_size,
    lr: float = OPTIONS.lr,
    patience: int = OPTIONS.patience,
    seed: int = OPTIONS.seed,
    resume: bool = OPTIONS.resume,
    no_crop: bool = OPTIONS.no_crop,
    event_gap: float = OPTIONS.event_gap,
    detection_threshold: float = OPTIONS.detection_threshold,
    cache_dir: str | Path | None = OPTIONS.cache_dir,
    threads: int | None = OPTIONS.threads,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int], None] | None = None,
    max_epochs_this_run: int | None = None,
    init: str | None = OPTIONS.init,
    mode: str = OPTIONS.mode,
    head_fit: str = OPTIONS.head_fit,
) -> dict:
    """Train a crop classifier on DATA (leaf folder = label, or `labels_csv` path,label) into
    `out`, loadable by `patou run --model out`. Returns fit's summary plus `card` and `problems`.

    `init` rollup|rows|random (None: rollup where the labels meet the bundled taxonomy, see
    rollup.py). `mode`: "head" fits a head on cached backbone features (seconds), "fine-tune"
    the whole network (loop.py), "auto" both and keeps the better on validation. `backbone`: a
    bundled one (backbones.NAMES) or an installed model (name or path, features.py): head only.
    `head_fit` convex|sgd: how a roll-up head is fitted on cached features (convex.py, headfit.py)."""
    from patou.train.backbones import NAMES
    from patou.train.export import export_model
    from patou.train.features import find_backbone_card
    from patou.train.loop import fit
    from patou.train.rollup import bundled_card, card_note, resolve_init

    out = Path(out)
    if mode not in MODES:
        raise ValueError(f"--mode {mode!r}: choose one of {', '.join(MODES)}")
    if head_fit not in HEAD_FITS:
        raise ValueError(f"--head-fit {head_fit!r}: choose one of {', '.join(HEAD_FITS)}")
    backbone_card = None if backbone in NAMES else find_backbone_card(backbone)
    if backbone not in NAMES and backbone_card is None:
        raise ValueError(f"--backbone {backbone!r}: neither a bundled backbone ({', '.join(NAMES)}) nor an installed "
                         "model (a folder with model.onnx + card under $PATOU_MODELS or the user cache, or a path)")
    if backbone_card is not None:
        if mode == "fine-tune":
            raise ValueError(f"--backbone {backbone}: an installed ONNX model is frozen: use --mode head or auto")
        mode = "head"
    merge_map = parse_merge(merge)
    images, problems = collect(Path(data), labels_csv and Path(labels_csv), merge_map, _classes(classes))
    for p in problems:
        log(f"warning: {p}")
    if not images:
        raise ValueError(f"{data}: no labelled images found (leaf folder name = label, or --labels CSV)")
    assign_events(images, event_gap)
    train_imgs, val_imgs = split(images, val_fraction, by=split_by, seed=seed)
    shared = {i.event_id if split_by == "event" else i.site for i in train_imgs} & {
        i.event_id if split_by == "event" else i.site for i in val_imgs}
    assert not shared, f"split bug: {split_by}s on both sides: {sorted(shared)[:5]}"
    out.mkdir(parents=True, exist_ok=True)
    write_split(out / SPLIT, train_imgs, val_imgs)
    log(f"{len(images)} labelled images ({dict(Counter(i.label for i in images))}); "
        f"{len(train_imgs)} train / {len(val_imgs)} validation, split by {split_by}")

    cache = CropCache(Path(cache_dir) if cache_dir else default_cache_dir(), detection_threshold=detection_threshold,
                      margin=CROP_MARGIN)
    crops, crop_problems = cache.crops_for(images, no_crop=no_crop, progress=progress)
    for p in crop_problems:
        log(f"warning: {p}")
    log(f"crops: {cache.counts}")
    train_crops, val_crops = crops_by_side(crops, train_imgs, val_imgs)
    labels = sorted({c.label for c in train_crops})
    if len(labels) < 2:
        raise ValueError(f"need crops of at least 2 classes to train, found {labels or 'none'}")
    dropped = sorted({c.label for c in val_crops} - set(labels))
    if dropped:
        log(f"warning: validation classes without any training crop, left out: {', '.join(dropped)}")
    val_crops = [c for c in val_crops if c.label in labels]
    if not val_crops:
        raise ValueError("no validation crops: add images (more events per class) or raise --val-fraction")
    # a fixed balanced validation set, with the training sampler's ratio (DeepFaune)
    val_crops = [val_crops[i] for i in fixed_balanced([c.label for c in val_crops], balance_ratio, seed)]

    init = resolve_init(init, backbone if backbone_card is None else "installed", labels, merge_map)
    # a roll-up start is the default model: it sees crops at the bundled card's margin (the centre
    # of the cached crops), so that before training it gives the default's probabilities exactly
    margin = 0.0 if no_crop else (
        float((bundled_card().extra or {}).get("crop_margin", CROP_MARGIN)) if init != "random" else CROP_MARGIN)
    view = 1.0 if no_crop else view_fraction(margin, CROP_MARGIN)
    threads = threads or os.cpu_count() or 2
    cache_root = (Path(cache_dir) if cache_dir else default_cache_dir()) / "features"
    log(f"start: {init} ({', '.join(card_note(init, labels, merge_map)['init_from_rollup']) or 'no label'} from the "
        f"roll-up); crop margin {margin:g}; mode {mode}")
    head_res = None
    if mode in ("head", "auto") and not resume:
        head_res = _head_only(train_crops, val_crops, labels, out, backbone=backbone, backbone_card=backbone_card,
                              init=init, view=view, image_size=image_size, seed=seed, balance_ratio=balance_ratio,
                              merge_map=merge_map, cache_root=cache_root, threads=threads, head_fit=head_fit,
                              split_by=split_by, log=log)
    if mode == "head":
        result = {**head_res, "config": {"backbone": backbone if backbone_card is None else backbone_card.name,
                                         "init": init, "labels": list(labels), "seed": seed,
                                         "balance_ratio": balance_ratio},
                  "data": {"n_train": len(train_crops), "n_val": len(val_crops),
                           "train_counts": dict(Counter(c.label for c in train_crops)),
                           "val_counts": dict(Counter(c.label for c in val_crops))}}
    else:
        result = fit(train_crops, val_crops, labels, out, backbone=backbone, epochs=epochs, head_epochs=head_epochs,
                     lr=lr, batch_size=batch_size, image_size=image_size, balance_ratio=balance_ratio, seed=seed,
                     resume=resume, patience=patience, log=log, max_epochs_this_run=max_epochs_this_run,
                     threads=threads, init=init, view=view, merge=merge_map)
    result["problems"] = problems + crop_problems
    if not result["finished"]:
        return result
    chosen = "head" if mode == "head" else "fine-tune"
    if mode == "auto" and head_res is not None and _better(head_res["best"], result.get("best")):
        log(f"head only (balanced validation accuracy {head_res['best']['val_bal_acc']:.3f}) beats fine-tuning "
            f"({result['best']['val_bal_acc']:.3f}): keeping the head-only model")
        result.update(model=head_res["model"], best=head_res["best"], best_epoch=head_res["best_epoch"])
        chosen = "head"
    result["mode"] = chosen
    try:  # fit's own figures (data, epochs, peak RSS), then which model was kept and why
        metrics = json.loads((out / "metrics.json").read_text()) if mode != "head" else {}
    except (OSError, ValueError):
        metrics = {}
    metrics |= {"mode": chosen, "best": result.get("best"), "labels": list(labels), "init": init,
               "head_only": head_res and head_res["best"], "fine_tuned": None if mode == "head" else result.get("best")}
    with atomic_output(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    extra = {
        "crop_margin": margin,
        **card_note(init, labels, merge_map),
        "mode": chosen,
        "head_fit": head_res["head_fit"] if head_res and chosen == "head" else None,
        "validation": {"head_only": metrics["head_only"], "fine_tuned": metrics["fine_tuned"]},
        "whole_image": no_crop,
        "training": {"data": str(Path(data).absolute()), "labels_csv": str(labels_csv) if labels_csv else None,
                     "split_by": split_by, "val_fraction": val_fraction, "event_gap": event_gap,
                     "detection_threshold": detection_threshold, "crops": cache.counts, **result["config"],
                     **result["data"]},
        "metrics": result.get("best"),
    }
    if backbone_card is not None:
        from patou.train.compose import export_composed

        result["card"] = export_composed(backbone_card, result["head"], labels, out, extra,
                                         _arrays(val_crops[:VERIFY_CROPS], view))
    else:
        result["card"] = export_model(result["model"], labels, result["spec"], out, extra,
                                      _arrays(val_crops[:VERIFY_CROPS], view))

    log(f"model written: {result['card'].path} (labels: {', '.join(labels)}; best balanced validation accuracy "
        f"{result['best']['val_bal_acc']:.3f} at epoch {result['best_epoch']})")
    return result


def export_int8(
    model: str | Path,
    calibration: str | Path,
    out: str | Path,
    *,
    target: str | None = None,
    threshold: float = 0.5,
    max_calibration: int = 300,
    cache_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> ModelCard:
    """int8 copy of MODEL_DIR in `out`, calibrated on detector crops of the images under
    `calibration` (validation images left out) and compared with fp32 on the validation split."""
    from patou.convert.quantize import MAX_CALIBRATION, card_figures, compare, quantize_classifier

    model, out = Path(model), Path(out)
    if out.resolve() == model.resolve():
        raise ValueError(f"{out}: the int8 model must go to another folder than the fp32 one")
    card = ModelCard.load(model)
    extra = card.extra or {}
    no_crop = bool(extra.get("whole_image"))
    view = 1.0 if no_crop else view_fraction(float(extra.get("crop_margin", CROP_MARGIN)), CROP_MARGIN)
    det_threshold = (extra.get("training") or {}).get("detection_threshold", DETECTION_THRESHOLD)
    cache = CropCache(Path(cache_dir) if cache_dir else default_cache_dir(), detection_threshold=det_threshold,
                      margin=CROP_MARGIN)
    held: list[LabelledImage] = []
    if (model / SPLIT).is_file():
        held = [i for i in read_split(model, "val") if i.label != EMPTY]
    held_paths = {i.path.resolve() for i in held}

    records, problems = scan([Path(calibration)])
    for p in problems:
        log(f"warning: {p}")
    calib = [LabelledImage(path=r.path, root=r.root, label="calibration") for r in records
             if r.path.resolve() not in held_paths]
    if not calib:
        raise ValueError(f"{calibration}: no calibration images (outside the validation split)")
    rng = np.random.default_rng(0)
    calib = [calib[i] for i in sorted(rng.permutation(len(calib))[: min(len(calib), max_calibration)])]
    calib_crops, _ = cache.crops_for(calib, no_crop=no_crop)
    calib_crops = calib_crops[: min(max_calibration, MAX_CALIBRATION)]
    if not calib_crops:
        raise ValueError(f"{calibration}: the detector found no animal to calibrate on")
    log(f"calibrating on {len(calib_crops)} crops from {len(calib)} images")
    int8 = quantize_classifier(model, _arrays(calib_crops, view), out)

    val_crops, _ = cache.crops_for(held, no_crop=no_crop)
    val_crops = [c for c in val_crops if c.label in card.labels]
    if not val_crops:
        log("warning: no validation crops to compare fp32 and int8 on (model not made by `patou train`?)")
        return int8
    target = target or ("bear" if "bear" in card.labels else None)
    figures = compare(model, int8, _arrays(val_crops, view), [c.label for c in val_crops], target, threshold)
    figures["compared_on"] = "the validation split of `patou train` (no calibration image among them)"
    int8 = card_figures(int8, figures)
    log(f"fp32 vs int8 on {figures['crops']} validation crops: accuracy {figures['accuracy_fp32']:.3f} -> "
        f"{figures['accuracy_int8']:.3f}" + (
            f", {target} recall@{threshold:g} {figures['target_recall_fp32']} -> {figures['target_recall_int8']}"
            if target else "") +
        f"; {figures['size_mb_fp32']} MB -> {figures['size_mb_int8']} MB; one crop {figures['latency_ms_fp32']} ms "
        f"-> {figures['latency_ms_int8']} ms ({figures['speedup']}x)")
    for name in ("history.csv", "metrics.json", SPLIT):  # provenance travels with the model
        if (model / name).is_file():
            shutil.copy2(model / name, out / name)
    return int8
