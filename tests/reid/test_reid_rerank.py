"""The reid accuracy options: bundled GeM features, fusion with a trained embedding, DBA + alpha-QE
re-ranking. Real MPDD dog crops (a small subset) where a network runs; a constructed case for the
re-ranking's direction. Full-set figures: benchmarks/reid.py."""
from __future__ import annotations

import json

import numpy as np
import pytest

from patou.reid.embed import Embedder, FusedEmbedder, gem, l2n, with_output
from patou.reid.ranking import rank
from patou.reid.rerank import dba, expand_query, rerank
from test_reid import _invoke, mpdd, small  # noqa: F401  (module fixtures: MPDD subsets)


@pytest.fixture(scope="module")
def crops(small):
    emb = Embedder(pool="logits")
    paths = sorted(small["gallery"].rglob("*.jpg"))[:12]
    return [emb.crop_photo(p).crop for p in paths]


@pytest.mark.slow
def test_feature_output_is_what_the_classifier_pools(crops):
    """The output appended without the onnx package is the map the classifier averages: its mean
    through the classifier's own fully-connected layer gives the logits back."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    from patou.models.runtime import cpu_session

    base = Embedder(pool="logits")
    feats = Embedder()
    assert feats.pool == "gem" and base.pool == "logits" and feats.key != base.key
    model = onnx.load(str(base.card.onnx_path))
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    session = cpu_session(with_output(base.card.onnx_path.read_bytes(), "/_swish_1/Clip_output_0"))
    x = base.preprocess(crops[:4])
    logits, fmap = session.run(["logits", "/_swish_1/Clip_output_0"], {base._input: x})
    assert fmap.shape == (4, 1280, 7, 7) and fmap.min() >= 0
    np.testing.assert_allclose(logits, base.raw(crops[:4]), atol=1e-4)  # the original output is untouched
    np.testing.assert_allclose(fmap.mean(axis=(2, 3)) @ init["_fc.weight"].T + init["_fc.bias"], logits, atol=1e-3)
    # GeM p=3 is a power mean: between the average and the maximum, and what Embedder returns
    g = gem(fmap)
    assert np.all(g >= fmap.mean(axis=(2, 3)) - 1e-5) and np.all(g <= fmap.max(axis=(2, 3)) + 1e-5)
    np.testing.assert_allclose(feats.raw(crops[:4]), g, rtol=1e-4, atol=1e-5)
    v = feats.embed(crops)
    assert v.shape == (len(crops), 1280)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_fusion_weight_is_the_share_of_each_cosine(crops):
    a, b = Embedder(pool="logits"), Embedder()  # two real embeddings standing for trained and untrained
    va, vb = a.embed(crops), b.embed(crops)
    for w in (0.0, 0.2, 1.0):
        f = FusedEmbedder(a, b, w).embed(crops)
        np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(f @ f.T, w * (va @ va.T) + (1 - w) * (vb @ vb.T), atol=1e-5)
    f0 = FusedEmbedder(a, b, 0.0).embed(crops)  # weight 0: exactly the untrained ranking
    assert [r[0] for r in rank(f0[:3], f0[3:], list("abcdefghi"), 3)[0]] == \
        [r[0] for r in rank(vb[:3], vb[3:], list("abcdefghi"), 3)[0]]
    with pytest.raises(ValueError, match="between 0 and 1"):
        FusedEmbedder(a, b, 1.5)


def test_rerank_prefers_the_individual_whose_photos_agree():
    """The query's single nearest photo is an odd one of B; A's three consistent photos are all
    nearly as close. Plain cosine ranks B first; DBA + alpha-QE over 3 neighbours ranks A first."""
    e = np.eye(6, dtype=np.float32)
    a = l2n(np.stack([e[0] + 0.3 * e[3], e[0] + 0.3 * e[4], e[0] + 0.3 * e[5]]))
    b = l2n(np.stack([e[1], e[1] + 0.3 * e[5], e[2] + 0.05 * e[0]]))
    gallery, ids = np.vstack([a, b]), ["a"] * 3 + ["b"] * 3
    q = l2n((e[0] + e[2])[None])
    assert rank(q, gallery, ids, 2)[0][0][0] == "b"
    q2, g2 = rerank(q, gallery, 3)
    assert rank(q2, g2, ids, 2)[0][0][0] == "a"
    np.testing.assert_allclose(np.linalg.norm(g2, axis=1), 1.0, atol=1e-6)
    # off / trivial settings change nothing
    q0, g0 = rerank(q, gallery, 0)
    assert q0 is q and g0 is gallery
    np.testing.assert_allclose(dba(gallery, 1), gallery)
    np.testing.assert_allclose(expand_query(q, gallery, 0), q)


@pytest.mark.slow
def test_evaluate_and_search_options_on_real_dogs(small, tmp_path):
    base = ["--no-detector", "--cache-dir", tmp_path / "cache"]
    runs = {}
    for name, extra in (("plain", []), ("rerank", ["--rerank", "2"]), ("logits", ["--pool", "logits"])):
        r = _invoke("evaluate", small["gallery"], "--out", tmp_path / name, *base, *extra)
        assert r.exit_code == 0, r.output
        runs[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    assert "GeM" in runs["plain"]["model"] and "logits" in runs["logits"]["model"]
    assert runs["plain"]["rerank"] == "none" and runs["rerank"]["rerank"].startswith("DBA + alpha-QE k=2")
    assert runs["plain"]["queries"] == runs["rerank"]["queries"] > 0
    # re-ranking moves the scores (same embeddings, different similarities)
    assert runs["rerank"]["image_mAP"] != runs["plain"]["image_mAP"]
    # bad option values: one line naming the option, no traceback, no output written
    r = _invoke("search", small["queries"], "--gallery", small["gallery"], "--out", tmp_path / "s",
                "--fuse", "0.2", *base)
    assert r.exit_code == 2 and "--fuse needs --model" in r.output and "Traceback" not in r.output
    r = _invoke("search", small["queries"], "--gallery", small["gallery"], "--out", tmp_path / "s",
                "--pool", "max", *base)
    assert r.exit_code == 2 and "pool 'max'" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "s" / "candidates.csv").exists()
