"""The guard's SQLite log: processed files, stream frames, events, triggers, action attempts, failures.

It is also the guard's memory across restarts: a file is processed once per (path, size, mtime)
and the open events and last firing per site and rule are rebuilt from it, so a restart neither
re-fires nor skips anything. A trigger is committed with its image, its events, the rules' state
(last person seen, rotation turn) and one planned attempt per action it will run, in one
transaction, before any action starts; a planned attempt that had not started when the guard died
is run at restart, one that had started is not run again. WAL mode lets `patou guard --status`
read while the guard writes; synchronous=FULL because the small computer this runs on loses power
rather than crashes. Stream frames are logged only when analysed with something in them.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from .state import FIRED, STARTS_COOLDOWN, OpenEvent, Tracker

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
CREATE TABLE IF NOT EXISTS frames(
  id INTEGER PRIMARY KEY, site TEXT, captured REAL, processed REAL, clock TEXT, event_id INTEGER,
  label TEXT, target_score REAL, failure TEXT, record TEXT);
CREATE TABLE IF NOT EXISTS streams(
  site TEXT PRIMARY KEY, source TEXT, connected INTEGER, since REAL, last_frame REAL, frames INTEGER,
  checked INTEGER, analysed INTEGER, reconnects INTEGER, error TEXT, updated REAL);
CREATE TABLE IF NOT EXISTS state(key TEXT PRIMARY KEY, value TEXT);
CREATE INDEX IF NOT EXISTS triggers_site ON triggers(site, outcome);
CREATE INDEX IF NOT EXISTS attempts_trigger ON attempts(trigger_id);
"""
# columns added since the first guard log: (table, column, type); old logs get them at open
COLUMNS = [("events", "rule", "TEXT"), ("triggers", "rule", "TEXT"), ("triggers", "photo", "TEXT"),
           ("attempts", "role", "TEXT"), ("attempts", "plan", "TEXT")]


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
            for table, column, kind in COLUMNS:
                if column not in {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        except sqlite3.Error as e:  # a read-only folder, a file that is not a database
            raise ValueError(f"--db {self.path}: cannot use it as the guard's log ({e})") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _txn(self):
        """One transaction (a cursor), committed at the end, rolled back on any error."""
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    def _write(self, statements: list[tuple[str, tuple]]) -> list[int]:
        """Run statements in one transaction; return their lastrowids."""
        with self._txn() as cur:
            ids = []
            for sql, args in statements:
                cur.execute(sql, args)
                ids.append(cur.lastrowid)
            return ids

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- memory across restarts --------------------------------------------------------------
    def processed_keys(self) -> set[tuple[str, int, int]]:
        return {(p, s, m) for p, s, m in self._read("SELECT path, size, mtime_ns FROM files")}

    def unarchived(self) -> list[tuple[str, int, int, str]]:
        """Files processed but still in the incoming folder (archive failed or was off), with status."""
        return self._read("SELECT path, size, mtime_ns, status FROM files WHERE archived_to IS NULL")

    def tracker(self, threshold: float, cooldown: float, gap: float, rule: str | None = None,
                ids=None, first_rule: bool = True) -> Tracker:
        """A Tracker with each site's latest event of `rule` open and its last firing time (events
        and triggers of a log older than rules count as the first rule's)."""
        row = self._read("SELECT COALESCE(MAX(id), 0) FROM events")
        tr = Tracker(threshold, cooldown, gap, next_id=row[0][0] + 1, ids=ids, rule=rule)
        mine = "(rule = ? OR (rule IS NULL AND ?))"
        for (eid, site, first, last, key, n, n_scored, sum_t, max_t, fires) in self._read(
                "SELECT id, site, first, last, key, n, n_scored, sum_target, max_target, fires FROM events "
                f"WHERE id IN (SELECT MAX(id) FROM events WHERE {mine} GROUP BY site)", (rule, first_rule)):
            tr.open[site] = OpenEvent(eid, site, _dt(first), _dt(last), key, n, n_scored, sum_t, max_t, fires, rule)
        for site, clock in self._read(
                f"SELECT site, MAX(clock) FROM triggers WHERE outcome IN ({','.join('?' * len(STARTS_COOLDOWN))}) "
                f"AND clock IS NOT NULL AND {mine} GROUP BY site", (*STARTS_COOLDOWN, rule, first_rule)):
            tr.last_fire[site] = _dt(clock)
        return tr

    def trackers(self, rules, gap: float) -> dict[str, Tracker]:
        """One Tracker per rule, sharing the event ids."""
        import itertools

        ids = itertools.count(self._read("SELECT COALESCE(MAX(id), 0) FROM events")[0][0] + 1)
        return {r.name: self.tracker(r.threshold, r.cooldown, gap, r.name, ids, i == 0)
                for i, r in enumerate(rules.rules)}

    def state(self) -> dict[str, object]:
        return {k: json.loads(v) for k, v in self._read("SELECT key, value FROM state")}

    def last_seen(self) -> dict[str, float]:
        """When each site last sent a photo (file arrival) or a frame: the heartbeat's memory."""
        seen = dict(self._read("SELECT site, MAX(arrived) FROM files WHERE site IS NOT NULL GROUP BY site"))
        for site, t in self._read("SELECT site, last_frame FROM streams WHERE last_frame IS NOT NULL"):
            seen[site] = max(t, seen.get(site) or 0.0)
        return {k: v for k, v in seen.items() if v}

    def pending(self, since: float) -> list[tuple[int, str, int, dict, float | None]]:
        """Planned attempts (of triggers at >= since) that never started: the guard died before."""
        rows = self._read(
            "SELECT a.id, a.action, t.id, t.payload, t.arrived FROM attempts a JOIN triggers t ON a.trigger_id = t.id "
            "WHERE a.started IS NULL AND a.ok IS NULL AND t.at >= ? ORDER BY a.id", (since,))
        return [(aid, action, tid, {**json.loads(p), "trigger_id": tid}, arrived) for aid, action, tid, p, arrived in rows]

    def undispatched(self, since: float) -> list[tuple[int, dict]]:
        """Fired triggers (at >= since) whose actions never started: the guard died in between."""
        rows = self._read(  # triggers of a log older than planned attempts (they have no 'plan')
            "SELECT id, payload FROM triggers t WHERE outcome=? AND at >= ? AND json_extract(payload, '$.plan') IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.trigger_id = t.id) ORDER BY id", (FIRED, since))
        return [(i, json.loads(p)) for i, p in rows]

    # -- writes ------------------------------------------------------------------------------
    def record_image(self, key: tuple[str, int, int], arrived: float, record, clock: datetime | None,
                     clock_source: str, events: list[OpenEvent] = (), triggers: list = (),
                     state: dict | None = None) -> list[tuple[int, list[int]]]:
        """A file, its events, triggers, planned attempts and rule state in one transaction;
        returns (trigger id, attempt ids) per trigger."""
        now = time.time()
        head = ("INSERT OR REPLACE INTO files(path, size, mtime_ns, arrived, processed, site, clock, clock_source, "
                "event_id, status, label, target_score, failure, record) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (*key, arrived, now, record.site, _iso(clock), clock_source, events[0].id if events else None,
                 "failed" if record.failure else "done", record.label, record.target_score, record.failure,
                 json.dumps(record.to_json())))
        return self._decision(head, key[0], arrived, record, clock, events, triggers, state, now)

    def record_frame(self, site: str, captured: float, record, clock: datetime, events: list[OpenEvent] = (),
                     triggers: list = (), state: dict | None = None) -> list[tuple[int, list[int]]]:
        """A stream frame that was analysed with something in it (or fired), as record_image."""
        now = time.time()
        head = ("INSERT INTO frames(site, captured, processed, clock, event_id, label, target_score, failure, record) "
                "VALUES (?,?,?,?,?,?,?,?,?)",
                (site, captured, now, _iso(clock), events[0].id if events else None, record.label,
                 record.target_score, record.failure, json.dumps(record.to_json())))
        return self._decision(head, str(record.path), captured, record, clock, events, triggers, state, now)

    def record_alert(self, payload: dict, plans: list, state: dict) -> tuple[int, list[int]]:
        """A heartbeat alert or recovery (no image) with its planned attempts and state change."""
        return self._decision(None, None, None, None, None, [], [(payload, plans)], state, time.time())[0]

    def _decision(self, head, path, arrived, record, clock, events, triggers, state, now) -> list[tuple[int, list[int]]]:
        out = []
        with self._txn() as cur:
            if head is not None:
                cur.execute(*head)
            for ev in events:
                cur.execute("INSERT OR REPLACE INTO events(id, site, first, last, key, n, n_scored, sum_target, "
                            "max_target, fires, updated, rule) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                            (ev.id, ev.site, _iso(ev.first), _iso(ev.last), ev.key, ev.n, ev.n_scored,
                             ev.sum_target, ev.max_target, ev.fires, now, ev.rule))
            if record is not None and record.failure:
                cur.execute("INSERT INTO failures(at, path, stage, message) VALUES (?,?,?,?)",
                            (now, path, "decode/model", record.failure))
            for key, value in (state or {}).items():
                if value is None:
                    cur.execute("DELETE FROM state WHERE key=?", (key,))
                else:
                    cur.execute("INSERT OR REPLACE INTO state(key, value) VALUES (?,?)", (key, json.dumps(value)))
            for payload, plans in triggers:
                cur.execute("INSERT INTO triggers(event_id, site, clock, at, arrived, path, target_score, event_mean, "
                            "reason, outcome, payload, rule, photo) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                            (payload.get("event_id"), payload.get("site"), payload.get("image_time") if clock else None,
                             now, arrived, payload.get("image"), payload.get("score"), payload.get("event_mean"),
                             payload.get("reason"), payload["outcome"], json.dumps(payload), payload.get("rule"),
                             payload.get("photo")))
                tid = cur.lastrowid
                attempts = []
                for action, role, plan in plans:
                    cur.execute("INSERT INTO attempts(trigger_id, action, role, plan) VALUES (?,?,?,?)",
                                (tid, action, role, json.dumps(plan)))
                    attempts.append(cur.lastrowid)
                out.append((tid, attempts))
        return out

    def set_archived(self, key: tuple[str, int, int], dest: str) -> None:
        self._write([("UPDATE files SET archived_to=? WHERE path=? AND size=? AND mtime_ns=?", (dest, *key))])

    def attempt_started(self, trigger_id: int, action: str, started: float, latency_s: float | None) -> int:
        return self._write([("INSERT INTO attempts(trigger_id, action, started, latency_s) VALUES (?,?,?,?)",
                             (trigger_id, action, started, latency_s))])[0]

    def attempt_begins(self, attempt_id: int, started: float, latency_s: float | None) -> None:
        """A planned attempt starts (from now on a restart will not run it again)."""
        self._write([("UPDATE attempts SET started=?, latency_s=? WHERE id=?", (started, latency_s, attempt_id))])

    def stream_status(self, site: str, source: str, connected: bool, since: float | None, last_frame: float | None,
                      frames: int, checked: int, analysed: int, reconnects: int, error: str | None) -> None:
        self._write([("INSERT OR REPLACE INTO streams(site, source, connected, since, last_frame, frames, checked, "
                      "analysed, reconnects, error, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                      (site, source, int(connected), since, last_frame, frames, checked, analysed, reconnects,
                       error, time.time()))])

    def set_state(self, changes: dict) -> None:
        self._write([("DELETE FROM state WHERE key=?", (k,)) if v is None else
                     ("INSERT OR REPLACE INTO state(key, value) VALUES (?,?)", (k, json.dumps(v)))
                     for k, v in changes.items()])

    def attempt_done(self, attempt_id: int, ok: bool, duration_s: float, detail: str) -> None:
        self._write([("UPDATE attempts SET ok=?, duration_s=?, detail=? WHERE id=?",
                      (int(ok), duration_s, detail[:2000], attempt_id))])

    def failure(self, path: str | None, stage: str, message: str) -> None:
        self._write([("INSERT INTO failures(at, path, stage, message) VALUES (?,?,?,?)",
                      (time.time(), path, stage, message[:2000]))])

    # -- reading for --status and the tests ----------------------------------------------------
    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        return self._read(sql, args)
