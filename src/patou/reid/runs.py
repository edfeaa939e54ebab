"""Re-identification of a finished `patou run`, and the confirmations people make in the review app.

`identify_run` reuses the run's own boxes (no second detection): each image's best animal box is
cropped as the run cropped it, embedded and ranked against a gallery. It writes
RESULTS_DIR/reid-candidates.csv (candidates.csv's columns plus the run's `root` and `file` keys)
and reid.json (gallery, model, threshold). A person's confirmation of a candidate goes to
reid-confirmations.json with the label corrections' lock and atomic replace (one writer at a
time, never a torn file); `export_confirmed` turns them into a `path,individual_id` CSV and can
add the confirmed photos to a KNOWN_DIR (for `reid train` or as gallery), never overwriting a file.
"""
from __future__ import annotations

import csv
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

from patou.media import IMAGE_EXTENSIONS, decode
from patou.atomic import atomic_output
from patou.record import ImageRecord
from patou.reid.embed import DETECTION_THRESHOLD, Embedder, best_box
from patou.reid.gallery import Gallery
from patou.reid.ranking import CANDIDATE_COLUMNS, rank
from patou.results import RunFolder, load_run

CANDIDATES, INFO = RunFolder.REID_CANDIDATES, RunFolder.REID_INFO
CONFIRMED, EXPORT = RunFolder.REID_CONFIRMATIONS, RunFolder.REID_CONFIRMED
COLUMNS = ("root", "file") + CANDIDATE_COLUMNS


def identify_run(results_dir: str | Path, gallery: str | Path, *, model=None, top_k: int = 5,
                 new_threshold: float | None = None, gallery_no_detector: bool = False, cache_dir=None,
                 threads: int | None = None, log=print) -> dict:
    from patou.models.detector import Detector

    out = Path(results_dir)
    run = load_run(out)
    det_t = float(run.options.get("detection_threshold") or DETECTION_THRESHOLD)
    embedder = Embedder(model, threads=threads)
    if new_threshold is None and embedder.card.task == "embedding":
        new_threshold = (embedder.card.extra or {}).get("new_individual_threshold")
    g = Gallery.load(gallery, embedder, no_detector=gallery_no_detector,
                     detector=None if gallery_no_detector else Detector(threads=threads), threshold=det_t,
                     cache_dir=cache_dir)
    for p in g.problems:
        log(p)
    if not g.paths:
        raise ValueError(f"{gallery}: no usable gallery photo")
    keys, crops = [], []
    for r in run.records:
        box = best_box(r.detections, det_t)
        if r.failure or box is None or r.path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        img = decode(ImageRecord(path=r.path, root=r.root))
        if img is None:
            log(f"{r.path}: cannot be read again for re-identification, skipped")
            continue
        keys.append(r)
        crops.append(embedder.crop_box(img, box.bbox))
    rows = []
    if crops:
        ranked = rank(embedder.embed(crops), g.vectors, g.ids, top_k)
        for r, cands in zip(keys, ranked):
            new = "" if new_threshold is None else str(cands[0][1] < new_threshold).lower()
            for n, (ind, score, gi) in enumerate(cands, 1):
                rows.append({"root": str(r.root), "file": r.rel, "query": str(r.path), "rank": n, "individual_id": ind,
                             "score": round(score, 6), "gallery_file": str(g.paths[gi]), "new_individual": new})
    with atomic_output(out / CANDIDATES) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS))
        w.writeheader()
        w.writerows(rows)
    info = {"gallery": str(Path(gallery).absolute()),  # as scan names the gallery files
            "model": embedder.name, "model_path": str(embedder.card.path),
            "top_k": top_k, "new_individual_threshold": new_threshold, "images": len(keys),
            "gallery_photos": len(g.paths), "individuals": len(set(g.ids))}
    with atomic_output(out / INFO) as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    log(f"re-identification: {len(keys)} images ranked against {info['individuals']} individuals -> {out / CANDIDATES}")
    return info


def load_candidates(results_dir: str | Path) -> dict[tuple[str, str], list[dict]]:
    """{(root, file): candidate rows, best first}; empty when the run was not re-identified."""
    path = Path(results_dir) / CANDIDATES
    out: dict[tuple[str, str], list[dict]] = {}
    if not path.is_file():
        return out
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            out.setdefault((row["root"], row["file"]), []).append(row)
    return out


def _read(results_dir: Path) -> dict:
    path = results_dir / CONFIRMED
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8")).get("images", {})


def load_confirmations(results_dir: str | Path) -> dict[tuple[str, str], dict]:
    """{(root, file): {"individual_id", "gallery_file", "verified_by", "verified_at"}}."""
    return {tuple(k.split("|", 1)): v for k, v in _read(Path(results_dir)).items()}


def confirm(results_dir: str | Path, root: str, file: str, individual_id: str | None, verified_by: str = "",
            gallery_file: str = "") -> None:
    """Record that (root, file) shows `individual_id` (None withdraws it): locked merge, atomic write."""
    results_dir = Path(results_dir)
    with RunFolder(results_dir).writers_lock():
        images = _read(results_dir)
        k = f"{Path(root)}|{file}"
        if individual_id is None:
            images.pop(k, None)
        else:
            images[k] = {"individual_id": individual_id, "gallery_file": gallery_file, "verified_by": verified_by,
                         "verified_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        with atomic_output(results_dir / CONFIRMED) as tmp:
            tmp.write_text(json.dumps({"version": 1, "images": images}, indent=1, sort_keys=True) + "\n",
                           encoding="utf-8")


def export_confirmed(results_dir: str | Path, known_dir: str | Path | None = None, log=print) -> tuple[Path, int]:
    """RESULTS_DIR/reid-confirmed.csv (path, individual_id, root, file, verified_by, verified_at);
    with `known_dir`, each confirmed photo is also copied to KNOWN_DIR/<individual_id>/ unless a
    file of that name is there already (reported, never overwritten)."""
    results_dir = Path(results_dir)
    items = sorted(load_confirmations(results_dir).items())
    path = results_dir / EXPORT
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "individual_id", "root", "file", "verified_by", "verified_at"])
        for (root, file), c in items:
            w.writerow([str(Path(root) / file), c["individual_id"], root, file, c["verified_by"], c["verified_at"]])
    if known_dir is not None:
        for (root, file), c in items:
            src = Path(root) / file
            dst = Path(known_dir) / c["individual_id"] / src.name
            if dst.exists():
                log(f"{dst}: already exists, not overwritten")
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                with atomic_output(dst) as tmp:
                    shutil.copyfile(src, tmp)
            except OSError as e:
                log(f"{src}: cannot copy to {dst} ({e.strerror or e})")
    return path, len(items)
