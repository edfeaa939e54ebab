"""Measure the ImageNet roll-up's settings on the real images, with the detector's own boxes.

    python tools/calibrate_rollup.py [--data ../shared/data/camtrap-real] [--write]

For every labelled real image (the 100x75 Borneo thumbnails excepted: too small to detect), the
bundled detector's boxes (conf >= 0.2) are cropped at several margins and the classifier's raw
ImageNet logits kept (crop and mirror). Then each setting is scored:
  crop margin x temperature x weight of the "object" helper label (ImageNet artefacts)
on image-level accuracy (label of the best box vs the coarse truth), bear recall (P(bear) >= 0.2
on bear photos) and bear false alarms (non-bear photos with P(bear) >= 0.2).

Choice rule, fixed before looking: most bears caught, then fewest false bears, then accuracy,
then the setting closest to the plain roll-up. `--write` stores the choice in the bundled card.
The images are few (about 45 with an animal box): these figures are a smoke signal, not a claim.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from patou.media import decode
from patou.models.card import ModelCard
from patou.models.classifier import DEFAULT_CARD, Classifier, crop
from patou.models.detector import Detector
from patou.models.rollup import Rollup
from patou.record import ImageRecord

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared/data/camtrap-real"
# LABELS.csv's coarse names -> patou labels (a person beside a vehicle counts as vehicle)
TRUTH = {
    "bear": "bear", "bird": "bird", "bird (heron)": "bird", "cattle": "cattle", "coyote": "wolf",
    "deer": "deer", "dog": "dog", "elephant": "other", "fox": "fox", "human": "human",
    "human;vehicle": "vehicle", "vehicle": "vehicle", "lagomorph": "lagomorph", "lynx_bobcat": "felid",
    "ocelot": "felid", "puma": "felid", "opossum": "other", "skunk": "mustelid", "squirrel": "squirrel",
    "wolf": "wolf",
}
MARGINS = (0.0, 0.1, 0.2)
TEMPERATURES = (0.8, 1.0, 1.2, 1.5)
OBJECT_WEIGHTS = (1.0, 0.3, 0.1, 0.0)
BEAR_ALARM = 0.2  # the recall-first operating point a bear guard would use


def gather(data: Path, clf: Classifier, det: Detector) -> list[dict]:
    items = []
    for row in csv.DictReader(open(data / "LABELS.csv", encoding="utf-8")):
        truth = TRUTH.get(row["label_norm"])
        if truth is None or row["path"].startswith("camtrapR"):
            continue
        path = data / row["path"]
        img = decode(ImageRecord(path=path, root=path.parent))
        if img is None:
            continue
        boxes = [d for d in det.detect(img) if d.conf >= 0.2]
        if not boxes:
            continue
        logits = {}
        for m in MARGINS:
            x = clf.preprocess([crop(img, d.bbox, clf.size, margin=m, pad_value=clf.card.pad_value) for d in boxes])
            logits[m] = clf.session.run(None, {clf._input: np.ascontiguousarray(np.concatenate([x, x[..., ::-1]]))})[0]
        items.append({"file": row["path"], "truth": truth, "n": len(boxes), "logits": logits})
    return items


def score(items, tax: Rollup, labels: list[str], margin: float, temperature: float, object_weight: float):
    prior = {"object": math.log(object_weight)} if object_weight > 0 else {"object": -50.0}
    bear = labels.index("bear")
    out = []
    for it in items:
        p = tax.rollup(it["logits"][margin], temperature, prior, {"object": "other"})
        n = it["n"]
        p = (p[:n] + p[n:]) / 2  # test-time flip
        best = p.max(1).argmax()
        out.append((it, labels[int(p[best].argmax())], float(p[best].max()), float(p[:, bear].max())))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--write", action="store_true", help="store the chosen setting in the bundled card")
    args = ap.parse_args()
    if not (args.data / "LABELS.csv").is_file():
        print(f"skip: real images not found at {args.data}", file=sys.stderr)
        return 0
    card = ModelCard.load(DEFAULT_CARD)
    clf, det = Classifier(card), Detector()
    tax = Rollup.for_card(card)
    items = gather(args.data, clf, det)
    n_bears = sum(it["truth"] == "bear" for it in items)
    print(f"{len(items)} real images with an animal box, {n_bears} of them bears\n")
    print("margin  T    obj_w  correct  bears>=0.2  false_bears>=0.2  min_P(bear|bear)")
    results = []
    for m, t, w in itertools.product(MARGINS, TEMPERATURES, OBJECT_WEIGHTS):
        s = score(items, tax, card.labels, m, t, w)
        correct = sum(lab == it["truth"] for it, lab, _, _ in s)
        caught = sum(pb >= BEAR_ALARM for it, _, _, pb in s if it["truth"] == "bear")
        false = sum(pb >= BEAR_ALARM for it, _, _, pb in s if it["truth"] != "bear")
        min_bear = min((pb for it, _, _, pb in s if it["truth"] == "bear"), default=float("nan"))
        distance = abs(t - 1.0) + abs(math.log(w if w > 0 else 1e-3)) / 10 + m
        results.append(((-caught, false, -correct, distance), (m, t, w), s))
        print(f"{m:5.2f} {t:5.1f} {w:6.2f} {correct:5d}/{len(items)} {caught:7d}/{n_bears} {false:12d} {min_bear:17.2f}")
    _, (m, t, w), s = min(results, key=lambda r: r[0])
    print(f"\nchosen: margin {m}, temperature {t}, object weight {w}")

    print("\nper class (image level, chosen setting): right / images, and what the misses became")
    per: dict[str, Counter] = {}
    for it, lab, _, _ in s:
        per.setdefault(it["truth"], Counter())[lab] += 1
    for truth, c in sorted(per.items()):
        misses = ", ".join(f"{k} {v}" for k, v in c.most_common() if k != truth)
        print(f"  {truth:10s} {c[truth]:2d}/{sum(c.values()):2d}  {misses}")
    print("\nP(bear) on bears:", ", ".join(f"{Path(it['file']).name} {pb:.2f}" for it, _, _, pb in s if it["truth"] == "bear"))
    worst = sorted(((pb, it["file"]) for it, _, _, pb in s if it["truth"] != "bear"), reverse=True)[:3]
    print("highest P(bear) on non-bears:", ", ".join(f"{Path(f).name} {pb:.2f}" for pb, f in worst))
    print("\nthreshold  labelled  right  (images whose best score reaches the threshold)")
    for thr in (0.3, 0.4, 0.5, 0.6, 0.7):
        kept = [(it, lab) for it, lab, sc, _ in s if sc >= thr]
        print(f"  {thr:.1f}     {len(kept):5d}  {sum(lab == it['truth'] for it, lab in kept):5d}")

    if args.write:
        card.extra.update(
            crop_margin=m, temperature=t, log_prior={"object": round(math.log(w), 6)} if w > 0 else {"object": -50.0},
            fold={"object": "other"},
            calibration={"tool": "tools/calibrate_rollup.py", "images": len(items), "bears": n_bears},
        )
        card.save(card.path)
        print(f"wrote {card.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
