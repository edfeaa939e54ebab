"""Re-identification scores, NumPy only.

Image level: the gallery photos ranked by similarity; hit@k = a photo of the right individual is
among the first k, AP over all of that individual's photos (the Market-1501 mAP).
Individual level: individuals ranked by their best photo (what `search` returns); hit@k = the right
individual among the first k, AP = 1 / its rank (one relevant item).
Queries whose individual has no gallery photo are left out (open-set queries have no right answer).
"""
from __future__ import annotations

import numpy as np

KS = (1, 3, 5)


def scores(query: np.ndarray, query_ids: list[str], gallery: np.ndarray, gallery_ids: list[str], ks=KS) -> dict:
    gids = np.asarray(gallery_ids)
    individuals, inverse = np.unique(gids, return_inverse=True)
    img_rank, ind_rank, img_ap = [], [], []
    for start in range(0, len(query), 256):
        sim = query[start : start + 256] @ gallery.T
        for qi, s in enumerate(sim):
            qid = query_ids[start + qi]
            rel = gids == qid
            if not rel.any():
                continue
            order = np.argsort(-s, kind="stable")
            hits = rel[order]
            pos = np.flatnonzero(hits)
            img_rank.append(pos[0] + 1)
            img_ap.append(float(np.mean((np.arange(len(pos)) + 1) / (pos + 1))))
            best = np.full(len(individuals), -np.inf)
            np.maximum.at(best, inverse, s)
            mine = best[np.searchsorted(individuals, qid)]
            ind_rank.append(int((best > mine).sum()) + 1)
    img_rank, ind_rank = np.asarray(img_rank), np.asarray(ind_rank)
    n = len(img_rank)
    out = {"queries": int(n), "gallery": int(len(gids)), "individuals": int(len(individuals))}
    if n == 0:
        return out
    for level, r in (("individual", ind_rank), ("image", img_rank)):
        for k in ks:
            out[f"{level}_hit@{k}"] = float((r <= k).mean())
    out["individual_mAP"] = float(np.mean(1.0 / ind_rank))
    out["image_mAP"] = float(np.mean(img_ap))
    return out
