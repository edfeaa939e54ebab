"""What `patou run` finds on the real images, reduced to what must not drift: boxes, labels.

    PYTHONPATH=src python tests/pipeline_snapshot.py --write   # record tests/data/pipeline_reference.json

The reference was recorded with the code before issue 13's speed work (decode, letterbox,
crop and classify changes); tests/test_pipeline_reference.py compares today's outputs with it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "data" / "pipeline_reference.json"
DETECTION_THRESHOLD = 0.2  # patou run's default: boxes at or above it are classified
KEEP_CONF = 0.1  # boxes recorded: below this they are noise that may come and go


def snapshot(real: Path, fast: bool) -> dict:
    """{relative path: {width, height, failure, label, score, boxes: [[x, y, w, h, conf, top label, p]]}}."""
    from patou.decide import decide_image
    from patou.media import scan
    from patou.pipeline import Models, process

    records, _ = scan([real])
    models = Models(fast=fast)
    process(records, models, DETECTION_THRESHOLD)
    out = {}
    for r in records:
        decide_image(r, DETECTION_THRESHOLD, 0.5)
        boxes = []
        for d in r.detections:
            if d.conf < KEEP_CONF:
                continue
            top = d.top()
            boxes.append([*(round(v, 4) for v in d.bbox), round(d.conf, 4),
                          top[0] if top else None, round(top[1], 4) if top else None])
        out[r.rel] = {"width": r.width, "height": r.height, "failure": r.failure, "label": r.label,
                      "score": None if r.score is None else round(r.score, 4), "boxes": boxes}
    return out


def dumps(data: dict) -> str:
    """JSON with one image per line: small, and a diff shows which images changed."""
    lines = ["{"]
    for vi, (variant, images) in enumerate(sorted(data.items())):
        lines.append(f" {json.dumps(variant)}: {{")
        items = sorted(images.items())
        for i, (rel, v) in enumerate(items):
            lines.append(f"  {json.dumps(rel)}: {json.dumps(v, sort_keys=True)}" + ("," if i < len(items) - 1 else ""))
        lines.append(" }" + ("," if vi < len(data) - 1 else ""))
    return "\n".join(lines + ["}"]) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", type=Path, default=ROOT.parent / "shared" / "data" / "camtrap-real")
    ap.add_argument("--write", action="store_true", help=f"write {REFERENCE.relative_to(ROOT)}")
    args = ap.parse_args()
    data = {"float32": snapshot(args.real, fast=False), "fast": snapshot(args.real, fast=True)}
    text = dumps(data)
    if args.write:
        REFERENCE.parent.mkdir(parents=True, exist_ok=True)
        REFERENCE.write_text(text)
        print(f"wrote {REFERENCE}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
