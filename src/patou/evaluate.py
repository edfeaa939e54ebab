"""Evaluation report: metrics from scikit-learn, figures from matplotlib, tied up in report.md.

Pure functions of (truth, probabilities): no model runs here, so the same code scores a trained
classifier, the bundled roll-up or an int8 export. Image level and event level (an event's
probabilities are the mean of its images', as `patou run` decides events).

Undefined values (precision of a class never predicted, recall of a class absent from the
truth, specificity when every sample is of that class) are `None` in metrics.json, not 0: a
zero would read as a measured failure. Averages (macro, weighted) skip them, as scikit-learn
does with `zero_division=np.nan`, over the classes that occur in the truth or the predictions.
"""
from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from patou.options import DETECTION_THRESHOLD, EVENT_GAP, THRESHOLD, Thresholds

REPORT_FILES = ("metrics.json", "report.md", "confusion_matrix.png", "pr_curve.png")


@contextmanager
def _quiet():
    """scikit-learn warns once per undefined metric; zero-support classes are expected here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"sklearn\.")
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"sklearn\.")
        yield


def _num(v, digits: int = 6):
    """JSON-safe number: NaN -> None, numpy -> float, rounded."""
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else round(v, digits)


def _indices(y_true: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    pos = {lab: i for i, lab in enumerate(labels)}
    unknown = sorted({str(y) for y in y_true} - pos.keys())
    if unknown:
        raise ValueError(f"truth labels not among the model's labels: {', '.join(unknown)}")
    return np.array([pos[y] for y in y_true], dtype=np.int64)


def metrics(
    y_true: list[str],
    proba: np.ndarray,
    labels: list[str],
    target: str | None = None,
    threshold: float = 0.5,
    want_recall: float = 0.95,
) -> dict:
    """Accuracy, balanced accuracy, per-class recall/specificity/precision/F1/support, micro,
    macro and weighted F1, log-loss, the confusion matrix, and for `target`: recall and precision
    of `P(target) >= threshold`, the highest threshold whose recall is >= `want_recall` (and the
    precision there), average precision. The prediction is the argmax of `proba` (n, k)."""
    from sklearn.metrics import (
        accuracy_score, average_precision_score, balanced_accuracy_score, confusion_matrix, log_loss,
        precision_recall_curve, precision_recall_fscore_support,
    )

    labels = list(labels)
    proba = np.asarray(proba, dtype=np.float64).reshape(len(y_true), -1) if len(y_true) else np.zeros((0, len(labels)))
    if proba.shape[1] != len(labels):
        raise ValueError(f"proba has {proba.shape[1]} columns for {len(labels)} labels")
    k, n = len(labels), len(y_true)
    out: dict = {"n": n, "labels": labels}
    if n == 0:
        return out
    yt, yp = _indices(y_true, labels), proba.argmax(1)
    every, seen = np.arange(k), np.union1d(yt, yp)
    with _quiet():
        p, r, f, s = precision_recall_fscore_support(yt, yp, labels=every, zero_division=np.nan)
        cm = confusion_matrix(yt, yp, labels=every)
        out["accuracy"] = _num(accuracy_score(yt, yp))
        out["balanced_accuracy"] = _num(balanced_accuracy_score(yt, yp))  # mean recall over true classes
        for avg in ("micro", "macro", "weighted"):
            ap, ar, af, _ = precision_recall_fscore_support(yt, yp, labels=seen, average=avg, zero_division=np.nan)
            out[f"{avg}_f1"], out[f"{avg}_precision"], out[f"{avg}_recall"] = _num(af), _num(ap), _num(ar)
        # rows renormalised: log-loss must see distributions, and float32 sums drift from 1
        q = np.clip(proba, 1e-15, None)
        out["log_loss"] = _num(log_loss(yt, q / q.sum(1, keepdims=True), labels=every))
    fp = cm.sum(0) - np.diag(cm)
    tn = n - cm.sum(1) - fp
    spec = np.divide(tn, tn + fp, out=np.full(k, np.nan), where=(tn + fp) > 0)
    out["per_class"] = {
        lab: {"support": int(s[i]), "recall": _num(r[i]), "specificity": _num(spec[i]),
              "precision": _num(p[i]), "f1": _num(f[i])}
        for i, lab in enumerate(labels)
    }
    out["confusion_matrix"] = cm.tolist()  # rows = truth, columns = prediction, in `labels` order
    if target is not None:
        if target not in labels:
            raise ValueError(f"target {target!r} is not one of the labels")
        t = labels.index(target)
        pos, score = yt == t, proba[:, t]
        tgt = {"label": target, "support": int(pos.sum()), "threshold": threshold, "want_recall": want_recall,
               "recall": None, "precision": None, "threshold_for_recall": None,
               "precision_at_threshold_for_recall": None, "average_precision": None}
        hit = score >= threshold
        if hit.any():
            tgt["precision"] = _num(pos[hit].mean())
        if pos.any():
            tgt["recall"] = _num(hit[pos].mean())
            with _quiet():
                prec, rec, thr = precision_recall_curve(pos, score)
                tgt["average_precision"] = _num(average_precision_score(pos, score))
            # rec[i] is the recall of score >= thr[i]; it only falls as i (the threshold) grows
            ok = np.flatnonzero(rec[:-1] >= want_recall - 1e-12)
            if ok.size:
                i = ok.max()
                tgt["threshold_for_recall"] = _num(thr[i])
                tgt["precision_at_threshold_for_recall"] = _num(prec[i])
        out["target"] = tgt
    return out


def event_level(ids_events: list[str], y_true: list[str], proba: np.ndarray) -> tuple[list[str], np.ndarray, list[str]]:
    """Per event (in order of first appearance): the mean of its images' probabilities, as
    `patou run` averages an event's scores, and as truth the majority label of its images
    (a tie goes to the label met first in the event)."""
    proba = np.asarray(proba, dtype=np.float64)
    members: dict[str, list[int]] = {}
    for i, e in enumerate(ids_events):
        members.setdefault(e, []).append(i)
    ids = list(members)
    truth = [Counter(y_true[i] for i in members[e]).most_common(1)[0][0] for e in ids]
    width = proba.shape[1] if proba.ndim == 2 else 0
    mean = np.stack([proba[members[e]].mean(0) for e in ids]) if ids else np.zeros((0, width))
    return truth, mean, ids


# ------------------------------------------------------------------------------ figures


def new_figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: no global state, Agg canvas by default

    return Figure(figsize=(width, height), dpi=110)


def plot_confusion(cm, labels: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Rows normalised to the true class (colour), raw counts written in the non-empty cells;
    tick labels carry each class's support. Sized for 2 to 25+ classes."""
    cm = np.asarray(cm, dtype=np.int64)
    k = len(labels)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)
    side = min(max(4.5, 0.42 * k + 2.5), 16.0)
    font = 10 if k <= 8 else 8 if k <= 15 else 6
    fig = new_figure(side + 1.2, side)
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(k), list(labels), rotation=90 if k > 5 else 30, ha="center" if k > 5 else "right",
                  fontsize=font)
    ax.set_yticks(range(k), [f"{lab} ({int(n)})" for lab, n in zip(labels, rows[:, 0])], fontsize=font)
    for i, j in zip(*np.nonzero(cm)):
        ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=font,
                color="white" if norm[i, j] > 0.55 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (support)")
    ax.set_title(title or "Confusion matrix (rows normalised, counts in cells)", fontsize=font + 1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def plot_pr(y_true_bin, scores, path: str | Path, threshold: float = 0.5, label: str = "target") -> Path:
    """Precision-recall curve of one class, with the operating point at `threshold` marked."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    y = np.asarray(y_true_bin, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    fig = new_figure(5.5, 4.5)
    ax = fig.add_subplot()
    if y.any():
        with _quiet():
            prec, rec, _ = precision_recall_curve(y, s)
            ap = average_precision_score(y, s)
        ax.step(rec, prec, where="post", color="tab:blue", label=f"AP {ap:.3f}")
        hit = s >= threshold
        r_at = hit[y].mean()
        p_at = y[hit].mean() if hit.any() else 1.0
        ax.plot([r_at], [p_at], "o", color="tab:red",
                label=f"threshold {threshold:g}: recall {r_at:.3f}, precision {p_at:.3f}")
        ax.axhline(y.mean(), color="grey", lw=0.8, ls="--", label=f"prevalence {y.mean():.3f}")
        ax.legend(loc="lower left", fontsize=8)
    else:
        ax.text(0.5, 0.5, f"no true '{label}' sample", ha="center", va="center")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"recall ({label})")
    ax.set_ylabel("precision")
    ax.set_title(f"Precision-recall: {label} (n={len(y)}, positives={int(y.sum())})", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


# ------------------------------------------------------------------------------ report


def json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _num(obj)
    return obj


def fmt(v) -> str:
    return "–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def write_report(
    out_dir: str | Path,
    image_metrics: dict,
    event_metrics: dict | None,
    mistakes: list[dict],
    figures: Mapping[str, str | Path] | Sequence[str | Path] = (),
    worst: int = 20,
    first_level: str = "images",
) -> Path:
    """Write `metrics.json` ({"image": ..., "event": ...}) and `report.md` into `out_dir`;
    returns the report's path. `mistakes` are dicts with file, truth, prediction, score: the
    `worst` most confident ones are listed."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = {"image": image_metrics, "event": event_metrics} if first_level == "images" else {"event": image_metrics}
    (out / "metrics.json").write_text(json.dumps(json_safe(data), indent=2, ensure_ascii=False) + "\n")
    figs = figures.items() if isinstance(figures, Mapping) else [(Path(f).stem.replace("_", " "), f) for f in figures]
    levels = [(first_level, image_metrics)] + ([("events", event_metrics)] if event_metrics else [])

    md = ["# Evaluation report", ""]
    md += ["| level | n | accuracy | balanced accuracy | micro F1 | macro F1 | weighted F1 | log-loss |",
           "|---|---|---|---|---|---|---|---|"]
    for name, m in levels:
        md.append(f"| {name} | {m.get('n', 0)} | " + " | ".join(fmt(m.get(k)) for k in (
            "accuracy", "balanced_accuracy", "micro_f1", "macro_f1", "weighted_f1", "log_loss")) + " |")
    tgt = [(name, m["target"]) for name, m in levels if m.get("target")]
    if tgt:
        t0 = tgt[0][1]
        md += ["", f"## Target: {t0['label']}", "",
               f"Recall and precision of `P({t0['label']}) >= {t0['threshold']:g}`; the highest threshold that "
               f"still reaches recall {t0['want_recall']:g}, and the precision there.", "",
               "| level | support | recall | precision | threshold for recall | precision there | average precision |",
               "|---|---|---|---|---|---|---|"]
        for name, t in tgt:
            md.append(f"| {name} | {t['support']} | " + " | ".join(fmt(t.get(k)) for k in (
                "recall", "precision", "threshold_for_recall", "precision_at_threshold_for_recall",
                "average_precision")) + " |")
    for name, m in levels:
        if not m.get("per_class"):
            continue
        md += ["", f"## Per class ({name})", "", "| class | support | recall | specificity | precision | F1 |",
               "|---|---|---|---|---|---|"]
        for lab, c in m["per_class"].items():
            md.append(f"| {lab} | {c['support']} | " + " | ".join(
                fmt(c[k]) for k in ("recall", "specificity", "precision", "f1")) + " |")
    if figs:
        md += ["", "## Figures", ""]
        for title, path in figs:
            md += [f"![{title}]({Path(path).name})", ""]
    ranked = sorted(mistakes, key=lambda m: -float(m.get("score") or 0.0))[:worst]
    md += ["", f"## Worst mistakes ({len(ranked)} of {len(mistakes)}, most confident first)", ""]
    if ranked:
        md += ["| file | truth | prediction | score |", "|---|---|---|---|"]
        md += [f"| {m['file']} | {m['truth']} | {m['prediction']} | {float(m['score']):.3f} |" for m in ranked]
    else:
        md.append("No mistakes.")
    md += ["", "Undefined values (no support, never predicted) are shown as –.", ""]
    path = out / "report.md"
    path.write_text("\n".join(md), encoding="utf-8")
    return path


def _rows(rows: Iterable) -> tuple[list[str], list[str], list[str], np.ndarray]:
    files, events, truth, proba = [], [], [], []
    for row in rows:
        if isinstance(row, Mapping):
            f, e, t, p = row["file"], row.get("event_id"), row["truth"], row["proba"]
        else:
            f, e, t, p = row
        files.append(str(f))
        events.append(str(e) if e not in (None, "") else f"file:{f}")  # no event: the image is its own
        truth.append(str(t))
        proba.append(np.asarray(p, dtype=np.float64))
    return files, events, truth, np.stack(proba) if proba else np.zeros((0, 0))


def evaluate_predictions(
    rows: Iterable,
    out_dir: str | Path,
    labels: list[str],
    target: str | None = None,
    threshold: float = 0.5,
    want_recall: float = 0.95,
    worst: int = 20,
    event_rows: Iterable | None = None,
    level: str = "both",
) -> dict:
    """Everything from (file, event_id, truth, proba) rows (tuples or dicts with those keys):
    image and event metrics, confusion matrices, the target's PR curve, metrics.json and
    report.md in `out_dir`. Returns {"image", "event", "report", "figures"}.

    Events are the mean of their rows' probabilities, unless `event_rows` (event_id, truth,
    proba) give them already (as `patou run` decides them: empty images left out).
    `level` "image", "event" or "both" says which levels are reported."""
    if level not in ("image", "event", "both"):
        raise ValueError(f"level {level!r}: expected image, event or both")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files, events, truth, proba = _rows(rows)
    if not files:
        raise ValueError("no predictions to evaluate")
    m_img = metrics(truth, proba, labels, target, threshold, want_recall)
    if event_rows is None:
        ev_truth, ev_proba, _ = event_level(events, truth, proba)
    else:
        _, _, ev_truth, ev_proba = _rows((e, e, t, p) for e, t, p in event_rows)
    m_ev = metrics(ev_truth, ev_proba, labels, target, threshold, want_recall)
    levels = [("images", m_img, "confusion_matrix.png", truth, proba),
              ("events", m_ev, "confusion_matrix_events.png", ev_truth, ev_proba)]
    if level == "image":
        levels = levels[:1]
    elif level == "event":
        levels = [("events", m_ev, "confusion_matrix.png", ev_truth, ev_proba)]
    figures = {}
    for name, m, png, _, _ in levels:
        title = f"{name.capitalize()}: confusion matrix (rows normalised, counts in cells)"
        figures[f"confusion matrix ({name})"] = plot_confusion(m["confusion_matrix"], labels, out / png, title)
    if target is not None:  # the PR curve of the first level reported
        _, _, _, y, p = levels[0]
        figures[f"precision-recall: {target}"] = plot_pr(
            np.array(y) == target, p[:, labels.index(target)], out / "pr_curve.png", threshold, target)
    pred = proba.argmax(1)
    mistakes = [{"file": f, "truth": y, "prediction": labels[p], "score": float(proba[i, p])}
                for i, (f, y, p) in enumerate(zip(files, truth, pred)) if labels[p] != y]
    m_img_out = m_img if level != "event" else None
    report = write_report(out, m_img_out or m_ev, m_ev if level == "both" else None, mistakes, figures, worst,
                          first_level="images" if level != "event" else "events")
    return {"image": m_img_out, "event": m_ev if level != "image" else None, "report": report,
            "figures": {k: Path(v) for k, v in figures.items()}}


# ------------------------------------------------------------------------------ a model on DATA


def evaluate_model(
    data: str | Path,
    out_dir: str | Path,
    model: str | Path | None = None,
    *,
    labels_csv: str | Path | None = None,
    merge: str | Path | None = None,
    level: str = "both",
    target: str | None = None,
    threshold: float | str = THRESHOLD,
    want_recall: float = 0.95,
    detection_threshold: float = DETECTION_THRESHOLD,
    event_gap: float = EVENT_GAP,
    fast: bool = False,
    threads: int | None = None,
    groups: bool = False,
    log=print,
) -> dict:
    """`patou evaluate`: run the model on labelled DATA exactly as `patou run` does (detector,
    crops, flip, events) and score it against the labels. The label space is the model's labels
    plus `empty` (no box >= detection threshold); an image's probabilities are its verdict's
    (the best box's class scores), an event's the mean over its non-empty images, as in a run (or
    the card's own event rule: decide.py).
    The run's own outputs land in REPORT_DIR/run/."""
    from patou.api import run as patou_run
    from patou.formats.taxa import table_of_card
    from patou.models.card import ModelCard
    from patou.decide import mean_scores
    from patou.models.classifier import DEFAULT_CARD, event_logit_scale
    from patou.record import EMPTY
    from patou.train.labels import OTHER, collect, parse_merge

    out = Path(out_dir)
    card = ModelCard.load(model or DEFAULT_CARD)
    # groups: score at the card's coarse groups (an installed model's roe_deer -> deer)
    group_of = dict((card.extra or {}).get("groups") or {}) if groups else {}
    if groups and not group_of:
        raise ValueError(f"--groups: the model {card.name} has no groups in its card (extra.groups)")
    model_labels = list(dict.fromkeys(group_of.get(k, k) for k in card.labels))
    fold = model_labels if OTHER in model_labels else None  # labels the model lacks count as `other`
    # with --groups a fine truth label counts as its group (roe_deer -> deer), unless --merge says otherwise
    images, problems = collect(Path(data), labels_csv and Path(labels_csv), {**group_of, **parse_merge(merge)}, fold,
                               taxonomy=table_of_card(card))
    for p in problems:
        log(f"warning: {p}")
    if not images:
        raise ValueError(f"{data}: no labelled images found (leaf folder name = label, or --labels FILE)")
    labels = model_labels + ([EMPTY] if EMPTY not in model_labels else [])
    unknown = sorted({i.label for i in images} - set(labels))
    if unknown:
        raise ValueError(f"labels the model does not know: {', '.join(unknown)} (merge them with --merge, "
                         f"e.g. \"{unknown[0]}={model_labels[0]}\"; the model knows {', '.join(model_labels)})")
    target = target or ("bear" if "bear" in model_labels else None)
    thresholds = Thresholds.of_value(threshold)  # per class: the run decides with it, the target is scored at its own
    if target is not None and target not in labels:
        raise ValueError(f"--target {target!r} is not a label of the model ({', '.join(model_labels)})")
    truth = {i.path.absolute(): i.label for i in images}
    # DATA is analysed whole, as `patou run DATA` would (an event needs all its photos), labelled or not
    result = patou_run([Path(data)], out / "run", model=model, detection_threshold=detection_threshold,
                       threshold=thresholds.value(), event_gap=event_gap, fast=fast, threads=threads, log=log)

    def proba(r, scores: dict | None = None) -> np.ndarray:
        v = np.zeros(len(labels))
        scores = r.scores if scores is None else scores
        if scores:
            for k, x in scores.items():
                v[labels.index(group_of.get(k, k))] += x
        else:  # no box: `empty`, as sure as the detector is that nothing is there
            v[labels.index(EMPTY)] = 1.0
        return v

    rows, events = [], {}
    for r in result.records:
        y = truth.get(r.path.absolute())
        if y is None or r.failure:
            continue
        rows.append((r.path.relative_to(Path(data).absolute()).as_posix(), r.event_id, y, proba(r)))
        events.setdefault(r.event_id, []).append((y, r))
    event_rows = []
    scale = event_logit_scale(card)  # the card's event rule, as the run decided its events
    for eid, members in events.items():
        scored = [r.scores for _, r in members if r.scores]
        p = proba(None, mean_scores(scored, scale)) if scored else proba(members[0][1])
        event_rows.append((eid, Counter(y for y, _ in members).most_common(1)[0][0], p))
    skipped = len(images) - len(rows)
    if skipped:
        log(f"warning: {skipped} labelled images could not be read or were not found, left out")
    report = evaluate_predictions(rows, out, labels, target, thresholds.of(target), want_recall, event_rows=event_rows,
                                  level=level)
    report["labels"] = labels
    return report
