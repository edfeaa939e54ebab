"""Human corrections of a run's labels, kept beside the run (never in the photos).

`RESULTS_DIR/corrections.json` maps each corrected image, keyed by its input root and its path
under that root (the `root` and `file` columns of predictions.csv), to the label a person gave
it, how many animals they counted (when they did), who and when. Writers (the review app, scripts) go through `save_corrections`, which
merges under a lock and replaces the file atomically, so two writers at once never lose or
tear an entry; readers (tables, Camtrap DP, `patou train --labels`) use `load_corrections`.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from .atomic import atomic_output
from .results import RunFolder

CORRECTIONS = RunFolder.CORRECTIONS
VERSION = 1


def _key(root: str | Path, file: str) -> str:
    return f"{Path(root)}|{file}"


def _read(results_dir: Path) -> dict:
    path = RunFolder(results_dir).corrections
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{path}: unreadable corrections ({str(e)[:200]})") from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        version = data.get("version") if isinstance(data, dict) else None
        raise ValueError(f"{path}: corrections format version {version!r}, this patou reads {VERSION}")
    return data.get("images", {})


MAX_COUNT = 10_000  # animals a person may say one photo shows


def load_corrections(results_dir: str | Path) -> dict[tuple[str, str], dict]:
    """{(root, file): {"label", "count" (when given), "verified_by", "verified_at"}} for every corrected image."""
    return {tuple(k.split("|", 1)): v for k, v in _read(Path(results_dir)).items()}


def check_count(count) -> int | None:
    """A person's count: None (not counted) or a whole number from 0 to MAX_COUNT."""
    if count is None or count == "":
        return None
    if isinstance(count, int) and not isinstance(count, bool):
        n = count
    elif isinstance(count, str) and count.strip().isascii() and count.strip().isdigit():
        n = int(count)
    else:
        n = -1
    if not 0 <= n <= MAX_COUNT:
        raise ValueError(f"count {str(count)[:20]!r}: a whole number of animals from 0 to {MAX_COUNT}")
    return n


def save_corrections(results_dir: str | Path, items: Iterable[tuple], verified_by: str = "") -> int:
    """Record (root, file, label) or (root, file, label, count) corrections; label None withdraws
    one. Returns how many changed."""
    results_dir = Path(results_dir)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    items = [(root, file, label, check_count(rest[0] if rest else None)) for root, file, label, *rest in items]
    with RunFolder(results_dir).writers_lock():
        images = _read(results_dir)
        changed = 0
        for root, file, label, count in items:
            k = _key(root, file)
            if label is None:
                changed += images.pop(k, None) is not None
            else:
                images[k] = {"label": label, "verified_by": verified_by, "verified_at": now}
                if count is not None:
                    images[k]["count"] = count
                changed += 1
        with atomic_output(RunFolder(results_dir).corrections) as tmp:
            tmp.write_text(json.dumps({"version": VERSION, "images": images}, indent=1, sort_keys=True) + "\n",
                           encoding="utf-8")
    return changed


def corrected_label(corrections: dict, root: str | Path, file: str) -> dict | None:
    return corrections.get((str(Path(root)), file))



TRAIN_LABELS = RunFolder.TRAIN_LABELS


def write_train_labels(results_dir: str | Path, records: Iterable | None = None,
                       path: str | Path | None = None) -> tuple[Path, int]:
    """The corrected images as a `path,label` CSV that `patou train --labels` reads.

    `path` is absolute (the training reader resolves relative paths against the CSV's folder,
    which is the results folder, not the photos'); `root` and `file` repeat the predictions'
    key and `site` comes from the run's records when given. Returns (csv path, rows written).
    """
    import csv

    results_dir = Path(results_dir)
    path = Path(path) if path else results_dir / TRAIN_LABELS
    sites = {(str(r.root), r.rel): r.site for r in records or ()}
    rows = [[str(Path(root) / file), c["label"], sites.get((root, file), ""), root, file]
            for (root, file), c in sorted(load_corrections(results_dir).items())]
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "site", "root", "file"])
        w.writerows(rows)
    return path, len(rows)
