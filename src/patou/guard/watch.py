"""Hand on each new image of a watched folder once it is fully written, in arrival order.

inotify (through watchdog) says when a file is created, written, closed or renamed in; a file is
ready at its close-write (or rename into the folder) when nothing changed since, or else once its
size and mtime have not moved for `settle` seconds (the only sign a network or FTP mount gives).
A rescan of the folder every `rescan` seconds catches what events missed (files present at start,
mounts without inotify); with `poll` set, rescans are all there is. Between events the watcher
blocks on a queue: no busy loop, near-zero idle CPU.
"""
from __future__ import annotations

import os
import queue
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..media import IMAGE_EXTENSIONS, is_media_type

# names cameras, FTP servers and copy tools give files still being written
TEMP_SUFFIXES = (".tmp", ".temp", ".part", ".partial", ".crdownload", ".filepart", ".download", "~")


def wanted(name: str) -> bool:
    low = name.lower()
    if name.startswith((".", "~")) or low.endswith(TEMP_SUFFIXES):
        return False
    return os.path.splitext(low)[1] in IMAGE_EXTENSIONS


def stat_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns) if st.st_size > 0 else None  # 0 bytes: just created


@dataclass
class _Candidate:
    seq: int
    key: tuple[int, int] | None
    changed: float  # monotonic time of the last change seen
    closed: bool = False


