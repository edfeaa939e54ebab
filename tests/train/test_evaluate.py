"""Evaluation report: metrics against scikit-learn and by hand, events, figures, report.md."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from sklearn import metrics as skm  # noqa: E402

from patou.evaluate import (  # noqa: E402
    evaluate_predictions, event_level, metrics, plot_confusion, plot_pr, write_report,
)


def _onehot_proba(pred: list[int], k: int, p: float = 0.7) -> np.ndarray:
    out = np.full((len(pred), k), (1 - p) / (k - 1))
    out[np.arange(len(pred)), pred] = p
    return out


def test_metrics_equal_scikit_learn():
    rng = np.random.default_rng(3)
    labels = ["bear", "deer", "fox", "wolf", "other"]
    y = rng.integers(0, 5, 60)
    logits = rng.normal(size=(60, 5)) + 2.0 * np.eye(5)[y] * (rng.random((60, 1)) < 0.6)
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    truth = [labels[i] for i in y]
    m = metrics(truth, proba, labels)
    pred = proba.argmax(1)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, proba, labels=range(5)), abs=1e-6)
    for avg in ("micro", "macro", "weighted"):
        assert m[f"{avg}_f1"] == pytest.approx(skm.f1_score(y, pred, average=avg))
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=range(5))
    for i, lab in enumerate(labels):
        c = m["per_class"][lab]
        assert (c["precision"], c["recall"], c["f1"], c["support"]) == pytest.approx((p[i], r[i], f[i], s[i]), abs=1e-6)
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()


def test_hand_checked_tiny_case():
    # truth a a a b b c, predicted a a b b c a -> confusion rows a:[2,1,0] b:[0,1,1] c:[1,0,0]
    labels = ["a", "b", "c"]
    m = metrics(list("aaabbc"), _onehot_proba([0, 0, 1, 1, 2, 0], 3), labels)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [1, 0, 0]]
    pc = m["per_class"]
    # specificity = TN / (TN + FP): a has 3 negatives (b b c), 1 called a -> 2/3;
    # b has 4 negatives, 1 called b -> 3/4; c has 5 negatives, 1 called c -> 4/5
    assert [pc[k]["specificity"] for k in labels] == pytest.approx([2 / 3, 3 / 4, 4 / 5], abs=1e-6)
    assert [pc[k]["recall"] for k in labels] == pytest.approx([2 / 3, 1 / 2, 0.0], abs=1e-6)
    assert [pc[k]["precision"] for k in labels] == pytest.approx([2 / 3, 1 / 2, 0.0], abs=1e-6)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3, abs=1e-6)
    assert m["log_loss"] == pytest.approx(-(3 * np.log(0.7) + 3 * np.log(0.15)) / 6, abs=1e-6)


def test_target_recall_and_threshold_for_recall_by_hand():
    labels = ["bear", "other"]
    bear = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.2])  # 4 bears, then 2 others
    truth = ["bear"] * 4 + ["other"] * 2
    proba = np.stack([bear, 1 - bear], axis=1)
    t = metrics(truth, proba, labels, target="bear", threshold=0.5, want_recall=0.75)["target"]
    # at 0.5: bears 0.9 0.8 0.6 caught, the other at 0.7 too -> recall 3/4, precision 3/4
    assert (t["support"], t["recall"], t["precision"]) == (4, pytest.approx(0.75), pytest.approx(0.75))
    # 3 of 4 bears needed: the highest such threshold is the 3rd bear score, 0.6
    assert t["threshold_for_recall"] == pytest.approx(0.6)
    assert t["precision_at_threshold_for_recall"] == pytest.approx(0.75)
    assert t["average_precision"] == pytest.approx(skm.average_precision_score(np.arange(6) < 4, bear))
    all_bears = metrics(truth, proba, labels, target="bear", want_recall=1.0)["target"]
    assert all_bears["threshold_for_recall"] == pytest.approx(0.3)
    assert all_bears["precision_at_threshold_for_recall"] == pytest.approx(4 / 5)


def test_zero_support_classes_give_none_without_warnings():
    labels = ["bear", "deer", "wolf", "lynx"]  # wolf never true nor predicted; lynx predicted, never true
    truth = ["bear", "bear", "deer", "deer"]
    proba = _onehot_proba([0, 3, 1, 1], 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = metrics(truth, proba, labels, target="wolf")
    assert m["per_class"]["wolf"] == {"support": 0, "recall": None, "specificity": 1.0, "precision": None, "f1": None}
    assert m["per_class"]["lynx"]["precision"] == 0.0 and m["per_class"]["lynx"]["recall"] is None
    assert m["target"]["recall"] is None and m["target"]["threshold_for_recall"] is None
    # averages over the classes that occur (bear, deer, lynx), undefined values skipped
    assert m["macro_recall"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["balanced_accuracy"] == pytest.approx(0.75)
    json.dumps(m, allow_nan=False)
    with pytest.raises(ValueError, match="elk"):
        metrics(["elk"], proba[:1], labels)


def test_event_level_averages_scores_and_takes_the_majority_truth():
    ids = ["E2", "E1", "E2", "E2", "E3", "E3"]
    truth = ["bear", "deer", "bear", "fox", "fox", "wolf"]
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.5, 0.5], [0.1, 0.9]])
    y, p, ev = event_level(ids, truth, proba)
    assert ev == ["E2", "E1", "E3"]  # order of first appearance
    assert y == ["bear", "deer", "fox"]  # majority; the E3 tie goes to the first label met
    assert p == pytest.approx(np.array([[0.6, 0.4], [0.2, 0.8], [0.3, 0.7]]))


def _readable_png(path) -> None:
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB"), dtype=np.float32)
    assert min(a.shape[:2]) > 100 and a.std() > 0


@pytest.mark.parametrize("k", [2, 25])
@pytest.mark.slow
def test_confusion_png_is_written_and_not_blank(tmp_path, k):
    rng = np.random.default_rng(k)
    cm = np.diag(rng.integers(3, 90, k)) + rng.integers(0, 3, (k, k))
    cm[0] = 0  # a class without support must not break the normalisation
    path = plot_confusion(cm, [f"class_{i}" for i in range(k)], tmp_path / "cm.png")
    _readable_png(path)


def test_pr_png_is_written_and_not_blank(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.random(50) < 0.3
    _readable_png(plot_pr(y, np.clip(y * 0.4 + rng.random(50) * 0.6, 0, 1), tmp_path / "pr.png", 0.5, "bear"))
    _readable_png(plot_pr(np.zeros(5, bool), np.linspace(0, 1, 5), tmp_path / "none.png", 0.5, "bear"))


def test_evaluate_predictions_writes_metrics_figures_and_worst_mistakes(tmp_path):
    labels = ["bear", "deer", "fox"]
    rows = [
        ("a/1.jpg", "E1", "bear", [0.9, 0.05, 0.05]),
        ("a/2.jpg", "E1", "bear", [0.35, 0.6, 0.05]),  # wrong, 0.60
        ("b/1.jpg", "E2", "deer", [0.05, 0.9, 0.05]),
        ("b/2.jpg", None, "deer", [0.96, 0.02, 0.02]),  # wrong, 0.96: the worst
        {"file": "c/1.jpg", "event_id": "E3", "truth": "fox", "proba": [0.1, 0.2, 0.7]},
        ("c/2.jpg", "E3", "fox", [0.2, 0.45, 0.35]),  # wrong, 0.45
    ]
    out = evaluate_predictions(rows, tmp_path / "rep", labels, target="bear", threshold=0.5)
    rep = tmp_path / "rep"
    saved = json.loads((rep / "metrics.json").read_text())
    assert saved["image"]["n"] == 6 and saved["event"]["n"] == 4  # b/2.jpg has no event: its own
    assert saved["image"]["accuracy"] == pytest.approx(0.5)
    assert saved["event"]["accuracy"] == pytest.approx(0.75)  # E1 and E3 averages are right
    assert saved["image"]["target"]["recall"] == pytest.approx(0.5)
    for name in ("confusion_matrix.png", "confusion_matrix_events.png", "pr_curve.png"):
        _readable_png(rep / name)
    md = out["report"].read_text()
    worst = [line for line in md.splitlines() if line[:4] in ("| a/", "| b/", "| c/")]
    assert worst == [  # most confident first, right answers left out
        "| b/2.jpg | deer | bear | 0.960 |", "| a/2.jpg | bear | deer | 0.600 |", "| c/2.jpg | fox | deer | 0.450 |"]
    assert "![confusion matrix (images)](confusion_matrix.png)" in md and "pr_curve.png" in md


def test_write_report_limits_the_mistakes_and_handles_no_events(tmp_path):
    m = metrics(["a", "b"], _onehot_proba([1, 0], 2), ["a", "b"])
    mistakes = [{"file": f"{i}.jpg", "truth": "a", "prediction": "b", "score": i / 100} for i in range(30)]
    md = write_report(tmp_path, m, None, mistakes, [], worst=5).read_text()
    assert "(5 of 30, most confident first)" in md and "| 29.jpg |" in md and "| 24.jpg |" not in md
    assert json.loads((tmp_path / "metrics.json").read_text())["event"] is None
