"""`patou reid evaluate`: hit-rate@1/3/5 and mAP on sequence-disjoint queries vs gallery.

Queries and gallery come from DATA (KNOWN_DIR layout): by default one whole sequence per
individual is the query side (data.query_gallery_split); `split_csv` names them instead (a CSV
with a path column and a column saying `query` or `gallery`, as
MPDD's LABELS.csv `mpdd_split`; rows match photos by `individual/file name`). Writes metrics.json, report.md, per_query.csv and
worst_queries.png (the most confident wrong answers: query, wrong top candidate, right animal).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from patou.evaluate import fmt, json_safe, new_figure
from patou.atomic import atomic_output
from patou.reid import metrics
from patou.reid.data import query_gallery_split, scan_individuals
from patou.reid.embed import DETECTION_THRESHOLD, Embedder, make_embedder
from patou.reid.gallery import embed_photos
from patou.reid.ranking import rank
from patou.reid.rerank import ALPHA, rerank

WORST = 12


def _tail(path) -> str:
    """`individual/file.jpg`: how a split CSV's rows are matched to photos, whatever folder the
    CSV's paths are relative to (MPDD's LABELS.csv is relative to its parent folder)."""
    p = Path(str(path).replace("\\", "/"))
    return f"{p.parent.name}/{p.name}"


def read_split_csv(path: str | Path, column: str) -> dict[str, str]:
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise ValueError(f"{path}: cannot read split CSV ({e.strerror})") from e
    if not rows or "path" not in rows[0] or column not in rows[0]:
        raise ValueError(f"{path}: expected columns 'path' and {column!r}")
    return {_tail(r["path"]): r[column].strip().lower() for r in rows}


def evaluate(data: str | Path, out_dir: str | Path, *, model=None, no_detector: bool = False,
             split_csv: str | Path | None = None, split_column: str = "side", seed: int = 0,
             threshold: float = DETECTION_THRESHOLD, cache_dir=None, use_cache: bool = True,
             threads: int | None = None, embedder: Embedder | None = None, fuse: float | None = None,
             pool: str = "gem", rerank_k: int = 0, log: Callable[[str], None] = print) -> dict:
    """`fuse`, `pool`: see embed.make_embedder; `rerank_k` > 0: DBA + alpha-QE (rerank.py) with k neighbours."""
    images, problems = scan_individuals(data)
    if split_csv:
        sides = read_split_csv(split_csv, split_column)
        queries = [i for i in images if sides.get(_tail(i.path)) == "query"]
        gallery = [i for i in images if sides.get(_tail(i.path)) == "gallery"]
        protocol = f"{Path(split_csv).name} column {split_column}: query vs gallery"
    else:
        queries, gallery = query_gallery_split(images, seed)
        protocol = f"one whole sequence per individual as queries (seed {seed}), the other sequences as gallery"
    if not queries or not gallery:
        raise ValueError(f"{data}: no query/gallery photos to evaluate ({len(queries)} queries, {len(gallery)} gallery)")
    embedder = embedder or make_embedder(model, fuse=fuse, pool=pool, threads=threads)
    kw = dict(no_detector=no_detector, threshold=threshold, cache_dir=cache_dir, use_cache=use_cache)
    if not no_detector:
        from patou.models.detector import Detector

        kw["detector"] = Detector(threads=threads)
    q = embed_photos([i.path for i in queries], embedder, **kw)
    g = embed_photos([i.path for i in gallery], embedder, **kw)
    for p in problems + q.problems + g.problems:
        log(p)
    if rerank_k > 0 and len(q.paths) and len(g.paths):
        q.vectors, g.vectors = rerank(q.vectors, g.vectors, rerank_k)
    label = {i.path: i.label for i in images}
    qids, gids = [label[p] for p in q.paths], [label[p] for p in g.paths]
    result = metrics.scores(q.vectors, qids, g.vectors, gids)
    result.update(model=embedder.name, protocol=protocol, rerank=f"DBA + alpha-QE k={rerank_k} alpha={ALPHA:g}" if rerank_k > 0 else "none", inputs="whole photos" if no_detector else "detector crops",
                  skipped=len(q.problems) + len(g.problems))
    n_ind = len(set(gids))
    if n_ind <= max(metrics.KS):  # ranking k or fewer candidates: hit@k cannot miss
        result["warning"] = ("the gallery holds one individual: every query's first candidate is it, so these "
                             "figures mean nothing" if n_ind < 2 else
                             f"the gallery holds {n_ind} individuals: hit@k for k >= {n_ind} is 1 by construction")
        log(f"warning: {data}: {result['warning']}")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ranked = rank(q.vectors, g.vectors, gids, top_k=5)
    rows = []
    for path, qid, cands in zip(q.paths, qids, ranked):
        mine = next((n + 1 for n, c in enumerate(cands) if c[0] == qid), None)
        rows.append({"query": str(path), "individual_id": qid, "top1": cands[0][0], "top1_score": cands[0][1],
                     "top1_file": str(g.paths[cands[0][2]]), "rank_in_top5": mine or ""})
    with atomic_output(out / "per_query.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    wrong = sorted((r for r in rows if r["top1"] != r["individual_id"]), key=lambda r: -r["top1_score"])[:WORST]
    best_of = _best_photo_of(q.vectors, g.vectors, gids, g.paths)
    if wrong:
        idx = {str(p): n for n, p in enumerate(q.paths)}
        try:
            plot_worst(wrong, [best_of(idx[r["query"]], r["individual_id"]) for r in wrong], out / "worst_queries.png")
        except ModuleNotFoundError as e:  # matplotlib comes with the 'train' extra
            log(f"warning: no worst_queries.png ({e.name} missing: pip install 'patou[train]')")
    with atomic_output(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(json_safe(result), indent=2) + "\n")
    md = ["# Re-identification report", "", f"Model: {embedder.name}. Protocol: {protocol}. Inputs: {result['inputs']}. Re-ranking: {result['rerank']}.",
          f"{result['queries']} queries against {result['gallery']} gallery photos of {result['individuals']} "
          "individuals." + (f" **Warning: {result['warning']}.**" if result.get("warning") else ""),
          "", "| level | hit@1 | hit@3 | hit@5 | mAP |", "|---|---|---|---|---|"]
    for level in ("individual", "image"):
        md.append(f"| {level} | " + " | ".join(fmt(result.get(f"{level}_hit@{k}")) for k in metrics.KS)
                  + f" | {fmt(result.get(f'{level}_mAP'))} |")
    md += ["", f"## Worst queries ({len(wrong)} most confident wrong top-1)", ""]
    if wrong:
        md += ["![worst queries](worst_queries.png)", "", "| query | truth | top-1 | score |", "|---|---|---|---|"]
        md += [f"| {r['query']} | {r['individual_id']} | {r['top1']} | {r['top1_score']:.3f} |" for r in wrong]
    else:
        md.append("Every query's top-1 is right.")
    with atomic_output(out / "report.md") as tmp:
        tmp.write_text("\n".join(md) + "\n", encoding="utf-8")
    return result


def _best_photo_of(qv, gv, gids, gpaths):
    gids = np.asarray(gids)

    def best(qi: int, ind: str):
        mine = np.flatnonzero(gids == ind)
        if not len(mine):
            return None
        return gpaths[mine[np.argmax(gv[mine] @ qv[qi])]]
    return best


def _thumb(path, side: int = 160) -> np.ndarray:
    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((side, side))
        canvas = Image.new("RGB", (side, side), (255, 255, 255))
        canvas.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
        return np.asarray(canvas)


def plot_worst(wrong: list[dict], right_files: list, path: Path) -> Path:
    """One row per query: the query, its wrong top candidate, the right individual's best photo."""
    fig = new_figure(7.5, 2.4 * len(wrong))
    cols = 3
    for n, (r, right) in enumerate(zip(wrong, right_files)):
        cells = [(r["query"], f"query: {r['individual_id']}"),
                 (r["top1_file"], f"top-1: {r['top1']} ({r['top1_score']:.2f})"),
                 (right, f"right: {r['individual_id']}" if right else "right: not in gallery")]
        for c, (file, title) in enumerate(cells):
            ax = fig.add_subplot(len(wrong), cols, n * cols + c + 1)
            ax.axis("off")
            if file:
                ax.imshow(_thumb(file))
            ax.set_title(title, fontsize=8, color="tab:red" if c == 1 else "black")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