class Watcher:
    def __init__(self, root: str | Path, settle: float = 1.0, poll: float | None = None, rescan: float = 30.0,
                 exclude: list[str | Path] = (), is_done: Callable[[str, tuple[int, int]], bool] = lambda p, k: False,
                 log: Callable[[str], None] = print):
        self.root = Path(root).absolute()
        self.settle, self.poll, self.log = settle, poll, log
        self.rescan_every = poll if poll else rescan
        self.exclude = [os.path.realpath(p) for p in exclude]
        self.is_done = is_done
        self._q: queue.Queue = queue.Queue()
        self._cand: dict[str, _Candidate] = {}
        self._seq = 0
        self._next_rescan = 0.0
        self._unread: set[str] = set()  # photos of a type patou skips, already reported
        self._observer = None
        self.mode = "polling"

    # -- life cycle ------------------------------------------------------------------------------
    def start(self) -> None:
        if not self.root.is_dir():
            raise ValueError(f"{self.root}: no such folder to watch")
        if self.poll is None:
            try:
                self._observer = self._inotify()
                self.mode = "inotify"
            except Exception as e:  # inotify limits, exotic filesystems: polling still works
                self.log(f"warning: cannot watch {self.root} for events ({e}); polling every 2 s")
                self.rescan_every = self.poll = 2.0
        self._next_rescan = 0.0  # first wait() scans what is already there

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
        self.wake()

    def wake(self) -> None:
        """Make a blocked wait() return (e.g. to stop)."""
        self._q.put(("wake", ""))

    def _inotify(self):
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        q = self._q

        class Handler(FileSystemEventHandler):
            def on_any_event(self, ev):
                kind = ev.event_type
                if kind == "moved":
                    q.put(("closed" if not ev.is_directory else "dir", os.fsdecode(ev.dest_path)))
                elif ev.is_directory:
                    if kind == "created":
                        q.put(("dir", os.fsdecode(ev.src_path)))
                elif kind == "closed":
                    q.put(("closed", os.fsdecode(ev.src_path)))
                elif kind in ("created", "modified"):
                    q.put(("changed", os.fsdecode(ev.src_path)))

        obs = Observer()
        obs.schedule(Handler(), str(self.root), recursive=True)
        obs.start()
        return obs

    # -- candidates ----------------------------------------------------------------------------
    def _skip(self, path: str) -> bool:
        if not wanted(os.path.basename(path)):
            suffix = os.path.splitext(path)[1].lower()
            if path not in self._unread and is_media_type(suffix) and not os.path.basename(path).startswith("."):
                self._unread.add(path)  # said once per file: a camera set to HEIC must not look like a quiet night
                self.log(f"warning: {path}: the guard reads photos of types {' '.join(sorted(IMAGE_EXTENSIONS))}, "
                         f"not {suffix}: skipped (set the camera to JPEG)")
            return True
        rel = os.path.relpath(path, self.root)
        if rel.startswith(os.pardir) or any(p.startswith(".") for p in Path(rel).parts[:-1]):
            return True
        real = os.path.realpath(path)
        return any(real == x or real.startswith(x + os.sep) for x in self.exclude)

    def _note(self, path: str, closed: bool, now: float) -> None:
        if self._skip(path):
            return
        key = stat_key(path)
        c = self._cand.get(path)
        if c is None:
            if key is not None and self.is_done(path, key):
                return
            self._seq += 1
            # unchanged since its mtime: a file found by a poll or rescan that was written more
            # than `settle` s ago is ready at once (a partial one is caught by the decode retry)
            age = time.time() - key[1] / 1e9 if key is not None else 0.0
            c = self._cand[path] = _Candidate(self._seq, key, now - min(max(age, 0.0), self.settle))
        elif key != c.key:
            c.key, c.changed = key, now
        c.closed = closed and key is not None

    def _scan(self, now: float) -> None:
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                                 and os.path.realpath(os.path.join(dirpath, d)) not in self.exclude)
            # files already there: oldest first, the order they arrived in
            found = []
            for name in filenames:
                p = os.path.join(dirpath, name)
                if p not in self._cand and not self._skip(p):
                    k = stat_key(p)
                    if k is not None and not self.is_done(p, k):
                        found.append((k[1], name, p))
            for _, _, p in sorted(found):
                self._note(p, False, now)

    def retry(self, path: str | Path, delay: float = 0.0) -> None:
        """Hand a file on again once it changes and settles, or after `delay` s unchanged
        (e.g. it decoded as truncated: maybe its writer only paused)."""
        path = str(path)
        self._seq += 1
        self._cand[path] = _Candidate(self._seq, stat_key(path), time.monotonic() + max(0.0, delay - self.settle))

    def _apply(self, kind: str, path: str, now: float) -> None:
        if kind == "dir":  # a folder created or moved in: its files may predate its watch
            self._next_rescan = 0.0
        elif kind in ("changed", "closed"):
            self._note(path, kind == "closed", now)

    def _ready(self, now: float) -> tuple[list[str], float | None]:
        """Files ready now (arrival order) and when the next one may become ready."""
        ready, next_at = [], None
        for path, c in list(self._cand.items()):
            key = stat_key(path)
            if key is None:
                if not os.path.exists(path):
                    del self._cand[path]  # gone (moved away, deleted)
                    continue
            if key != c.key:
                c.key, c.changed, c.closed = key, now, False
            if key is None:
                continue  # still empty: wait for its writes
            if c.closed or now - c.changed >= self.settle:
                ready.append((c.seq, path))
                del self._cand[path]
            else:
                t = c.changed + self.settle
                next_at = t if next_at is None else min(next_at, t)
        return [p for _, p in sorted(ready)], next_at

    def wait(self, timeout: float | None = None) -> list[Path]:
        """Block until files are ready (returned in arrival order), or timeout / wake (-> [])."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            now = time.monotonic()
            if now >= self._next_rescan:
                self._scan(now)
                self._next_rescan = now + self.rescan_every
            while True:  # everything already queued
                try:
                    kind, path = self._q.get_nowait()
                except queue.Empty:
                    break
                if kind == "wake":
                    return []
                self._apply(kind, path, now)
            ready, next_at = self._ready(now)
            if ready:
                return [Path(p) for p in ready]
            wake_at = min(t for t in (next_at, self._next_rescan, deadline) if t is not None)
            if deadline is not None and now >= deadline:
                return []
            try:
                kind, path = self._q.get(timeout=max(0.0, wake_at - time.monotonic()))
            except queue.Empty:
                continue
            if kind == "wake":
                return []
            self._apply(kind, path, time.monotonic())

