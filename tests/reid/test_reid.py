"""`patou reid` on small subsets of MPDD (real dog crops, 96 test dogs unseen in its training split).

The trees are symlinks into ../shared/data/reid (nothing copied into the repo); the tests skip
when that folder is absent. Full-set figures are in benchmarks/reid.py, not here.
"""
from __future__ import annotations

import csv
import os
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from patou.cli import app
from patou.reid import metrics
from patou.reid.data import query_gallery_split, scan_individuals, sequences
from patou.reid.embed import Embedder, best_box
from patou.reid.gallery import EmbeddingCache, embed_photos
from patou.reid.ranking import CANDIDATE_COLUMNS, choose_threshold, rank
from patou.record import Detection

MPDD = Path(os.environ.get("PATOU_REID_DATA", Path(__file__).resolve().parents[2].parent / "shared/data/reid")) \
    / "naruto716-LostPetTest"
N_DOGS = 8
runner = CliRunner()


@pytest.fixture(scope="module")
def mpdd() -> dict:
    """{split: {individual: [paths]}} from LABELS.csv."""
    if not (MPDD / "LABELS.csv").is_file():
        pytest.skip(f"MPDD re-id data not found at {MPDD} (set PATOU_REID_DATA or put shared/ beside the repo)")
    out: dict = defaultdict(lambda: defaultdict(list))
    with open(MPDD / "LABELS.csv", newline="") as f:
        for r in csv.DictReader(f):
            out[r["mpdd_split"]][r["individual_id"]].append(MPDD.parent / r["path"])
    return out


def _tree(root: Path, files: dict[str, list[Path]]) -> Path:
    for ind, paths in files.items():
        (root / ind).mkdir(parents=True, exist_ok=True)
        for p in paths:
            (root / ind / p.name).symlink_to(p)
    return root


@pytest.fixture(scope="module")
def small(mpdd, tmp_path_factory) -> dict:
    """8 test dogs: gallery tree (MPDD gallery photos) and query photos (MPDD queries)."""
    dogs = sorted(mpdd["query"])[:N_DOGS]
    tmp = tmp_path_factory.mktemp("reid")
    gallery = _tree(tmp / "gallery", {d: mpdd["gallery"][d] for d in dogs})
    queries = _tree(tmp / "queries", {d: mpdd["query"][d] for d in dogs})
    return {"dogs": dogs, "gallery": gallery, "queries": queries, "tmp": tmp}


def _invoke(*args):
    return runner.invoke(app, ["reid", *map(str, args)], catch_exceptions=False)


def test_sequences_stay_on_one_side(mpdd, tmp_path):
    dogs = sorted(mpdd["train"])[:6]
    root = _tree(tmp_path / "known", {d: mpdd["train"][d] + mpdd["val"].get(d, []) for d in dogs})
    images, problems = scan_individuals(root)
    assert not problems
    assert {i.label for i in images} == set(dogs)
    # MPDD file names: <dog>_c<cam>s<seq>_<frame>.jpg; a sequence is one cXsY group
    for seq in sequences(images).values():
        assert len({i.path.name.rsplit("_", 1)[0] for i in seq}) == 1
        assert len({i.label for i in seq}) == 1
    q, g = query_gallery_split(images, seed=0)
    qs = {i.path.name.rsplit("_", 1)[0] for i in q}
    gs = {i.path.name.rsplit("_", 1)[0] for i in g}
    assert q and g and not qs & gs
    assert {i.label for i in q} <= {i.label for i in g}


def test_loose_photos_are_reported_not_used(mpdd, tmp_path):
    dog = sorted(mpdd["train"])[0]
    root = _tree(tmp_path / "known", {dog: mpdd["train"][dog][:2]})
    (root / "loose.jpg").symlink_to(mpdd["train"][dog][2])
    images, problems = scan_individuals(root)
    assert len(images) == 2
    assert len(problems) == 1 and "loose.jpg" in problems[0] and "individual" in problems[0]


def test_metrics_on_a_known_ranking():
    g = np.eye(4, dtype=np.float32)
    gids = ["a", "a", "b", "c"]
    # query 1 is closest to b, then a (rank 2 for its individual a); query 2 is nearest to c
    q = np.array([[0.5, 0.1, 0.8, 0.0], [0.0, 0.0, 0.1, 0.9]], dtype=np.float32)
    m = metrics.scores(q, ["a", "c"], g, gids)
    assert m["individual_hit@1"] == 0.5 and m["individual_hit@3"] == 1.0
    assert m["individual_mAP"] == pytest.approx((1 / 2 + 1) / 2)
    # image level, query 1: a-photos at ranks 2 and 3 -> AP (1/2 + 2/3) / 2
    assert m["image_mAP"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 1) / 2)
    ranked = rank(q, g, gids, top_k=3)
    assert [c[0] for c in ranked[0]] == ["b", "a", "c"] and ranked[0][1][2] == 0  # a's best photo is #0


