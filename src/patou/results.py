"""A results folder: the contract between `patou run` and what comes after (review app, Camtrap DP
export, training on corrected labels, re-identification).

`RunFolder` owns RESULTS_DIR: the name of every file patou keeps there, the lock that lets one run
at a time write it, the clean-up of what a killed run left, and the writing and reading of its
records. `patou run` writes `RESULTS_DIR/records.jsonl`: one decided ImageRecord per line (boxes
with class scores, image and event verdicts), in the order of predictions.csv. `load_run` gives the
records back with run.json, so later tools rewrite tables from the same records the run wrote
instead of parsing spreadsheets.

The run lock is an flock on RESULTS_DIR/.patou/lock: the kernel drops it when its process dies, so
a run killed with -9 never leaves the folder stuck, and a live run's folder is never written by
another. Writers of the files people change (corrections, re-identification confirmations) take
`writers_lock`, a shorter lock of their own.
"""
from __future__ import annotations

import json
import os
import re
import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from . import __version__
from .atomic import atomic_output
from .record import ImageRecord, in_output_order

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are then not guarded against each other
    fcntl = None

RECORDS = "records.jsonl"
RESULTS_VERSION = 2  # bump when records.jsonl or run.json change incompatibly (2: counts)
READS = (1, 2)  # the formats this patou reads: a format-1 folder gets its counts on loading
# the temp names patou.atomic gives (".<name>.<8 hex>.tmp"): nobody else's files
_ATOMIC_TMP = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")
_writers_in_process = threading.Lock()


class RunFolder:
    """RESULTS_DIR and the files in it. Paths only: nothing is created until something is written."""

    RUN_INFO = "run.json"
    RECORDS = RECORDS
    PREDICTIONS_CSV = "predictions.csv"
    PREDICTIONS_XLSX = "predictions.xlsx"
    MEGADETECTOR = "megadetector.json"
    CORRECTIONS = "corrections.json"
    TRAIN_LABELS = "verified-labels.csv"  # the corrected images as `patou train --labels` reads them
    REID_CANDIDATES = "reid-candidates.csv"
    REID_INFO = "reid.json"
    REID_CONFIRMATIONS = "reid-confirmations.json"
    REID_CONFIRMED = "reid-confirmed.csv"
    REPORT = "report.html"  # `patou report`'s page when no --out is given
    # the results a person downloads from the review app's run page
    DOWNLOADS = (PREDICTIONS_CSV, PREDICTIONS_XLSX, MEGADETECTOR, RUN_INFO, CORRECTIONS)

    def __init__(self, out: str | Path):
        self.out = Path(out)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.out)!r})"

    @property
    def hidden(self) -> Path:
        """RESULTS_DIR/.patou: the run's own state (lock, checkpoint, sort plan, thumbnails)."""
        return self.out / ".patou"

    run_info = property(lambda self: self.out / self.RUN_INFO)
    records = property(lambda self: self.out / self.RECORDS)
    predictions_csv = property(lambda self: self.out / self.PREDICTIONS_CSV)
    predictions_xlsx = property(lambda self: self.out / self.PREDICTIONS_XLSX)
    megadetector = property(lambda self: self.out / self.MEGADETECTOR)
    corrections = property(lambda self: self.out / self.CORRECTIONS)
    checkpoint = property(lambda self: self.hidden / "checkpoint.jsonl")
    sort_plan = property(lambda self: self.hidden / "sort-plan.json")  # a killed run's sort is finished from it
    thumbs = property(lambda self: self.hidden / "thumbs")

    # ------------------------------------------------------------------ locks
    def lock(self) -> "OutLock":
        """The run lock, held until its release() (or until it is collected, e.g. after an error)."""
        return OutLock(self.out)

    @contextmanager
    def writers_lock(self) -> Iterator[None]:
        """One writer at a time of the files people change: a thread lock in this process, an OS
        lock file across processes."""
        with _writers_in_process:
            lock = open(self.out / ".corrections.lock", "a+")
            try:
                try:
                    import fcntl as flock
                except ImportError:  # Windows: msvcrt locks the first byte
                    import msvcrt

                    msvcrt.locking(lock.fileno(), msvcrt.LK_LOCK, 1)
                else:
                    flock.flock(lock.fileno(), flock.LOCK_EX)
                yield
            finally:
                lock.close()  # closing releases either lock

    def clean_stale_temps(self) -> list[Path]:
        """Remove the atomic-write temp files a killed run left in RESULTS_DIR and .patou.

        Only called with the run lock held, so no live run of ours is writing them."""
        gone = []
        for folder in (self.out, self.hidden):
            try:
                names = os.listdir(folder)
            except OSError:
                continue
            for name in names:
                p = folder / name
                if _ATOMIC_TMP.match(name) and p.is_file() and not p.is_symlink():
                    p.unlink(missing_ok=True)
                    gone.append(p)
        return gone

    # ------------------------------------------------------------------ writing
    def write_records(self, records: list[ImageRecord]) -> Path:
        with atomic_output(self.records) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for r in in_output_order(records):
                f.write(json.dumps(r.to_json()) + "\n")
        return self.records

    def write_run_info(self, info: dict) -> Path:
        """run.json, with the versions that tell a later patou whether it can read the folder."""
        data = {"patou_version": __version__, "results_version": RESULTS_VERSION, **info}
        with atomic_output(self.run_info) as tmp:
            tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
        return self.run_info

    # ------------------------------------------------------------------ reading
    def read_info(self) -> dict:
        """run.json, once the folder is known to be readable (records not read); a folder that is
        not a patou run, or from an incompatible patou, is a ValueError naming the folder and the reason."""
        out, info_path, rec_path = self.out, self.run_info, self.records
        if not info_path.is_file():
            raise ValueError(f"{out}: not a patou results folder (no run.json)")
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
            if not isinstance(info, dict):
                raise ValueError(f"{type(info).__name__}, not an object")
        except (ValueError, RecursionError) as e:
            raise ValueError(f"{info_path}: unreadable ({e})") from None
        version = info.get("results_version")
        if version not in READS or not rec_path.is_file():
            raise ValueError(
                f"{out}: written by patou {info.get('patou_version', '?')} (results format {version}); "
                f"this patou {__version__} reads formats {', '.join(map(str, READS))}: run `patou run` again on "
                "the photos")
        return info

    def load(self) -> "Run":
        """run.json (checked as in `read_info`) and the decided records."""
        info, rec_path = self.read_info(), self.records
        records = []
        with open(rec_path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                try:
                    records.append(ImageRecord.from_json(json.loads(line)))
                except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
                    raise ValueError(f"{rec_path}: line {n} unreadable ({str(e)[:200]})") from None
        if info.get("results_version") == 1:  # before counts: made now from the boxes, as a run makes them
            count_old_records(records, info.get("options") or {})
        return Run(self.out, records, info)


@dataclass
class Run:
    out: Path
    records: list[ImageRecord]
    info: dict  # run.json

    @property
    def options(self) -> dict:
        return self.info.get("options", {})

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.out)

    @property
    def input_roots(self) -> list[Path]:
        """What a sort or a media copy may take files from: the inputs run.json names, when absolute
        (a relative one depended on the run's working folder), else the records' own roots."""
        inputs = self.options.get("inputs") if isinstance(self.options, dict) else None
        given = [Path(p) for p in inputs if isinstance(p, str)] if isinstance(inputs, list) else []
        if given and all(p.is_absolute() for p in given):
            return given
        return sorted({r.root for r in self.records}, key=str)


