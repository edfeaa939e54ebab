"""The live guard: watch a folder, decide each image at once, fire, log, archive; never stop.

One loop does everything that touches the models (loaded once): wait for ready files, decode,
detect, classify, `decide_image`, then the Tracker's event/cooldown rule. The image, its event and
its trigger are committed in one transaction before the actions start, and the actions run in
their own threads. Every fault (unreadable image, model error, full disk, dead endpoint) is
logged and costs at most that image or that action.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Callable

from .. import __version__
from ..decide import decide_image
from ..media import site_of
from ..options import GUARD_THRESHOLD, THRESHOLD, GuardOptions
from ..pipeline import Analyser
from ..sort import FAILED_DIR, sort_files
from ..record import ImageRecord
from .actions import Dispatcher, parse_action
from .journal import Journal
from .state import FIRED
from .watch import Watcher, stat_key

DEFAULT_GUARD_THRESHOLD = GUARD_THRESHOLD  # how it was chosen: patou/options.py
OPTIONS = GuardOptions()  # the defaults of `patou guard`'s options
STALE = "stale"  # an alarm on an image that arrived too long ago to be worth scaring anything
# A file that decodes as truncated may be half-written by a writer that pauses longer than --settle
# (FTP, SD card): it is read again, at growing intervals, for this many seconds.
PARTIAL_GRACE = 30.0
# failure texts of a file that may still be arriving: its head alone is "not an image", "truncated"
_MAYBE_PARTIAL = ("truncated", "not an image", "empty file")


def maybe_partial(failure: str | None) -> bool:
    return bool(failure) and any(sign in failure.lower() for sign in _MAYBE_PARTIAL)


class Guard:
    def __init__(
        self,
        watch: str | Path,
        *,
        actions: list[str] = OPTIONS.actions,
        model: str | Path | None = OPTIONS.model,
        target: str = OPTIONS.target,
        threshold: float = OPTIONS.threshold,
        detection_threshold: float = OPTIONS.detection_threshold,
        cooldown: float = OPTIONS.cooldown,
        event_gap: float = OPTIONS.event_gap,
        db: str | Path = OPTIONS.db,
        archive: str | Path | None = OPTIONS.archive,
        fast: bool = OPTIONS.fast,
        threads: int | None = OPTIONS.threads,
        flip: bool = OPTIONS.flip,
        settle: float = OPTIONS.settle,
        poll: float | None = OPTIONS.poll,
        rescan: float = 30.0,
        action_timeout: float = OPTIONS.action_timeout,
        max_age: float | None = OPTIONS.max_age,
        site_depth: int | None = OPTIONS.site_depth,
        partial_grace: float = PARTIAL_GRACE,
        log: Callable[[str], None] = print,
        models: Analyser | None = None,
        pin_factory=None,
    ):
        self.watch = Path(watch).absolute()
        if not self.watch.is_dir():
            raise ValueError(f"{self.watch}: no such folder to watch")
        self.archive = Path(archive).absolute() if archive else None
        self.target, self.threshold, self.detection_threshold = target, threshold, detection_threshold
        self.max_age, self.site_depth, self.log = max_age, site_depth, log
        self.partial_grace = partial_grace
        self.actions = [parse_action(a, action_timeout, pin_factory=pin_factory) for a in actions]
        self.models = models or Analyser(model, threads=threads, flip=flip, fast=fast)
        if target not in self.models.classifier.labels:
            raise ValueError(f"--target {target!r} is not a label of the model "
                             f"({', '.join(self.models.classifier.labels)})")
        self.journal = Journal(db)
        self.tracker = self.journal.tracker(threshold, cooldown, event_gap)
        self.done = self.journal.processed_keys()
        self.dispatcher = Dispatcher(self.actions, self.journal, log)
        self.watcher = Watcher(self.watch, settle=settle, poll=poll, rescan=rescan,
                               exclude=[self.archive] if self.archive else [],
                               is_done=lambda p, k: (p, *k) in self.done, log=log)
        self._tries: dict[str, tuple[int, float]] = {}  # path -> (reads, first truncated read)
        self._stop = False
        self.processed = 0

    # -- running -------------------------------------------------------------------------------
    def run(self, max_files: int | None = None, timeout: float | None = None) -> None:
        """Watch until stop() (or max_files processed / timeout seconds: for tests and benchmarks)."""
        self.watcher.start()
        self.log(f"patou guard: watching {self.watch} ({self.watcher.mode}), target {self.target} "
                 f">= {self.threshold:g}, {len(self.actions)} action(s), log {self.journal.path}")
        self._resume()
        end = None if timeout is None else time.monotonic() + timeout
        try:
            while not self._stop:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    break
                for path in self.watcher.wait(left):
                    if self._stop:
                        break
                    self.handle_safely(path)
                    if max_files is not None and self.processed >= max_files:
                        self._stop = True
        finally:
            self.close()

    def stop(self) -> None:
        """Ask run() to return (safe from a signal handler or another thread)."""
        self._stop = True
        self.watcher.wake()

    def close(self, wait_actions: bool = True) -> None:
        self.watcher.stop()
        self.dispatcher.close(wait=wait_actions)
        self.journal.close()

    def _resume(self) -> None:
        """After a restart: actions of recent triggers that never started, archiving left undone."""
        since = time.time() - self.max_age if self.max_age else 0.0
        for tid, event in self.journal.undispatched(since):
            self.log(f"resuming trigger {tid} (its actions had not started when the guard stopped)")
            self.dispatcher.fire(tid, event)
        if self.archive:
            for path, size, mtime_ns, status in self.journal.unarchived():
                if stat_key(path) == (size, mtime_ns):
                    self._archive((path, size, mtime_ns), Path(path), failed=status == "failed")

    def handle_safely(self, path: Path) -> None:
        try:
            self.handle(path)
        except Exception as e:  # whatever it is, the guard goes on with the next file
            self.log(f"error: {path}: {type(e).__name__}: {e}")
            try:
                self.journal.failure(str(path), "guard", f"{type(e).__name__}: {e}")
            except Exception:
                pass

    # -- one image -----------------------------------------------------------------------------
    def handle(self, path: Path) -> dict | None:
        """Decide one ready file; returns the trigger payload when it alarmed."""
        key = stat_key(str(path))
        if key is None:
            return None  # gone or emptied since it was ready
        k = (str(path), *key)
        if k in self.done:
            return None
        arrived = key[1] / 1e9  # its last write: when it arrived, also for files found at start
        record = ImageRecord(path=path, root=self.watch, site=site_of(self.watch, path, self.site_depth))
        loaded = self.models.load(record)
        if loaded is None and maybe_partial(record.failure):
            n, first = self._tries.get(str(path), (0, time.monotonic()))
            if time.monotonic() - first < self.partial_grace:  # the guard's clock: mtimes may be skewed
                self._tries[str(path)] = (n + 1, first)
                delay = self.watcher.settle * 2 ** n
                self.watcher.retry(path, delay=delay)
                self.log(f"partial: {path}: {record.failure}; looking again once it changes or in {delay:g} s")
                return None
        self._tries.pop(str(path), None)
        if loaded is not None:
            self.models.analyse_safely(loaded, record, self.detection_threshold)
        decide_image(record, self.detection_threshold, THRESHOLD, self.target)
        self.processed += 1
        if record.failure:
            self.log(f"failed: {path}: {record.failure}")
            self._commit(k, arrived, record, None, "", None, None)
            self._archive(k, path, failed=True)
            return None

        clock, source = (record.timestamp, "exif") if record.timestamp else (datetime.fromtimestamp(arrived), "arrival")
        d = self.tracker.observe(record.site, clock, record.target_score, bool(record.scores))
        trigger = None
        if d.outcome:
            outcome = d.outcome
            if outcome == FIRED and self.max_age and time.time() - arrived > self.max_age:
                outcome = STALE
            trigger = {
                "patou_version": __version__, "trigger_id": None, "event_id": d.event.id, "site": record.site,
                "target": self.target, "score": round(d.target_score, 6), "event_mean": round(d.event.mean, 6),
                "threshold": self.threshold, "reason": d.reason, "outcome": outcome, "image": str(path),
                "image_time": clock.isoformat(), "clock_source": source, "label": record.label,
                "boxes": sum(1 for b in record.detections if b.conf >= self.detection_threshold),
                "fired_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            }
        tid = self._commit(k, arrived, record, clock, source, d.event, trigger)
        if trigger:
            trigger["trigger_id"] = tid
            self.log(f"{trigger['outcome'].upper()}: {path.name} site {record.site} event {d.event.id}: "
                     f"P({self.target}) {d.target_score:.2f}, event mean {d.event.mean:.2f} ({d.reason})")
            if trigger["outcome"] == FIRED:
                self.dispatcher.fire(tid, trigger, arrived)
        self._archive(k, path, failed=False)
        return trigger

    def _commit(self, k, arrived, record, clock, source, event, trigger) -> int | None:
        try:
            tid = self.journal.record_image(k, arrived, record, clock, source, event, trigger)
        except Exception as e:  # e.g. a full disk: the deterrent still fires, the file is not redone now
            tid = None
            self.log(f"error: cannot log {k[0]}: {type(e).__name__}: {e}")
        self.done.add(k)
        return tid

    def _archive(self, k: tuple, path: Path, failed: bool) -> None:
        """Move the file out (no-clobber move of `patou run --sort`); a taken name gets a -N suffix."""
        if not self.archive:
            return
        if stat_key(str(path)) != tuple(k[1:]):  # written to since it was read: never archive a
            self.log(f"partial: {path}: changed since it was analysed; analysed again, then archived")
            self.watcher.retry(path)  # half photo (across filesystems the rest would be lost)
            return
        rel = PurePosixPath(path.relative_to(self.watch).as_posix())
        base = self.archive / FAILED_DIR / rel if failed else self.archive / rel
        messages: list[str] = []
        for n in range(100):
            dst = base if n == 0 else base.with_name(f"{base.stem}-{n}{base.suffix}")
            rep = sort_files([(path, dst)], "move", log=messages.append, sort_dir=self.archive)
            if rep.done or rep.skipped:
                try:
                    self.journal.set_archived(k, str(dst))
                except Exception as e:
                    self.log(f"error: cannot log the archiving of {path}: {e}")
                return
            if not rep.clashes:
                break
        msg = messages[-1] if messages else f"{path}: could not be archived"
        self.log(msg)
        try:
            self.journal.failure(str(path), "archive", msg)
        except Exception:
            pass
