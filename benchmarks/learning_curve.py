"""Learning curve of few-shot training: does starting from the roll-up beat the untrained default?

    python benchmarks/learning_curve.py [--sizes 2,5,10,20,all] [--draws 3] [--fine-tune-sizes 5,20]
                                        [--fine-tune-folds 3] [--plot docs/learning_curve.png]
                                        [--methods random,rows,rollup,convex] [--cv-groups event|site]

Photos: ../shared/data/camtrap-real (the 100x75 camtrapR thumbnails left out) + ../shared/data/camtrap-train,
detector crops from the crop cache (~/.cache/patou/crops). Cross-validation by source: one fold per
source folder (a camera or a collection; microsoft's Snapshot Serengeti frames join the Serengeti fold),
so no camera is on both sides; every crop is predicted once, by a model that never saw its source.
From the training folds, n images per class are drawn (`--draws` seeds; "all" = every image); the
figures are pooled over folds, averaged over draws.

Tasks: (a) bear vs other (bears: the 4 photos of camtrap-real, so at most 3 in any training fold),
(b) every class with >= 10 images (others left out). Methods, each timed (fit only; features and
crops are computed once and cached):
  default    the untrained bundled model (ONNX, flip-averaged, its own 0.0 margin), its labels
             summed into the task's (`other` = everything the task does not name)
  random     head-only, a fresh Linear head on cached EfficientNet-Lite0 features (margin 0.1)
  rows       head-only, Linear rows initialised from the rolled-up ImageNet rows (margin 0.0)
  rollup     head-only, roll-up log-probabilities + a zero-initialised correction (margin 0.0),
             fitted by AdamW epochs (headfit.py, `patou train --head-fit sgd`)
  convex     the same head, the correction fitted convexly (convex.py: default, bias-only or linear,
             penalty chosen by grouped CV on the fold's training crops alone; groups = sites, as
             `patou train --split-by site` does, since this benchmark tests new sites; `--cv-groups
             event` as with the default `--split-by event`): what `patou train --mode head` does
  ft-rollup  the whole network fine-tuned from the roll-up start (loop.fit: 1 head + 3 fine-tune
             epochs, no early stopping: no validation set is taken from so few photos) - slow,
             so only at --fine-tune-sizes, on the first --fine-tune-folds folds of one draw
             (its row is compared with the other methods on those same folds)
Printed: balanced accuracy, macro F1, log-loss, bear recall at 0.5 (task a), fit seconds, and the
gain over the default in the same run. Timings are from one run on a shared machine.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
NORM = {  # camtrap-real's label_norm -> patou's coarse labels (None: left out)
    "puma": "felid", "ocelot": "felid", "lynx_bobcat": "felid", "coyote": "wolf", "skunk": "mustelid",
    "bird (heron)": "bird", "opossum": "other", "elephant": "other", "empty": None, "": None,
    "human;vehicle": None, "unidentified": None,
}
HEADS = ("random", "rows", "rollup", "convex")
THRESHOLD = 0.5  # patou run's default --threshold
MIN_IMAGES = 10


def load_images():
    from patou.train.records import LabelledImage

    out = []
    for name in ("camtrap-real", "camtrap-train"):
        root = DATA / name
        with open(root / "LABELS.csv", newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                if r["path"].startswith("camtrapR-"):
                    continue  # 100x75 thumbnails: not what a camera gives
                lab = NORM.get(r["label_norm"], r["label_norm"])
                if not lab or lab == "empty":
                    continue
                folder = r["path"].split("/")[0]
                site = r.get("site") or ""
                group = "zooniverse-Serengeti" if site.startswith("SER") or "Serengeti" in r.get("source", "") \
                    and folder == "microsoft-CameraTraps" else folder
                out.append(LabelledImage(path=root / r["path"], root=root, label=lab, site=group))
    return out


def metrics(p: np.ndarray, y: np.ndarray, labels: list[str]) -> dict:
    from sklearn.metrics import balanced_accuracy_score, f1_score, log_loss

    p = p / p.sum(1, keepdims=True)  # float32 rounding: sklearn wants rows summing to 1 in float64
    pred = p.argmax(1)
    present = sorted(set(y.tolist()))
    m = {"bal_acc": balanced_accuracy_score(y, pred), "macro_f1": f1_score(y, pred, labels=present, average="macro",
                                                                           zero_division=0),
         "log_loss": log_loss(y, np.clip(p, 1e-7, 1), labels=list(range(len(labels))))}
    if "bear" in labels:
        b = labels.index("bear")
        m["bear_recall"] = float((p[y == b, b] >= THRESHOLD).mean())
        m["bear_ranked_top"] = int(p[y == b, b].min() > p[y != b, b].max())  # every bear above every non-bear
    return m


def default_probs(arrays, labels):
    """The untrained bundled model on the crops, its labels summed into `labels`."""
    from patou.models.classifier import Classifier

    clf = Classifier()
    p = np.concatenate([clf.predict(arrays[i:i + 64]) for i in range(0, len(arrays), 64)])
    m = np.zeros((len(clf.labels), len(labels)))
    for j, lab in enumerate(clf.labels):
        k = labels.index(lab) if lab in labels else labels.index("other") if "other" in labels else None
        if k is not None:
            m[j, k] = 1
    q = p @ m
    return q / np.maximum(q.sum(1, keepdims=True), 1e-12)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2,5,10,20,all")
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--fine-tune-sizes", default="5,20")
    ap.add_argument("--fine-tune-folds", type=int, default=3)
    ap.add_argument("--tasks", default="a,b")
    ap.add_argument("--plot", default=str(Path(__file__).resolve().parents[1] / "docs" / "learning_curve.png"),
                    help="PNG to write ('' for none)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--cv-groups", choices=("event", "site"), default="site",
                    help="inner CV groups of the convex fit (site: as `patou train --split-by site`)")
    ap.add_argument("--criterion", choices=("bal_acc", "bal_log_loss"), default="bal_acc")
    ap.add_argument("--methods", default=",".join(HEADS), help="head-only methods to fit (default always runs)")
    args = ap.parse_args()
    if not (DATA / "camtrap-real" / "LABELS.csv").is_file() or not (DATA / "camtrap-train" / "LABELS.csv").is_file():
        print(f"skip: labelled photos not found under {DATA}", file=sys.stderr)
        return 0
    import torch

    from patou.train.backbones import DROPOUT, build
    from patou.train.crops import CropCache, read_crop, view_fraction
    from patou.train.features import FeatureCache, TorchFeatures
    from patou.train.convex import fit_rollup_convex
    from patou.train.headfit import fit_head, predict_features
    from patou.train.job import CROP_MARGIN, DETECTION_THRESHOLD, default_cache_dir
    from patou.train.loop import fit
    from patou.train.rollup import make_head
    from patou.train.splits import assign_events

    torch.set_num_threads(args.threads)
    methods = [m for m in args.methods.split(",") if m]
    group_by = "event_id" if args.cv_groups == "event" else "site"
    sizes = [s if s == "all" else int(s) for s in args.sizes.split(",")]
    ft_sizes = [s if s == "all" else int(s) for s in args.fine_tune_sizes.split(",") if s]
    images = load_images()
    assign_events(images)  # inner CV groups, as `patou train` forms them
    cache = CropCache(default_cache_dir(), detection_threshold=DETECTION_THRESHOLD, margin=CROP_MARGIN)
    t = time.perf_counter()
    crops, _ = cache.crops_for(images)
    print(f"{len(images)} photos -> {len(crops)} crops ({cache.counts['no_box']} photos without a box >= "
          f"{DETECTION_THRESHOLD}) in {time.perf_counter() - t:.1f} s; groups: "
          f"{dict(Counter(c.site for c in crops))}")
    v0 = view_fraction(0.0, CROP_MARGIN)
    model, spec = build("efficientnet-lite0", 2, 224)
    feats, t_feat = {}, {}
    for name, view in (("m0", v0), ("m1", 1.0)):
        t = time.perf_counter()
        fc = FeatureCache(default_cache_dir() / "features", TorchFeatures(model, spec, view))
        feats[name] = fc.features(crops)
        t_feat[name] = time.perf_counter() - t
        print(f"features at view {view:.3f}: {len(crops)} crops x 2 views in {t_feat[name]:.1f} s "
              f"({fc.counts['cached']} cached)")
    t = time.perf_counter()
    arrays0 = [read_crop(c.path, v0) for c in crops]
    img_of = np.array([str(c.source) for c in crops])
    groups = sorted({c.site for c in crops})
    rows, curves, choices = [], {}, defaultdict(list)
    for task in args.tasks.split(","):
        if task == "a":
            lab_of = ["bear" if c.label == "bear" else "other" for c in crops]
        else:
            n_img = Counter(i.label for i in images)
            keep = {lab for lab, n in n_img.items() if n >= MIN_IMAGES}
            lab_of = [c.label if c.label in keep else None for c in crops]
        idx_all = np.array([i for i, lab in enumerate(lab_of) if lab is not None])
        labels = sorted({lab_of[i] for i in idx_all})
        y = np.array([labels.index(lab_of[i]) if lab_of[i] is not None else -1 for i in range(len(crops))])
        t = time.perf_counter()
        p_def_all = default_probs([arrays0[i] for i in idx_all], labels)
        t_def = time.perf_counter() - t
        p_def = np.zeros((len(crops), len(labels)))
        p_def[idx_all] = p_def_all
        print(f"\n== task ({task}): {len(labels)} classes {labels}; {len(idx_all)} crops; default on all crops "
              f"{t_def:.1f} s")
        folds = [g for g in groups if any(crops[i].site == g for i in idx_all)]
        for size in sizes:
            per = defaultdict(list)
            for draw in range(args.draws if size != "all" else 1):
                preds = {m: np.zeros((len(crops), len(labels))) for m in methods}
                secs = Counter()
                ft = size in ft_sizes and draw == 0
                ft_pred, ft_idx = np.zeros((len(crops), len(labels))), []
                for fi, g in enumerate(folds):
                    test = idx_all[[crops[i].site == g for i in idx_all]]
                    train_all = idx_all[[crops[i].site != g for i in idx_all]]
                    rng = np.random.default_rng([draw, fi, 7])
                    chosen = []
                    for k in range(len(labels)):
                        imgs = sorted({img_of[i] for i in train_all if y[i] == k})
                        if size != "all" and len(imgs) > size:
                            imgs = list(rng.choice(imgs, size, replace=False))
                        chosen += imgs
                    chosen = set(chosen)
                    tr = np.array([i for i in train_all if img_of[i] in chosen])
                    if len(set(y[tr].tolist())) < 2:
                        continue
                    for m in methods:
                        f = feats["m1" if m == "random" else "m0"]
                        head = make_head("rollup" if m == "convex" else m, labels, spec.n_features, DROPOUT, seed=draw)
                        if head is None:
                            head = build_head(spec.n_features, len(labels), draw)
                        t = time.perf_counter()
                        if m == "convex":  # what `patou train --mode head` does: CV on the training crops only
                            res = fit_rollup_convex(head, f[tr], y[tr], [getattr(crops[i], group_by) for i in tr],
                                                    seed=draw, criterion=args.criterion)
                            choices[(task, size)].append(res["choice"])
                        else:
                            fit_head(head, f[tr], y[tr].tolist(), seed=draw)
                        secs[m] += time.perf_counter() - t
                        preds[m][test] = predict_features(head, f[test])
                    if ft and fi < args.fine_tune_folds:
                        t = time.perf_counter()
                        tr_c = [replace(crops[i], label=labels[y[i]]) for i in tr]
                        res = fit(tr_c, tr_c, labels, Path(os.environ.get("TMPDIR", "/tmp")) / "patou_lc_ft",
                                  epochs=4, head_epochs=1, patience=99, seed=draw, init="rollup", view=v0,
                                  batch_size=16, log=lambda s: None, threads=args.threads)
                        secs["ft-rollup"] += time.perf_counter() - t
                        res["model"].eval()
                        with torch.no_grad():
                            from patou.train import augment
                            x = torch.from_numpy(np.stack([arrays0[i] for i in test])).permute(0, 3, 1, 2)
                            x = augment.normalise(augment.eval_transform(x, 224), spec.mean, spec.std)
                            ft_pred[test] = (torch.softmax(res["model"](x), 1) + torch.softmax(
                                res["model"](x.flip(-1)), 1)).numpy() / 2
                        ft_idx += test.tolist()
                for m, p in [("default", p_def)] + list(preds.items()):
                    per[m].append({**metrics(p[idx_all], y[idx_all], labels), "seconds": secs[m]})
                if ft_idx:
                    sub = np.array(ft_idx)
                    per["ft-rollup"].append({**metrics(ft_pred[sub], y[sub], labels), "seconds": secs["ft-rollup"]})
                    for m, p in (("default", p_def), ("rollup", preds["rollup"])):
                        per[f"{m} (ft folds)"].append({**metrics(p[sub], y[sub], labels), "seconds": secs[m]})
            for m, vals in per.items():
                avg = {k: float(np.mean([v[k] for v in vals])) for k in vals[0]}
                rows.append({"task": task, "size": size, "method": m, **avg})
                curves.setdefault((task, m), []).append((size, avg["bal_acc"]))
        print_table([r for r in rows if r["task"] == task])
        for (t_, size), ch in choices.items():
            if t_ == task:
                print(f"convex choices at {size}: {dict(Counter((c['correction'], c['penalty']) for c in ch))}")
    if args.plot:
        plot(curves, sizes, Path(args.plot))
        print(f"\nplot: {args.plot}")
    return 0


def build_head(n_features: int, k: int, seed: int):
    import torch

    from patou.train.backbones import DROPOUT

    head = torch.nn.Sequential(torch.nn.Dropout(DROPOUT), torch.nn.Linear(n_features, k))
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        head[1].weight.uniform_(-1 / n_features**0.5, 1 / n_features**0.5, generator=gen)
        head[1].bias.zero_()
    return head


def print_table(rows: list[dict]) -> None:
    base = {(r["size"], r["method"]): r for r in rows}
    print(f"{'size':>5} {'method':<20} {'bal.acc':>7} {'vs def':>7} {'macroF1':>7} {'logloss':>7} {'bearRec':>7} "
          f"{'bearTop':>7} {'fit s':>7}")
    for r in rows:
        ref = base[(r["size"], "default (ft folds)" if r["method"] in ("ft-rollup", "rollup (ft folds)") else "default")]
        print(f"{str(r['size']):>5} {r['method']:<20} {r['bal_acc']:7.3f} {100 * (r['bal_acc'] - ref['bal_acc']):+7.1f} "
              f"{r['macro_f1']:7.3f} {r['log_loss']:7.3f} {r.get('bear_recall', float('nan')):7.2f} "
              f"{r.get('bear_ranked_top', float('nan')):7.2f} {r['seconds']:7.2f}")


def plot(curves: dict, sizes: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({t for t, _ in curves})
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
    xs = {s: i for i, s in enumerate(sizes)}
    for ax, task in zip(axes[0], tasks):
        for (t, m), pts in sorted(curves.items()):
            if t != task or "(ft folds)" in m:
                continue
            ax.plot([xs[s] for s, _ in pts], [v for _, v in pts], marker="o", label=m)
        ax.set_xticks(range(len(sizes)), [str(s) for s in sizes])
        ax.set_xlabel("training images per class")
        ax.set_ylabel("balanced accuracy (leave-one-source-out)")
        ax.set_title("(a) bear vs other" if task == "a" else "(b) every class with >= 10 images")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    sys.exit(main())