def count_old_records(records: list[ImageRecord], options: dict) -> None:
    """`count` and `event_count` for records a format-1 run wrote, from their boxes and the run's thresholds."""
    from .decide import count_boxes, event_count
    from .options import Thresholds

    det_t, thr = float(options.get("detection_threshold") or 0.2), Thresholds.from_options(options)
    events: dict[str, list[ImageRecord]] = {}
    for r in records:
        r.count = count_boxes(r, r.label, det_t, thr)
        if r.event_id is not None:
            events.setdefault(r.event_id, []).append(r)
    for event in events.values():
        n = event_count(event, event[0].event_label, det_t, thr)
        for r in event:
            r.event_count = n


def write_records(records: list[ImageRecord], out: str | Path) -> Path:
    return RunFolder(out).write_records(records)


def read_run_info(out: str | Path) -> dict:
    """RESULTS_DIR's run.json (see `RunFolder.read_info`)."""
    return RunFolder(out).read_info()


def load_run(out: str | Path) -> Run:
    """Read RESULTS_DIR back: run.json and the decided records (see `RunFolder.load`)."""
    return RunFolder(out).load()


class OutFolderBusy(ValueError):
    pass


class OutLock:
    """Held from construction until release() (or until this object is collected, e.g. after an error)."""

    def __init__(self, out: Path):
        self.out = Path(out)
        path = self.out / ".patou" / "lock"
        try:  # the first write of a run: a read-only or full --out stops it here, before any analysis
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise ValueError(f"--out {self.out}: cannot write the results there ({e.strerror or e})") from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
                os.close(fd)
                raise OutFolderBusy(f"--out {self.out}: in use by another patou run (pid {holder}); "
                                    "wait for it to finish or choose another folder") from None
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        self._finalizer = weakref.finalize(self, os.close, fd)

    def release(self) -> None:
        self._finalizer()  # closing the descriptor drops the flock
