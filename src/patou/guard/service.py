"""The live guard: watch a folder and camera streams, decide each image at once, fire, log, archive; never stop.

One loop does everything that touches the models (loaded once): wait for ready files and due
stream frames, decode, detect, classify, decide, then the rules (engine.py: per-rule events and
cooldowns, the human veto, schedules, the choice of deterrents). The image, its events, its
triggers and their planned attempts are committed in one transaction before the actions start,
and the actions run in their own threads. Every fault (unreadable image, model error, full
disk, dead endpoint, lost stream) is logged and costs at most that image, frame or action. The
heartbeat (heartbeat.py) alerts through the same actions when a camera goes silent.
"""
from __future__ import annotations

import random
import threading
import time
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Callable

from .. import __version__
from ..media import site_of
from ..options import GUARD_THRESHOLD, THRESHOLD, GuardOptions
from ..record import ImageRecord
from ..sort import FAILED_DIR, sort_files
from . import analysis
from .actions import Dispatcher, parse_action
from .engine import RuleEngine, Verdict
from .heartbeat import KEY as HEARTBEAT_KEY, Heartbeat
from .journal import Journal
from .notify import annotate, photo_path, save_photo, summary
from .rules import HEARTBEAT, Rules, check_labels_of, load as load_rules, shorthand
from .schedule import zone_of
from .state import COOLDOWN, FIRED, OFF_SCHEDULE, VETOED
from .stream import CHECK_EVERY, Stream
from .watch import Watcher, stat_key

DEFAULT_GUARD_THRESHOLD = GUARD_THRESHOLD  # how it was chosen: patou/options.py
OPTIONS = GuardOptions()  # the defaults of `patou guard`'s options
STALE = "stale"  # an alarm on an image that arrived too long ago to be worth scaring anything
# A file that decodes as truncated may be half-written by a writer that pauses longer than --settle
# (FTP, SD card): it is read again, at growing intervals, for this many seconds.
PARTIAL_GRACE = 30.0
# failure texts of a file that may still be arriving: its head alone is "not an image", "truncated"
_MAYBE_PARTIAL = ("truncated", "not an image", "empty file")
STATUS_EVERY = 30.0  # seconds between two stream counter rows in the journal
# seconds between two journalled frames of a stream that change nothing that matters at a restart
# (something in view, a cooldown or off-schedule alarm): a grazing herd must not fill an SD card
FRAME_LOG_EVERY = 10.0
RUNS = (FIRED, VETOED)  # outcomes whose actions run (a vetoed alarm still notifies)


def maybe_partial(failure: str | None) -> bool:
    return bool(failure) and any(sign in failure.lower() for sign in _MAYBE_PARTIAL)


