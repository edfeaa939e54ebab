"""The guard's SQLite log: processed files, events, triggers, action attempts, failures.

It is also the guard's memory across restarts: a file is processed once per (path, size, mtime)
and the open events and last firing per site are rebuilt from it, so a restart neither re-fires
nor skips anything. WAL mode lets `patou guard --status` read while the guard writes;
synchronous=FULL because the small computer this runs on loses power rather than crashes.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from datetime import datetime
from pathlib import Path

from .state import FIRED, OpenEvent, Tracker

SCHEMA = """
CREATE TABLE IF NOT EXISTS files(
  path TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
  arrived REAL, processed REAL, site TEXT, clock TEXT, clock_source TEXT, event_id INTEGER,
  status TEXT, label TEXT, target_score REAL, failure TEXT, archived_to TEXT, record TEXT,
  PRIMARY KEY(path, size, mtime_ns));
CREATE TABLE IF NOT EXISTS events(
  id INTEGER PRIMARY KEY, site TEXT, first TEXT, last TEXT, key TEXT, n INTEGER, n_scored INTEGER,
  sum_target REAL, max_target REAL, fires INTEGER, updated REAL);
CREATE TABLE IF NOT EXISTS triggers(
  id INTEGER PRIMARY KEY, event_id INTEGER, site TEXT, clock TEXT, at REAL, arrived REAL, path TEXT,
  target_score REAL, event_mean REAL, reason TEXT, outcome TEXT, payload TEXT);
CREATE TABLE IF NOT EXISTS attempts(
  id INTEGER PRIMARY KEY, trigger_id INTEGER, action TEXT, started REAL, latency_s REAL,
  duration_s REAL, ok INTEGER, detail TEXT);
CREATE TABLE IF NOT EXISTS failures(id INTEGER PRIMARY KEY, at REAL, path TEXT, stage TEXT, message TEXT);
CREATE INDEX IF NOT EXISTS triggers_site ON triggers(site, outcome);
CREATE INDEX IF NOT EXISTS attempts_trigger ON attempts(trigger_id);
"""


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def _dt(s: str | None) -> datetime | None:
    return datetime.fromisoformat(s) if s else None


class Journal:
    """One connection shared by the guard loop and the action threads, behind a lock."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as e:  # a read-only folder, a file that is not a database
            raise ValueError(f"--db {self.path}: cannot use it as the guard's log ({e})") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, statements: list[tuple[str, tuple]]) -> list[int]:
        """Run statements in one transaction; return their lastrowids."""
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                ids = []
                for sql, args in statements:
                    cur.execute(sql, args)
                    ids.append(cur.lastrowid)
                cur.execute("COMMIT")
                return ids
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- memory across restarts --------------------------------------------------------------
    def processed_keys(self) -> set[tuple[str, int, int]]:
        return {(p, s, m) for p, s, m in self._read("SELECT path, size, mtime_ns FROM files")}

    def unarchived(self) -> list[tuple[str, int, int, str]]:
        """Files processed but still in the incoming folder (archive failed or was off), with status."""
        return self._read("SELECT path, size, mtime_ns, status FROM files WHERE archived_to IS NULL")

    def tracker(self, threshold: float, cooldown: float, gap: float) -> Tracker:
        """A Tracker with each site's latest event open and its last firing time."""
        row = self._read("SELECT COALESCE(MAX(id), 0) FROM events")
        tr = Tracker(threshold, cooldown, gap, next_id=row[0][0] + 1)
        for (eid, site, first, last, key, n, n_scored, sum_t, max_t, fires) in self._read(
                "SELECT id, site, first, last, key, n, n_scored, sum_target, max_target, fires FROM events "
                "WHERE id IN (SELECT MAX(id) FROM events GROUP BY site)"):
            tr.open[site] = OpenEvent(eid, site, _dt(first), _dt(last), key, n, n_scored, sum_t, max_t, fires)
        for site, clock in self._read(
                "SELECT site, MAX(clock) FROM triggers WHERE outcome=? AND clock IS NOT NULL GROUP BY site", (FIRED,)):
            tr.last_fire[site] = _dt(clock)
        return tr

    def undispatched(self, since: float) -> list[tuple[int, dict]]:
        """Fired triggers (at >= since) whose actions never started: the guard died in between."""
        rows = self._read(
            "SELECT id, payload FROM triggers t WHERE outcome=? AND at >= ? AND NOT EXISTS "
            "(SELECT 1 FROM attempts a WHERE a.trigger_id = t.id) ORDER BY id", (FIRED, since))
        return [(i, json.loads(p)) for i, p in rows]

    # -- writes ------------------------------------------------------------------------------
    def record_image(self, key: tuple[str, int, int], arrived: float, record, clock: datetime | None,
                     clock_source: str, event: OpenEvent | None, trigger: dict | None) -> int | None:
        """The image, its event and its trigger (if any) in one transaction; returns the trigger id."""
        now = time.time()
        st = [("INSERT OR REPLACE INTO files(path, size, mtime_ns, arrived, processed, site, clock, clock_source, "
               "event_id, status, label, target_score, failure, record) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
               (*key, arrived, now, record.site, _iso(clock), clock_source, event.id if event else None,
                "failed" if record.failure else "done", record.label, record.target_score, record.failure,
                json.dumps(record.to_json())))]
        if event is not None:
            st.append(("INSERT OR REPLACE INTO events(id, site, first, last, key, n, n_scored, sum_target, "
                       "max_target, fires, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                       (event.id, event.site, _iso(event.first), _iso(event.last), event.key, event.n,
                        event.n_scored, event.sum_target, event.max_target, event.fires, now)))
        if record.failure:
            st.append(("INSERT INTO failures(at, path, stage, message) VALUES (?,?,?,?)",
                       (now, key[0], "decode/model", record.failure)))
        if trigger is not None:
            st.append(("INSERT INTO triggers(event_id, site, clock, at, arrived, path, target_score, event_mean, "
                       "reason, outcome, payload) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                       (event.id, event.site, _iso(clock), now, arrived, key[0], trigger["score"],
                        trigger["event_mean"], trigger["reason"], trigger["outcome"], json.dumps(trigger))))
        ids = self._write(st)
        return ids[-1] if trigger is not None else None

    def set_archived(self, key: tuple[str, int, int], dest: str) -> None:
        self._write([("UPDATE files SET archived_to=? WHERE path=? AND size=? AND mtime_ns=?", (dest, *key))])

    def attempt_started(self, trigger_id: int, action: str, started: float, latency_s: float | None) -> int:
        return self._write([("INSERT INTO attempts(trigger_id, action, started, latency_s) VALUES (?,?,?,?)",
                             (trigger_id, action, started, latency_s))])[0]

    def attempt_done(self, attempt_id: int, ok: bool, duration_s: float, detail: str) -> None:
        self._write([("UPDATE attempts SET ok=?, duration_s=?, detail=? WHERE id=?",
                      (int(ok), duration_s, detail[:2000], attempt_id))])

    def failure(self, path: str | None, stage: str, message: str) -> None:
        self._write([("INSERT INTO failures(at, path, stage, message) VALUES (?,?,?,?)",
                      (time.time(), path, stage, message[:2000]))])

    # -- reading for --status and the tests ----------------------------------------------------
    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        return self._read(sql, args)
