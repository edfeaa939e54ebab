"""Per-image tables (CSV, XLSX): what a user opens first after a run.

One function builds the rows; both writers use it, so the two files can never disagree.
"""
from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Iterable

from patou.atomic import atomic_output
from patou.record import EMPTY, ImageRecord, in_output_order
from patou.video import is_video

BASE_COLUMNS = ["file", "root", "site", "event_id", "timestamp", "timestamp_source", "width", "height", "detections",
                "max_detection_conf", "label", "score", "count", "event_label", "event_score", "event_count"]
TARGET_COLUMNS = ["target_score", "event_target_score"]
VIDEO_COLUMNS = ["frame_rate", "frames_processed"]  # only when the run has videos
SOURCE_COLUMNS = ["speciesnet_label", "speciesnet_score"]  # only when the boxes came with their own labels
VERIFIED_COLUMNS = ["verified_label", "verified_by", "verified_count"]  # human corrections (corrections.py)
EVENT_FILES_SHOWN = 5


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def build_rows(records: Iterable[ImageRecord], detection_threshold: float,
               target: str | None = None, corrections: dict | None = None) -> tuple[list[str], list[list]]:
    """Header and one row per image (sorted by root, then rel); None means an empty cell.

    With `corrections` (load_corrections's dict, possibly empty) the rows end with the human
    label, who gave it and the animals they counted; the machine's columns stay as the run
    decided them. `count` is the photo's boxes of its label at or above the threshold,
    `event_count` its event's MaxN (decide.py).
    """
    records = in_output_order(records)
    videos = any(is_video(r.path) for r in records)
    sourced = any(r.source_label is not None for r in records)
    header = BASE_COLUMNS + (TARGET_COLUMNS if target else []) + (VIDEO_COLUMNS if videos else [])
    header += (SOURCE_COLUMNS if sourced else []) + ["failure"]
    header += VERIFIED_COLUMNS if corrections is not None else []
    rows = []
    for r in records:
        confs = [d.conf for d in r.detections]
        # A failed file was never looked at: its box count is unknown, not zero.
        n_boxes = None if r.failure else sum(c >= detection_threshold for c in confs)
        row = [r.rel, str(r.root), r.site, r.event_id,
               r.timestamp.isoformat() if r.timestamp else None, r.timestamp_source, r.width, r.height, n_boxes,
               _r(max(confs)) if confs else None, r.label, _r(r.score), r.count, r.event_label,
               _r(r.event_score), r.event_count]
        if target:
            row += [_r(r.target_score), _r(r.event_target_score)]
        if videos:  # frames_processed: how many frames were analysed
            row += [r.frame_rate, None if r.frames_processed is None else len(r.frames_processed)]
        if sourced:
            row += [r.source_label, _r(r.source_score)]
        row.append(r.failure)
        if corrections is not None:
            c = corrections.get((str(r.root), r.rel))
            row += [c["label"], c.get("verified_by") or None, c.get("count")] if c else [None, None, None]
        rows.append(row)
    return header, rows


def write_csv(records: Iterable[ImageRecord], path: str | Path, detection_threshold: float,
              target: str | None = None, corrections: dict | None = None) -> Path:
    header, rows = build_rows(records, detection_threshold, target, corrections)
    with atomic_output(path) as tmp:
        # Plain UTF-8 without BOM: R's read.csv and most scripts would keep a BOM in the first name.
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows([["" if v is None else v for v in row] for row in rows])
    return Path(path)


def build_event_rows(records: Iterable[ImageRecord], target: str | None = None) -> tuple[list[str], list[list]]:
    """One row per event, in order of first timestamp (events without time last)."""
    groups: dict[str, list[ImageRecord]] = defaultdict(list)
    for r in in_output_order(records):
        if r.event_id is not None:
            groups[r.event_id].append(r)
    header = (["event_id", "site", "first_timestamp", "last_timestamp", "n_images", "n_nonempty",
               "event_label", "event_score", "event_count"] + (["event_target_score"] if target else []) + ["files"])
    rows = []
    for eid, rs in groups.items():
        times = sorted(r.timestamp for r in rs if r.timestamp)
        first = rs[0]
        files = ", ".join(r.rel for r in rs[:EVENT_FILES_SHOWN])
        if len(rs) > EVENT_FILES_SHOWN:
            files += f" (+{len(rs) - EVENT_FILES_SHOWN} more)"
        row = [eid, first.site, times[0].isoformat() if times else None,
               times[-1].isoformat() if times else None, len(rs),
               sum(r.label not in (None, EMPTY) for r in rs), first.event_label, _r(first.event_score),
               first.event_count]
        if target:
            row.append(_r(first.event_target_score))
        rows.append((times[0].isoformat() if times else "~", eid, row + [files]))
    return header, [row for *_, row in sorted(rows, key=lambda t: (t[0], t[1]))]


def build_count_rows(records: Iterable[ImageRecord]) -> tuple[list[str], list[list]]:
    """Per label: images with that verdict, events with that event verdict (most frequent first),
    and animals: the sum of those events' MaxN."""
    images: dict[str, int] = defaultdict(int)
    events: dict[str, dict] = defaultdict(dict)
    for r in records:
        if r.label is not None:
            images[r.label] += 1
        if r.event_label is not None and r.event_id is not None:
            events[r.event_label][r.event_id] = r.event_count
    labels = sorted(set(images) | set(events), key=lambda k: (-images.get(k, 0), k))
    return ["label", "images", "events", "animals"], [
        [k, images.get(k, 0), len(events.get(k, {})), sum(n or 0 for n in events.get(k, {}).values())]
        for k in labels]


def write_xlsx(records: Iterable[ImageRecord], path: str | Path, detection_threshold: float,
               target: str | None = None, corrections: dict | None = None) -> Path:
    from openpyxl import Workbook  # imported here: only this writer needs it

    records = list(records)
    wb = Workbook()
    wb.remove(wb.active)
    for name, (header, rows) in [("images", build_rows(records, detection_threshold, target, corrections)),
                                 ("events", build_event_rows(records, target)),
                                 ("counts", build_count_rows(records))]:
        _sheet(wb.create_sheet(name), header, rows)
    with atomic_output(path) as tmp:
        wb.save(tmp)
    return Path(path)


def _sheet(ws, header: list[str], rows: list[list]) -> None:
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    ws.append(header)
    for row in rows:
        # Control characters (possible in failure texts) make openpyxl raise; drop them.
        ws.append([ILLEGAL_CHARACTERS_RE.sub("", v) if isinstance(v, str) else v for v in row])
    for row in ws.iter_rows(min_row=2):
        for cell in row:
            # A file named "=x.jpg" must stay text, not become a formula.
            if isinstance(cell.value, str) and cell.value.startswith("="):
                cell.data_type = "s"
    for cell in ws[1]:
        cell.font = Font(bold=True)
    ws.freeze_panes = "A2"
    if rows:
        ws.auto_filter.ref = ws.dimensions
    for i, name in enumerate(header):
        # Width from the header and a sample of values: enough to read, capped for long paths.
        longest = max([len(name)] + [len(str(r[i])) for r in rows[:2000] if r[i] is not None])
        ws.column_dimensions[get_column_letter(i + 1)].width = min(max(longest + 2, 8), 60)