class Guard:
    def __init__(
        self,
        watch: str | Path | None = None,
        *,
        streams: list[str] = OPTIONS.streams,
        rules: str | Path | Rules | None = OPTIONS.rules,
        actions: list[str] = OPTIONS.actions,
        notify: list[str] = OPTIONS.notify,
        heartbeat: float | None = OPTIONS.heartbeat,
        model: str | Path | None = OPTIONS.model,
        target: str = OPTIONS.target,
        threshold: float = OPTIONS.threshold,
        detection_threshold: float = OPTIONS.detection_threshold,
        cooldown: float = OPTIONS.cooldown,
        event_gap: float = OPTIONS.event_gap,
        db: str | Path = OPTIONS.db,
        archive: str | Path | None = OPTIONS.archive,
        photos: str | Path | None = OPTIONS.photos,
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
        rate: float = OPTIONS.rate,
        motion: float = OPTIONS.motion,
        check_every: float = CHECK_EVERY,
        log: Callable[[str], None] = print,
        models: analysis.Analyser | None = None,
        pin_factory=None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ):
        if watch is None and not streams:
            raise ValueError("give a folder to watch (--watch) or a camera stream (--stream), or both")
        self.watch = Path(watch).absolute() if watch is not None else None
        if self.watch is not None and not self.watch.is_dir():
            raise ValueError(f"{self.watch}: no such folder to watch")
        self.archive = Path(archive).absolute() if archive else None
        if isinstance(rules, (str, Path)):
            rules = load_rules(rules)
        elif rules is None:
            rules = shorthand(target, threshold, cooldown, actions, notify, heartbeat)
        elif actions or notify or heartbeat:
            raise ValueError("with a rules file, the actions and the heartbeat are the rules' "
                             "(no --action, --notify or --heartbeat)")
        self.rules = rules
        self.zone = zone_of(rules.location.timezone) if rules.location else None
        first = rules.rules[0]
        self.target, self.threshold, self.detection_threshold = first.targets[0], first.threshold, detection_threshold
        self.max_age, self.site_depth, self.log, self.clock = max_age, site_depth, log, clock
        self.partial_grace = partial_grace
        self._wake = threading.Event()
        self.streams = [Stream(s, rate, motion, check_every, wake=self._wake_up, log=log) for s in streams]
        sites = [s.site for s in self.streams]
        if len(set(sites)) != len(sites):
            raise ValueError(f"two --stream have the same site ({', '.join(sites)}): name them SITE=URL")
        self.action_of = {spec: parse_action(spec, action_timeout, pin_factory=pin_factory) for spec in rules.actions()}
        self.actions = list({str(a): a for a in self.action_of.values()}.values())
        self.models = models or analysis.load_models(model, threads=threads, flip=flip, fast=fast)
        check_labels_of(rules, self.models)
        self.journal = Journal(db)
        self.photos = Path(photos).absolute() if photos else self.journal.path.absolute().parent / "guard-photos"
        state = self.journal.state()
        self.engine = RuleEngine(rules, event_gap, self.journal.trackers(rules, event_gap), state, rng)
        self.heartbeat = (Heartbeat(rules.heartbeat.after, self.journal.last_seen(), state, clock)
                          if rules.heartbeat else None)
        self.done = self.journal.processed_keys()
        self.dispatcher = Dispatcher(self.actions, self.journal, log)
        self.watcher = None
        if self.watch is not None:
            self.watcher = Watcher(self.watch, settle=settle, poll=poll, rescan=rescan,
                                   exclude=[self.archive] if self.archive else [],
                                   is_done=lambda p, k: (p, *k) in self.done, log=log)
        self._status_at = 0.0
        self._tries: dict[str, tuple[int, float]] = {}  # path -> (reads, first truncated read)
        self._stop = False
        self.processed = 0

    # -- running -------------------------------------------------------------------------------
    def run(self, max_files: int | None = None, timeout: float | None = None) -> None:
        """Watch until stop() (or max_files processed / timeout seconds: for tests and benchmarks)."""
        if self.watcher is not None:
            self.watcher.start()
        for s in self.streams:
            s.start()
            if self.heartbeat:
                self.heartbeat.watch(s.site)
        what = [f"{self.watch} ({self.watcher.mode})"] if self.watcher else []
        what += [f"stream {s}" for s in self.streams]
        rules = ", ".join(f"{r.name}: {'/'.join(r.targets)} >= {r.threshold:g}" for r in self.rules.rules)
        self.log(f"patou guard: watching {', '.join(what)}; rules {rules}; {len(self.actions)} action(s), "
                 f"log {self.journal.path}")
        self._resume()
        end = None if timeout is None else time.monotonic() + timeout
        try:
            while not self._stop:
                now = time.monotonic()
                if end is not None and now >= end:
                    break
                for path in self._wait(self._timeout(now, end)):
                    if self._stop:
                        break
                    self.handle_safely(path)
                    if max_files is not None and self.processed >= max_files:
                        self._stop = True
                self._tick_streams()
                self._tick_heartbeat()
        finally:
            self.close()

    def _timeout(self, now: float, end: float | None) -> float | None:
        waits = [end - now] if end is not None else []
        waits += [d - now for s in self.streams if (d := s.next_due(now)) is not None]
        if self.streams:
            waits.append(max(0.0, self._status_at + STATUS_EVERY - now))
        if self.heartbeat and (h := self.heartbeat.next_check()) is not None:
            waits.append(min(h, 5.0))  # a jump of the clock is noticed within 5 s
        return max(0.0, min(waits)) if waits else None

    def _wait(self, timeout: float | None) -> list[Path]:
        if self.watcher is not None:
            return self.watcher.wait(timeout)
        self._wake.wait(timeout)
        self._wake.clear()
        return []

    def _wake_up(self) -> None:
        self._wake.set()
        if self.watcher is not None:
            self.watcher.wake()

    def stop(self) -> None:
        """Ask run() to return (safe from a signal handler or another thread)."""
        self._stop = True
        self._wake_up()

    def close(self, wait_actions: bool = True) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        for s in self.streams:
            s.stop()
            self._stream_status(s)
        self.dispatcher.close(wait=wait_actions)
        self.journal.close()

    def _resume(self) -> None:
        """After a restart: planned actions that never started, archiving left undone."""
        since = time.time() - self.max_age if self.max_age else 0.0
        first = self.rules.rules[0]
        for tid, event in self.journal.undispatched(since):  # a log from before planned attempts
            self.log(f"resuming trigger {tid} (its actions had not started when the guard stopped)")
            self.dispatcher.run(tid, event, None, [(None, self.action_of[s], 0.0) for s in (*first.deter, *first.notify)])
        by_trigger: dict[int, tuple[dict, float | None, list]] = {}
        for aid, name, tid, event, arrived in self.journal.pending(since):
            action = self.dispatcher.by_name.get(name)
            if action is None:
                self.journal.attempt_done(aid, False, 0.0, "not run: no such action in the rules at restart")
                continue
            by_trigger.setdefault(tid, (event, arrived, []))[2].append((aid, action, 0.0))
        for tid, (event, arrived, planned) in by_trigger.items():
            self.log(f"resuming trigger {tid}: {len(planned)} action(s) had not started when the guard stopped")
            self.dispatcher.run(tid, event, arrived, planned)
        if self.archive:
            for path, size, mtime_ns, status in self.journal.unarchived():
                if stat_key(path) == (size, mtime_ns):
                    self._archive((path, size, mtime_ns), Path(path), failed=status == "failed")

    def handle_safely(self, path: Path) -> None:
        try:
            self.handle(path)
        except Exception as e:  # whatever it is, the guard goes on with the next file
            self._fault(str(path), "guard", e)

    def _fault(self, what: str, stage: str, e: Exception) -> None:
        self.log(f"error: {what}: {type(e).__name__}: {e}")
        try:
            self.journal.failure(what, stage, f"{type(e).__name__}: {e}")
        except Exception:
            pass

    def local(self, t: float) -> datetime:
        """An arrival or capture time as the naive local clock the rules and events use."""
        return datetime.fromtimestamp(t, self.zone).replace(tzinfo=None) if self.zone else datetime.fromtimestamp(t)

    # -- one file ------------------------------------------------------------------------------
    def handle(self, path: Path) -> list[dict]:
        """Decide one ready file; returns the payloads of its triggers."""
        key = stat_key(str(path))
        if key is None:
            return []  # gone or emptied since it was ready
        k = (str(path), *key)
        if k in self.done:
            return []
        arrived = key[1] / 1e9  # its last write: when it arrived, also for files found at start
        record = ImageRecord(path=path, root=self.watch, site=site_of(self.watch, path, self.site_depth))
        loaded = analysis.load_file(self.models, record)
        if loaded is None and maybe_partial(record.failure):
            n, first = self._tries.get(str(path), (0, time.monotonic()))
            if time.monotonic() - first < self.partial_grace:  # the guard's clock: mtimes may be skewed
                self._tries[str(path)] = (n + 1, first)
                delay = self.watcher.settle * 2 ** n
                self.watcher.retry(path, delay=delay)
                self.log(f"partial: {path}: {record.failure}; looking again once it changes or in {delay:g} s")
                return []
        self._tries.pop(str(path), None)
        if loaded is not None:
            analysis.analyse_loaded(self.models, loaded, record, self.detection_threshold)
        analysis.decide(record, self.detection_threshold, THRESHOLD, self.target)
        self.processed += 1
        self._seen(record.site, arrived)
        if record.failure:
            self.log(f"failed: {path}: {record.failure}")
            self._commit(lambda **kw: self.journal.record_image(k, arrived, record, None, "", **kw), [], k[0], done=k)
            self._archive(k, path, failed=True)
            return []
        clock, source = (record.timestamp, "exif") if record.timestamp else (self.local(arrived), "arrival")
        seen = analysis.labels_seen(record, self.detection_threshold)
        verdict = self.engine.observe(record.site, clock, seen, bool(record.scores))
        fired = self._fire(verdict, record, loaded[0] if loaded else None, clock, source, arrived, str(path),
                           lambda **kw: self.journal.record_image(k, arrived, record, clock, source, **kw), done=k)
        self._archive(k, path, failed=False)
        return fired

    # -- one stream frame ----------------------------------------------------------------------
    def _tick_streams(self) -> None:
        now = time.monotonic()
        for s in self.streams:
            if s.last_frame:
                self._seen(s.site, s.last_frame)
            if s.changed or now - self._status_at >= STATUS_EVERY:
                self._stream_status(s)
            frame = s.take(now)
            if frame is not None:
                try:
                    self.handle_frame(s, frame)
                except Exception as e:  # a frame costs at most itself
                    self._fault(f"stream {s}", "stream", e)
        if self.streams and now - self._status_at >= STATUS_EVERY:
            self._status_at = now

    def _stream_status(self, s: Stream) -> None:
        s.changed = False
        try:
            self.journal.stream_status(s.site, s.name, s.connected, s.since, s.last_frame, s.frames, s.checked,
                                       s.analysed, s.reconnects, s.error)
        except Exception as e:
            self.log(f"error: cannot log the state of stream {s}: {e}")

    def handle_frame(self, s: Stream, frame) -> list[dict]:
        """Gate, then decide one frame; only frames with something in them are journalled."""
        now = time.monotonic()
        go, _why = s.gate.wants(frame.grey(), now)
        if not s.admit(go, now):
            return []
        clock = self.local(frame.received)
        name = f"{s.site}@{clock.isoformat(timespec='milliseconds')}"
        record = ImageRecord(path=Path(name), root=Path("."), site=s.site, timestamp=None)
        try:
            img = frame.image(analysis.decode_side(self.models), analysis.max_pixels(self.models))
        except ValueError as e:
            record.failure, img = str(e), None
        if img is not None:
            analysis.analyse_image(self.models, img, record, self.detection_threshold)
        analysis.decide(record, self.detection_threshold, THRESHOLD, self.target)
        seen = analysis.labels_seen(record, self.detection_threshold)
        s.gate.occupied = bool(seen)
        if record.failure:
            if record.failure != s.failure:  # one line per kind of failure, not one per frame
                self.log(f"failed: stream {s} frame {frame.seq}: {s.scrub(record.failure)}")
            s.failure = record.failure
            return []
        s.failure = None
        if not seen:
            return []  # an empty frame: nothing to remember (streams send thousands)
        verdict = self.engine.observe(s.site, clock, seen, bool(record.scores))
        news = (verdict.state or any(ev.n == 1 for ev in verdict.events)
                or any(a.outcome not in (COOLDOWN, OFF_SCHEDULE) for a in verdict.alarms))
        if not news and now - s.logged_at < FRAME_LOG_EVERY:
            return []  # the models saw it; the journal gets one such frame every FRAME_LOG_EVERY s
        s.logged_at = now
        return self._fire(verdict, record, img, clock, "capture", frame.received, name,
                          lambda **kw: self.journal.record_frame(s.site, frame.received, record, clock, **kw))

    # -- triggers ------------------------------------------------------------------------------
    def _fire(self, v: Verdict, record: ImageRecord, img, clock: datetime, source: str, arrived: float,
              image: str, commit, done: tuple | None = None) -> list[dict]:
        """Payloads and plans for the verdict's alarms; commit with the image; dispatch (deterrents
        first, then the photo is drawn and saved, then the notifications that carry it)."""
        triggers, photo, first_alarm = [], None, None
        for a in v.alarms:
            outcome = a.outcome
            if outcome in RUNS and self.max_age and time.time() - arrived > self.max_age:
                outcome = STALE
            deter = a.deter if outcome == FIRED else ()
            notify = a.notify if outcome in RUNS else ()
            if (deter or notify) and photo is None and img is not None:
                photo, first_alarm = photo_path(self.photos, clock, record.site, a.rule.name), a
            names = [str(self.action_of[x]) for x in deter], [str(self.action_of[x]) for x in notify]
            payload = {
                "patou_version": __version__, "kind": "alarm", "trigger_id": None, "event_id": a.decision.event.id,
                "site": record.site, "rule": a.rule.name, "target": a.rule.targets[0], "targets": list(a.rule.targets),
                "score": round(a.score, 6), "event_mean": round(a.decision.event.mean, 6),
                "threshold": a.rule.threshold, "reason": a.decision.reason, "outcome": outcome, "image": image,
                "image_time": clock.isoformat(), "clock_source": source, "label": record.label,
                "boxes": sum(1 for b in record.detections if b.conf >= self.detection_threshold),
                "seen": {k: round(x, 4) for k, x in sorted(v.seen.items(), key=lambda kv: -kv[1]) if x >= 0.01},
                "person_in_frame": list(v.person) if v.person else None, "held_by": a.held_by if outcome == VETOED else None,
                "deterrents": names[0], "notifications": names[1], "choice": a.choice if deter else "",
                "delays_s": list(a.delays) if deter else [], "photo": str(photo) if photo and (deter or notify) else None,
                "plan": {"deter": names[0], "notify": names[1]},
                "fired_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            }
            payload["text"] = summary(payload)
            plans = [(str(self.action_of[x]), "deter", {"delay_s": d, "choice": a.choice}) for x, d in zip(deter, a.delays)]
            plans += [(str(self.action_of[x]), "notify", {}) for x in notify]
            triggers.append((payload, plans))
        ids = self._commit(commit, triggers, image, v, done)
        if photo is not None:
            self.dispatcher.expect_photo(str(photo))
        later = []
        for (payload, plans), (tid, attempts) in zip(triggers, ids):
            payload["trigger_id"] = tid
            self.log(f"{payload['outcome'].upper()}: {Path(image).name} site {record.site} rule {payload['rule']} "
                     f"event {payload['event_id']}: P({payload['target']}) {payload['score']:.2f}, event mean "
                     f"{payload['event_mean']:.2f} ({payload['reason']})"
                     + (f"; held: {payload['held_by']}" if payload["held_by"] else "")
                     + (f"; deterrent {', '.join(payload['deterrents'])} ({payload['choice']})" if payload["deterrents"] else ""))
            planned = [(aid, self.dispatcher.by_name[name], role, plan.get("delay_s", 0.0))
                       for aid, (name, role, plan) in zip(attempts or [None] * len(plans), plans)]
            self.dispatcher.run(tid, payload, arrived, [(aid, x, d) for aid, x, role, d in planned if role == "deter"])
            later.append((tid, payload, [(aid, x, d) for aid, x, role, d in planned if role != "deter"]))
        if photo is not None:
            self._photo(photo, img, record, first_alarm, clock)
            self.dispatcher.photo_saved(str(photo))
        for tid, payload, planned in later:
            if planned:
                self.dispatcher.run(tid, payload, arrived, planned)
        return [p for p, _ in triggers]

    def _photo(self, path: Path, img, record: ImageRecord, alarm, clock: datetime) -> None:
        try:
            title = f"{alarm.rule.name}: {alarm.rule.targets[0]} {alarm.score:.2f} - {record.site} {clock:%Y-%m-%d %H:%M:%S}"
            save_photo(path, annotate(img, record, self.detection_threshold, alarm.rule.targets,
                                      [lab for lab, _ in self.rules.veto.labels], title))
        except Exception as e:  # a full disk: the notifications go without their photo
            self.log(f"error: cannot save the photo of {record.path}: {type(e).__name__}: {e}")

    def _commit(self, commit, triggers: list, what: str, v: Verdict | None = None,
                done: tuple | None = None) -> list[tuple[int | None, list | None]]:
        try:
            ids = commit(events=v.events if v else [], triggers=triggers, state=v.state if v else None)
        except Exception as e:  # e.g. a full disk: the deterrent still fires, the file is not redone now
            ids = [(None, None)] * len(triggers)
            self.log(f"error: cannot log {what}: {type(e).__name__}: {e}")
        if done is not None:
            self.done.add(done)
        return ids

    # -- heartbeat -----------------------------------------------------------------------------
    def _seen(self, site: str, t: float) -> None:
        if self.heartbeat is not None:
            back = self.heartbeat.seen(site, t)
            if back is not None:
                self._alert(back, {HEARTBEAT_KEY + site: None})

    def _tick_heartbeat(self) -> None:
        if self.heartbeat is None:
            return
        for silent in self.heartbeat.due():
            self._alert(silent, {HEARTBEAT_KEY + silent["site"]: self.heartbeat.silent[silent["site"]]})

    def _alert(self, info: dict, state: dict) -> None:
        specs = self.rules.heartbeat.actions
        names = [str(self.action_of[s]) for s in specs]
        payload = {"patou_version": __version__, "kind": "heartbeat", "rule": HEARTBEAT, "trigger_id": None,
                   **info, "last_seen_time": self.local(info["last_seen"]).isoformat(timespec="seconds")
                   if info.get("last_seen") else None, "notifications": names, "plan": {"deter": [], "notify": names},
                   "fired_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}
        payload["text"] = summary(payload)
        self.log(f"HEARTBEAT: {payload['text']}")
        try:
            tid, attempts = self.journal.record_alert(payload, [(n, "notify", {}) for n in names], state)
        except Exception as e:
            tid, attempts = None, [None] * len(names)
            self.log(f"error: cannot log the heartbeat alert: {type(e).__name__}: {e}")
        payload["trigger_id"] = tid
        self.dispatcher.run(tid, payload, None, [(aid, self.dispatcher.by_name[n], 0.0) for aid, n in zip(attempts, names)])

    # -- archive -------------------------------------------------------------------------------
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
