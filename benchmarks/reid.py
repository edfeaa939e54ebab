"""Re-identification on MPDD's own test split: bundled untrained features vs a `patou reid train` model,
their fusion and DBA + alpha-QE re-ranking.

    python benchmarks/reid.py [--data ../shared/data/reid/naruto716-LostPetTest] [--model MODEL_DIR | --train OUT]
                              [--epochs 10 --views 6 --cut 14 --dim 256] [--threads 2] [--fuse 0.2 --rerank 2] [--sweep]

--fuse and --rerank default to what the validation sweep (--sweep: the model's split.csv, its
validation sequences against its training photos, never MPDD's test split) chose; the same
table is printed for validation, which favours the trained model (it has seen those dogs).

Protocol (MPDD's): 104 queries against its 521-photo gallery, 96 dogs never seen in training;
`reid train` uses the 95 train+val dogs only (a tree of symlinks to their folders). Prints
hit-rate@1/3/5 and mAP for both models, the training time (wall and CPU, from this run with
--train, else from the model card), embedding ms per crop (flip included) and the time to rank
the queries against a 10,000-photo gallery (synthetic: the real gallery embeddings tiled with
small noise), with ratios measured in the same run. Figures come from a shared machine: compare
within a run, not across runs.
"""
from __future__ import annotations

import argparse
import csv
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from patou.reid.embed import Embedder
from patou.reid.ranking import rank

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "reid" / "naruto716-LostPetTest"