def test_threshold_separates_known_from_unknown():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 16))
    g = np.concatenate([centres + 0.1 * rng.normal(size=(5, 16)) for _ in range(3)])
    gids = [f"i{k}" for _ in range(3) for k in range(5)]
    q = centres + 0.1 * rng.normal(size=(5, 16))
    norm = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    t = choose_threshold(norm(q), [f"i{k}" for k in range(5)], norm(g), gids)
    assert t["balanced_accuracy"] == 1.0 and -1 < t["threshold"] < 1


def test_best_box_is_the_most_confident_animal():
    dets = [Detection((0, 0, 0.9, 0.9), 0.95, "person"), Detection((0, 0, 0.1, 0.1), 0.6),
            Detection((0, 0, 0.5, 0.5), 0.58), Detection((0, 0, 0.2, 0.2), 0.9), Detection((0, 0, 0.3, 0.3), 0.1)]
    assert best_box(dets).conf == 0.9
    assert best_box(dets[:3]).bbox == (0, 0, 0.1, 0.1)
    assert best_box(dets, threshold=0.97) is None


@pytest.mark.slow
def test_search_ranks_known_dogs_and_caches_the_gallery(small, tmp_path):
    cache = tmp_path / "cache"
    out = tmp_path / "out"
    r = _invoke("search", small["queries"], "--gallery", small["gallery"], "--out", out, "--no-detector",
                "--top-k", "3", "--cache-dir", cache, "--new-threshold", "0.5")
    assert r.exit_code == 0, r.output
    with open(out / "candidates.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CANDIDATE_COLUMNS
    by_q = defaultdict(list)
    for row in rows:
        by_q[row["query"]].append(row)
    n_queries = sum(1 for _ in small["queries"].rglob("*.jpg"))
    assert len(by_q) == n_queries
    hits1 = hits3 = 0
    for q, cands in by_q.items():
        assert [int(c["rank"]) for c in cands] == [1, 2, 3]
        assert len({c["individual_id"] for c in cands}) == 3  # an individual once per query
        scores = [float(c["score"]) for c in cands]
        assert scores == sorted(scores, reverse=True)
        for c in cands:  # the gallery photo named is one of that individual's
            assert Path(c["gallery_file"]).parent.name == c["individual_id"]
        assert {c["new_individual"] for c in cands} == {str(scores[0] < 0.5).lower()}
        truth = Path(q).parent.name
        hits1 += cands[0]["individual_id"] == truth
        hits3 += truth in {c["individual_id"] for c in cands}
    # 8 dogs, whole-body crops, bundled ImageNet features: most queries find their dog first
    assert hits1 / len(by_q) >= 0.6 and hits3 >= hits1

    # second search: the gallery comes from the cache, nothing is embedded again
    emb = Embedder()
    gal = [p for p in small["gallery"].rglob("*.jpg")]
    again = embed_photos(gal, emb, no_detector=True, cache_dir=cache)
    assert again.new == 0 and len(again.paths) == len(gal)
    fresh = embed_photos(gal[:3], emb, no_detector=True, use_cache=False)
    np.testing.assert_allclose(again.vectors[:3], fresh.vectors, atol=1e-5)
    # the key is the bytes: a renamed copy hits the cache too
    copy = tmp_path / "renamed.jpg"
    shutil.copyfile(gal[0], copy)
    assert embed_photos([copy], emb, no_detector=True, cache_dir=cache).new == 0


@pytest.mark.slow
def test_search_reports_bad_photos_and_goes_on(small, tmp_path):
    q = tmp_path / "q"
    q.mkdir()
    (q / "broken.jpg").write_bytes(b"not a jpeg")
    first = next(small["queries"].rglob("*.jpg"))
    (q / "good.jpg").symlink_to(first.resolve())
    r = _invoke("search", q, "--gallery", small["gallery"], "--out", tmp_path / "out", "--no-detector",
                "--cache-dir", tmp_path / "cache")
    assert r.exit_code == 0
    assert "broken.jpg" in r.output and "Traceback" not in r.output
    with open(tmp_path / "out" / "candidates.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {row["query"] for row in rows} == {str(q / "good.jpg")}
    assert rows[0]["new_individual"] == ""  # bundled features: no validated threshold


def test_search_missing_gallery_is_one_line(tmp_path):
    r = _invoke("search", tmp_path, "--gallery", tmp_path / "nope", "--out", tmp_path / "out", "--no-detector")
    assert r.exit_code == 2
    assert "nope" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "out" / "candidates.csv").exists()


@pytest.mark.slow
def test_detector_crops_the_animal_on_camera_trap_photos(real, tmp_path):
    """Camera-trap photos go through the detector: a photo of the gallery finds itself first."""
    with open(real / "LABELS.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    bears = [real / r["path"] for r in rows if r["label_norm"] == "bear"][:2]
    others = [real / r["path"] for r in rows if r["label_norm"] in ("fox", "deer", "puma", "wolf")][:2]
    assert len(bears) == 2 and len(others) == 2
    gallery = _tree(tmp_path / "gallery", {"bear_a": bears[:1], "bear_b": bears[1:], "x": others[:1], "y": others[1:]})
    emb = Embedder()
    e = embed_photos(sorted(gallery.rglob("*.*")), emb, cache_dir=tmp_path / "cache")
    assert len(e.paths) >= 3, e.problems  # an animal box was found on (almost) every photo
    for box in e.boxes:
        x, y, w, h, conf = box
        assert conf >= 0.2 and 0 < w * h <= 1.0  # a detector box, not the whole photo
    ids = [p.parent.name for p in e.paths]
    ranked = rank(e.vectors, e.vectors, ids, top_k=1)
    assert [c[0][0] for c in ranked] == ids
    assert all(c[0][1] == pytest.approx(1.0, abs=1e-4) for c in ranked)


@pytest.mark.slow
def test_evaluate_writes_hit_rates_and_worst_queries(mpdd, small, tmp_path):
    data = _tree(tmp_path / "data", {d: mpdd["gallery"][d] + mpdd["query"][d] for d in small["dogs"]})
    out = tmp_path / "report"
    r = _invoke("evaluate", data, "--out", out, "--no-detector", "--split", MPDD / "LABELS.csv",
                "--split-column", "mpdd_split", "--cache-dir", tmp_path / "cache")
    assert r.exit_code == 0, r.output
    import json

    m = json.loads((out / "metrics.json").read_text())
    n_q = sum(len(mpdd["query"][d]) for d in small["dogs"])
    assert m["queries"] == n_q and m["individuals"] == N_DOGS
    for level in ("individual", "image"):
        assert 0 < m[f"{level}_hit@1"] <= m[f"{level}_hit@3"] <= m[f"{level}_hit@5"] <= 1
    assert 0 < m["image_mAP"] <= 1
    assert "hit@1" in (out / "report.md").read_text()
    if m["individual_hit@1"] < 1:
        from PIL import Image

        with Image.open(out / "worst_queries.png") as im:
            assert im.width > 300 and im.height > 150
    # default protocol: one sequence per dog as the query
    r = _invoke("evaluate", data, "--out", tmp_path / "r2", "--no-detector", "--cache-dir", tmp_path / "cache")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "r2" / "metrics.json").read_text())["queries"] > 0


