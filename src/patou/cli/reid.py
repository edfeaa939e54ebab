"""`patou reid train | search | evaluate` (registered in patou.cli with one line)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .console import error, fail, log_to

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Individual re-identification: which known animal is this?")

_NO_DET = typer.Option(False, "--no-detector", help="The photos are crops already: embed them whole (square-padded).")
_THREADS = typer.Option(None, help="CPU threads (default: all cores).")
_CACHE = typer.Option(None, help="Embedding cache folder (default ~/.cache/patou/reid).")
_FUSE = typer.Option(None, "--fuse", help="Fuse --model (weight W, 0..1) with the bundled untrained features (1 - W); choose W per model on validation (benchmarks/reid.py --sweep).")
_POOL = typer.Option("gem", "--pool", help="Bundled untrained features: gem (GeM-pooled last feature map) or logits (ImageNet logits).")
_RERANK = typer.Option(0, "--rerank", help="Re-rank with DBA + alpha-QE over K gallery neighbours (0: off; 2 was best on MPDD validation).")


@app.command("train")
def train_cmd(
    known_dir: Path = typer.Argument(..., help="KNOWN_DIR/<individual_id>/*.jpg: the leaf folder names the animal."),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder to write (model.onnx + model.json, history.csv, split.csv)."),
    no_detector: bool = _NO_DET,
    epochs: int = typer.Option(10, help="Passes over the training photos (one cached augmented view each)."),
    views: int = typer.Option(6, help="Augmented views per photo computed through the frozen blocks."),
    cut: int = typer.Option(14, help="EfficientNet-Lite0 blocks kept frozen (of 16); the rest learn."),
    dim: int = typer.Option(256, help="Embedding size."),
    image_size: int = typer.Option(224, help="Network input size (multiple of 32)."),
    batch_size: int = typer.Option(32),
    lr: float = typer.Option(2e-3),
    val_fraction: float = typer.Option(0.15, help="Share of each individual's photos held out (whole sequences)."),
    seed: int = typer.Option(0),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed training in the same --out folder."),
    threads: Optional[int] = _THREADS,
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Train an embedding model (ArcFace metric learning, on the CPU) on photos of known individuals."""
    try:
        from patou.reid.training import train
    except ModuleNotFoundError as e:
        fail(f"training needs torch ({e.name} missing): pip install 'patou[train]'")
    try:
        train(known_dir, out, no_detector=no_detector, epochs=epochs, views=views, cut=cut, dim=dim,
              image_size=image_size, batch_size=batch_size, lr=lr, val_fraction=val_fraction, seed=seed,
              resume=resume, threads=threads, log=log_to(quiet))
    except (ValueError, OSError) as e:
        fail(e)


@app.command("search")
def search_cmd(
    photos: list[Path] = typer.Argument(..., help="Photos or folders to identify."),
    gallery: Path = typer.Option(..., "--gallery", help="KNOWN_DIR of known individuals (leaf folder = individual)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for candidates.csv."),
    model: Optional[Path] = typer.Option(None, "--model", help="Embedding model (folder or card); default: the bundled classifier's untrained features (see --pool)."),
    top_k: int = typer.Option(5, "--top-k", help="Candidates per photo."),
    no_detector: bool = _NO_DET,
    new_threshold: Optional[float] = typer.Option(None, help="Best score under which a photo is a new individual (default: the card's, chosen on validation; none with --fuse or --rerank)."),
    fuse: Optional[float] = _FUSE,
    pool: str = _POOL,
    rerank: int = _RERANK,
    cache_dir: Optional[Path] = _CACHE,
    threads: Optional[int] = _THREADS,
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Rank the known individuals for each photo: OUT/candidates.csv."""
    from patou.api import NothingToDo
    from patou.reid.ranking import search

    try:
        search(photos, gallery, out, model=model, top_k=top_k, no_detector=no_detector, new_threshold=new_threshold,
               cache_dir=cache_dir, threads=threads, fuse=fuse, pool=pool, rerank_k=rerank, log=log_to(quiet))
    except NothingToDo as e:
        error(e)
        raise typer.Exit(e.exit_code)
    except (ValueError, OSError) as e:
        fail(e)


@app.command("evaluate")
def evaluate_cmd(
    data: Path = typer.Argument(..., help="KNOWN_DIR layout: photos of individuals (queries and gallery)."),
    out: Path = typer.Option(..., "--out", "-o", help="Report folder (metrics.json, report.md, worst_queries.png)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Embedding model; default: the bundled classifier's untrained features (see --pool)."),
    no_detector: bool = _NO_DET,
    split: Optional[Path] = typer.Option(None, "--split", help="CSV with path + a column saying query/gallery (default: one sequence per individual is the query)."),
    split_column: str = typer.Option("side", help="The --split column holding query/gallery."),
    seed: int = typer.Option(0),
    fuse: Optional[float] = _FUSE,
    pool: str = _POOL,
    rerank: int = _RERANK,
    cache_dir: Optional[Path] = _CACHE,
    threads: Optional[int] = _THREADS,
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Hit-rate@1/3/5 and mAP (image and individual level), with the worst queries."""
    from patou.evaluate import fmt
    from patou.reid.evaluation import evaluate

    try:
        m = evaluate(data, out, model=model, no_detector=no_detector, split_csv=split, split_column=split_column,
                     seed=seed, cache_dir=cache_dir, threads=threads, fuse=fuse, pool=pool, rerank_k=rerank,
                     log=log_to(quiet))
    except (ValueError, OSError) as e:
        fail(e)
    typer.echo(f"{m['queries']} queries vs {m['gallery']} gallery photos: hit@1 {fmt(m.get('individual_hit@1'))}, "
               f"hit@3 {fmt(m.get('individual_hit@3'))}, hit@5 {fmt(m.get('individual_hit@5'))}, "
               f"mAP {fmt(m.get('image_mAP'))} -> {out / 'report.md'}")
