"""Ranking: query embeddings against a gallery -> the k most similar known individuals.

Similarity is the cosine (dot product of unit vectors). An individual's score is its best
gallery photo's score, so an individual appears once per query, with the photo that matched.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def rank(query: np.ndarray, gallery: np.ndarray, gallery_ids: list[str], top_k: int | None = 5):
    """For each query: [(individual_id, score, gallery_index), ...] best first, at most `top_k`
    (None = all individuals)."""
    ids = np.asarray(gallery_ids)
    individuals, inverse = np.unique(ids, return_inverse=True)
    k = len(individuals) if top_k is None else min(int(top_k), len(individuals))
    out = []
    for start in range(0, len(query), 256):  # bounded memory for big galleries
        sim = query[start : start + 256] @ gallery.T  # (q, g)
        best = np.full((len(sim), len(individuals)), -np.inf, dtype=np.float32)
        arg = np.zeros((len(sim), len(individuals)), dtype=np.int64)
        order = np.argsort(-sim, axis=1, kind="stable")
        # per individual, the first gallery photo in descending order is its best one
        for qi in range(len(sim)):
            ind_sorted = inverse[order[qi]]
            _, first = np.unique(ind_sorted, return_index=True)
            gi = order[qi][first]
            best[qi] = sim[qi, gi]
            arg[qi] = gi
        top = np.argsort(-best, axis=1, kind="stable")[:, :k]
        for qi in range(len(sim)):
            out.append([(str(individuals[j]), float(best[qi, j]), int(arg[qi, j])) for j in top[qi]])
    return out


def choose_threshold(query: np.ndarray, query_ids: list[str], gallery: np.ndarray, gallery_ids: list[str]) -> dict:
    """The best-score threshold under which a query is called a new individual.

    Known: each validation query's best score with its individual in the gallery. Unknown: its best
    score with its own individual's photos taken out (a leave-one-individual-out stand-in for an
    animal never seen). The threshold maximises balanced accuracy between the two."""
    gids = np.asarray(gallery_ids)
    sim = query @ gallery.T
    known, unknown = [], []
    for qi, qid in enumerate(query_ids):
        mine = gids == qid
        if not mine.any() or mine.all():
            continue
        known.append(sim[qi].max())
        unknown.append(sim[qi][~mine].max())
    if not known:
        return {"threshold": None, "reason": "no validation query has its individual in the gallery"}
    known, unknown = np.asarray(known), np.asarray(unknown)
    cands = np.unique(np.concatenate([known, unknown]))
    bacc = [((known >= t).mean() + (unknown < t).mean()) / 2 for t in cands]
    i = int(np.argmax(bacc))
    return {"threshold": float(cands[i]), "balanced_accuracy": float(bacc[i]),
            "known_recall": float((known >= cands[i]).mean()), "unknown_recall": float((unknown < cands[i]).mean()),
            "queries": int(len(known))}


CANDIDATE_COLUMNS = ("query", "rank", "individual_id", "score", "gallery_file", "new_individual")


def search(photos, gallery: str | Path, out_dir: str | Path, *, model=None, top_k: int = 5,
           no_detector: bool = False, detection_threshold: float | None = None,
           new_threshold: float | None = None, cache_dir=None, use_cache: bool = True,
           threads: int | None = None, fuse: float | None = None, pool: str = "gem", rerank_k: int = 0,
           log=print) -> dict:
    """Rank the known individuals of `gallery` (KNOWN_DIR layout) for every photo in `photos`
    (files or folders) and write OUT/candidates.csv; returns a summary.

    `new_individual` is true when a query's best score is under `new_threshold` (default: the
    model card's `new_individual_threshold`, chosen on validation by `reid train`; the bundled
    fallback has none, so the column stays empty unless one is given). `fuse`, `pool`: see
    embed.make_embedder; `rerank_k` > 0 re-ranks with DBA + alpha-QE (rerank.py). Both change the
    scores the card's threshold was chosen on, so with either only an explicit `new_threshold` counts."""
    import csv

    from patou.media import IMAGE_EXTENSIONS, scan
    from patou.atomic import atomic_output
    from patou.reid.embed import DETECTION_THRESHOLD, make_embedder
    from patou.reid.gallery import Gallery, embed_photos
    from patou.reid.rerank import rerank

    out = Path(out_dir)
    if not Path(gallery).is_dir():
        raise ValueError(f"--gallery {gallery}: no such folder")
    given = [Path(p) for p in (photos if isinstance(photos, (list, tuple)) else [photos])]
    records, problems = scan(given, exclude=[out])
    paths = [r.path for r in records if r.path.suffix.lower() in IMAGE_EXTENSIONS]
    if not paths:  # like `patou run`: nothing to search is an error, not an empty candidates.csv
        from patou.api import NothingToDo

        why = "; ".join(problems) or f"no photo in {', '.join(map(str, given))}"
        raise NothingToDo(f"nothing to search: {why}")
    embedder = make_embedder(model, fuse=fuse, pool=pool, threads=threads)
    if new_threshold is None and fuse is None and rerank_k <= 0:
        new_threshold = (embedder.card.extra or {}).get("new_individual_threshold") if embedder.card.task == "embedding" else None
    kw = dict(no_detector=no_detector, threshold=DETECTION_THRESHOLD if detection_threshold is None else detection_threshold,
              cache_dir=cache_dir, use_cache=use_cache)
    if not no_detector:
        from patou.models.detector import Detector

        kw["detector"] = Detector(threads=threads)
    g = Gallery.load(gallery, embedder, **kw)
    for p in g.problems:
        log(p)
    if not g.paths:
        raise ValueError(f"{gallery}: no usable gallery photo")
    q = embed_photos(paths, embedder, **kw)
    for p in problems + q.problems:
        log(p)
    if rerank_k > 0 and q.paths:
        q.vectors, g.vectors = rerank(q.vectors, g.vectors, rerank_k)
    ranked = rank(q.vectors, g.vectors, g.ids, top_k) if q.paths else []
    rows = []
    for path, cands in zip(q.paths, ranked):
        new = "" if new_threshold is None else str(cands[0][1] < new_threshold).lower()
        for n, (ind, score, gi) in enumerate(cands, 1):
            rows.append({"query": str(path), "rank": n, "individual_id": ind, "score": round(score, 6),
                         "gallery_file": str(g.paths[gi]), "new_individual": new})
    out.mkdir(parents=True, exist_ok=True)
    with atomic_output(out / "candidates.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(CANDIDATE_COLUMNS))
        w.writeheader()
        w.writerows(rows)
    summary = {"queries": len(q.paths), "skipped": len(paths) - len(q.paths), "gallery_photos": len(g.paths),
               "individuals": len(set(g.ids)), "gallery_embedded_now": g.new, "model": embedder.name,
               "new_individual_threshold": new_threshold, "candidates": str(out / "candidates.csv")}
    log(f"{summary['queries']} queries ranked against {summary['individuals']} individuals "
        f"({summary['gallery_photos']} gallery photos, {g.new} embedded now) -> {summary['candidates']}")
    return summary