@pytest.mark.slow
@pytest.mark.torch
def test_train_exports_an_embedding_card_that_search_uses(mpdd, small, tmp_path):
    pytest.importorskip("torch", reason="torch not installed (pip install -e '.[train]')")
    from patou.models.card import ModelCard

    dogs = sorted(mpdd["train"])[:6]
    known = _tree(tmp_path / "known", {d: mpdd["train"][d] + mpdd["val"].get(d, []) for d in dogs})
    out = tmp_path / "model"
    fast = ["--no-detector", "--epochs", "2", "--views", "1", "--image-size", "96", "--dim", "64", "--batch-size", "16",
            "--val-fraction", "0.3", "--threads", "2", "--quiet"]
    r = _invoke("train", known, "--out", out, *fast)
    assert r.exit_code == 0, r.output
    card = ModelCard.load(out)
    assert card.task == "embedding" and tuple(card.input_size) == (96, 96)
    ex = card.extra
    assert ex["embedding_size"] == 64 and ex["training_data"]["individuals"] == 6
    assert ex["verification"]["max_abs_diff"] <= ex["verification"]["tolerance"]
    assert 0 <= ex["validation"]["individual_hit@1"] <= 1 and ex["new_individual_threshold"] is not None
    # whole sequences on one side of the split
    with open(out / "split.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    side = {}
    for row in rows:
        seq = Path(row["path"]).name.rsplit("_", 1)[0]
        assert side.setdefault(seq, row["side"]) == row["side"]
    assert {"train", "val"} <= set(side.values())
    with open(out / "history.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 2

    emb = Embedder(out)
    v = emb.embed([emb.crop_photo(p).crop for p in sorted(small["queries"].rglob("*.jpg"))[:3]])
    assert v.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    r = _invoke("search", small["queries"], "--gallery", small["gallery"], "--out", tmp_path / "s", "--no-detector",
                "--model", out, "--cache-dir", tmp_path / "cache", "--top-k", "2")
    assert r.exit_code == 0, r.output
    with open(tmp_path / "s" / "candidates.csv", newline="") as f:
        assert {row["new_individual"] for row in csv.DictReader(f)} <= {"true", "false"}

    # --resume: settings must match the killed run; a finished run resumes to a re-export only
    r = _invoke("train", known, "--out", out, *[a if a != "2" else "3" for a in fast], "--resume")
    assert r.exit_code == 2 and "epochs" in r.output
    r = runner.invoke(app, ["reid", "train", str(known), "--out", str(out), *fast[:-1], "--resume"])
    assert r.exit_code == 0 and "resuming after epoch 2" in r.output
    r = _invoke("train", known, "--out", out, *fast)
    assert r.exit_code == 2 and "already holds a model" in r.output