def train_tree(data: Path, root: Path) -> int:
    with open(data / "LABELS.csv", newline="", encoding="utf-8") as f:
        ids = sorted({r["individual_id"] for r in csv.DictReader(f) if r["mpdd_split"] in ("train", "val")})
    for i in ids:
        (root / i).symlink_to(data / i)
    return len(ids)


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT)
    ap.add_argument("--model", type=Path, help="an embedding model to evaluate (no training)")
    ap.add_argument("--train", type=Path, help="train a model into this folder first (timed)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--views", type=int, default=6)
    ap.add_argument("--cut", type=int, default=14)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gallery-size", type=int, default=10_000)
    ap.add_argument("--fuse", type=float, default=0.2, help="trained model weight in the fused rows (chosen on validation)")
    ap.add_argument("--rerank", type=int, default=2, help="DBA + alpha-QE neighbours (chosen on validation)")
    ap.add_argument("--sweep", action="store_true", help="print the validation sweep the defaults were chosen on")
    a = ap.parse_args()
    if not (a.data / "LABELS.csv").is_file():
        print(f"MPDD not found at {a.data}")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="patou-reid-bench-"))
    model = a.model
    train_wall = train_cpu = None
    if a.train:
        from patou.reid.training import train

        (tmp / "known").mkdir()
        n = train_tree(a.data, tmp / "known")
        print(f"training on {n} MPDD train+val dogs ...")
        t0, c0 = time.perf_counter(), cpu_s()
        train(tmp / "known", a.train, no_detector=True, epochs=a.epochs, views=a.views, cut=a.cut, dim=a.dim, threads=a.threads,
              log=lambda m: print("  " + m))
        train_wall, train_cpu = time.perf_counter() - t0, cpu_s() - c0
        model = a.train

    from patou.reid import metrics
    from patou.reid.evaluation import _tail, read_split_csv
    from patou.reid.gallery import embed_photos
    from patou.reid.rerank import rerank

    sides = read_split_csv(a.data / "LABELS.csv", "mpdd_split")
    photos = sorted(a.data.glob("mpdd_*/*.jpg"))
    sets = {"test": ([p for p in photos if sides.get(_tail(p)) == "query"],
                     [p for p in photos if sides.get(_tail(p)) == "gallery"])}
    split_csv = model / "split.csv" if model else None
    if split_csv and split_csv.is_file():  # the model's own validation: val sequences vs its training photos
        val = read_split_csv(split_csv, "side")
        sets["val"] = ([a.data / t for t, s in val.items() if s == "val"], [a.data / t for t, s in val.items() if s == "train"])
    timing, vecs = {}, {}
    embedders = {"bundled ImageNet logits": (None, "logits"), "bundled GeM features": (None, "gem")}
    if model is not None:
        embedders["reid train model"] = (model, "gem")
    for name, (m, pool) in embedders.items():
        emb = Embedder(m, threads=a.threads, pool=pool)
        emb.embed([emb.crop_photo(sets["test"][0][0]).crop])  # warm-up
        t0, c0 = time.perf_counter(), cpu_s()
        for split, (qp, gp) in sets.items():
            q = embed_photos(qp, emb, no_detector=True, use_cache=False)
            g = embed_photos(gp, emb, no_detector=True, use_cache=False)
            vecs[name, split] = (q.vectors, [p.parent.name for p in q.paths], g.vectors, [p.parent.name for p in g.paths])
            if split == "test":
                n = len(q.paths) + len(g.paths)
                timing[name] = {"ms_per_crop": 1000 * (time.perf_counter() - t0) / n,
                                "cpu_ms_per_crop": 1000 * (cpu_s() - c0) / n, "dim": q.vectors.shape[1]}

    def fused(split, w):
        (qa, qids, ga, gids), (qb, _, gb, _) = vecs["reid train model", split], vecs["bundled GeM features", split]
        f = lambda x, y: np.hstack([np.sqrt(w) * x, np.sqrt(1 - w) * y])  # = FusedEmbedder (tests/reid/test_reid_rerank.py)
        return f(qa, qb), qids, f(ga, gb), gids

    def score(v, k=0):
        q, qids, g, gids = v
        q, g = rerank(q, g, k)
        return metrics.scores(q, qids, g, gids)

    configs = [("bundled ImageNet logits", "bundled ImageNet logits", 0), ("bundled GeM features", "bundled GeM features", 0),
               (f"bundled GeM + rerank {a.rerank}", "bundled GeM features", a.rerank)]
    if model is not None:
        configs += [("reid train model", "reid train model", 0), (f"trained + rerank {a.rerank}", "reid train model", a.rerank),
                    (f"fused {a.fuse:g}", a.fuse, 0), (f"fused {a.fuse:g} + rerank {a.rerank}", a.fuse, a.rerank)]
    if "val" in sets and a.sweep:  # how --fuse and --rerank were chosen: validation only, never the test split
        print(f"\nvalidation sweep ({split_csv}: val sequences vs training photos of the 95 train+val dogs)")
        for w in (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0):
            for k in (0, 1, 2, 3):
                r = score(fused("val", w), k)
                print(f"  fuse {w:.1f} rerank {k}: hit@1 {r['individual_hit@1']:.3f} hit@5 {r['individual_hit@5']:.3f} "
                      f"img mAP {r['image_mAP']:.3f}")
    rows = {}
    for split in sets:
        for label, src, k in configs:
            v = fused(split, src) if isinstance(src, float) else vecs[src, split]
            rows[label, split] = score(v, k)
    for split in sets:
        print(f"\n{'MPDD test split (104 queries vs 521 gallery photos, 96 unseen dogs)' if split == 'test' else 'validation (seen dogs, unseen sequences: biased towards the trained model)'}, whole crops (--no-detector)")
        print(f"{'model':30s} {'hit@1':>6s} {'hit@3':>6s} {'hit@5':>6s} {'mAP':>6s} {'img mAP':>7s}")
        for label, _, _ in configs:
            r = rows[label, split]
            print(f"{label:30s} {r['individual_hit@1']:6.3f} {r['individual_hit@3']:6.3f} {r['individual_hit@5']:6.3f} "
                  f"{r['individual_mAP']:6.3f} {r['image_mAP']:7.3f}")
    b, t = rows["bundled ImageNet logits", "test"], rows[configs[-1][0], "test"]
    print(f"{configs[-1][0]} / bundled logits: hit@1 x{t['individual_hit@1'] / b['individual_hit@1']:.3f}, "
          f"hit@5 x{t['individual_hit@5'] / b['individual_hit@5']:.3f}; "
          f"errors@1 {1 - b['individual_hit@1']:.3f} -> {1 - t['individual_hit@1']:.3f}")
    if train_wall is not None:
        print(f"train time: {train_wall / 60:.1f} min wall, {train_cpu / 60:.1f} min CPU "
              f"(CPU/wall {train_cpu / train_wall:.2f}: on 2 cores, below 2 means other work shared them)")
    elif model is not None:
        from patou.models.card import ModelCard

        print(f"train time (from the card): {ModelCard.load(model).extra.get('training', {}).get('minutes')} min wall")
    for name, t in timing.items():
        print(f"embedding {name}: {t['ms_per_crop']:.1f} ms/crop wall, {t['cpu_ms_per_crop']:.1f} ms CPU "
              f"(decode + crop + network with flip, {a.threads} threads), dim {t['dim']}")
    if len(timing) == 3:
        b, t = timing["bundled GeM features"], timing["reid train model"]
        print(f"embedding time ratio trained / bundled: {t['cpu_ms_per_crop'] / b['cpu_ms_per_crop']:.2f} CPU, "
              f"{t['ms_per_crop'] / b['ms_per_crop']:.2f} wall (wall/CPU {b['ms_per_crop'] / b['cpu_ms_per_crop']:.1f} and "
              f"{t['ms_per_crop'] / t['cpu_ms_per_crop']:.1f}: above 1 = waiting for a shared CPU); fused = both, "
              f"{(t['cpu_ms_per_crop'] + b['cpu_ms_per_crop']) / b['cpu_ms_per_crop']:.2f} x bundled CPU")

    # search: 104 queries against the real gallery and a 10,000-photo synthetic one
    qv, _, gv, gids = fused("test", a.fuse) if model is not None else vecs["bundled GeM features", "test"]
    rng = np.random.default_rng(0)
    reps = -(-a.gallery_size // len(gids))
    big = np.concatenate([gv] + [gv + 0.05 * rng.normal(size=gv.shape).astype(np.float32)
                                        for _ in range(reps - 1)])[: a.gallery_size]
    big /= np.linalg.norm(big, axis=1, keepdims=True)
    big_ids = [f"{i}#{k}" for k in range(reps) for i in gids][: a.gallery_size]  # 96 x reps individuals
    t0 = time.perf_counter()
    rank(qv, gv, gids, 5)
    small = time.perf_counter() - t0
    t0 = time.perf_counter()
    rank(qv, big, big_ids, 5)
    large = time.perf_counter() - t0
    t0 = time.perf_counter()
    rank(*rerank(qv, big, a.rerank), big_ids, 5)
    reranked = time.perf_counter() - t0
    print(f"search {len(qv)} queries: {len(gids)}-photo gallery {1000 * small:.0f} ms "
          f"({1000 * small / len(qv):.2f} ms/query); {len(big)}-photo synthetic gallery "
          f"({len(set(big_ids))} individuals) {1000 * large:.0f} ms ({1000 * large / len(qv):.2f} ms/query), "
          f"ratio {large / small:.1f} for {len(big) / len(gids):.1f}x the photos; with --rerank {a.rerank} "
          f"(DBA over the {len(big)} photos + QE) {1000 * reranked:.0f} ms, ratio {reranked / large:.2f} to plain, "
          f"dim {big.shape[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
