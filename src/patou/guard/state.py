"""Decide, image by image, whether the deterrent fires: open events per site, running mean, cooldown.

Pure bookkeeping (no files, no models), shared by the live guard and by `--replay`, so what the
replay prints is what the guard would have done. The guard persists every change in its SQLite
log and rebuilds a Tracker from it on restart.

Rules (the same events as `patou run`: one site, shots at most `gap` seconds apart):
- an image joins its site's open event when its clock is within `gap` of the event's span,
  otherwise it opens a new one; the clock is the EXIF time, or the arrival time without EXIF;
- it is an alarm when its target probability >= threshold, or when the open event's running mean
  (over its non-empty images, as `decide_event`) reaches it;
- an alarm fires unless the site fired less than `cooldown` seconds earlier (image clock), so one
  visit fires once and a bear that stays is scared again once the cooldown has passed;
- an alarm may be held instead (`hold`): VETOED (a person in frame: the notification goes out, so
  it starts the cooldown like a firing) or OFF_SCHEDULE (outside the rule's hours: nothing does).
One Tracker per rule; the trackers of one guard share their event ids (`ids`).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterator

from ..options import EVENT_GAP, GUARD_COOLDOWN

FIRED, COOLDOWN, VETOED, OFF_SCHEDULE = "fired", "cooldown", "vetoed", "off-schedule"
STARTS_COOLDOWN = (FIRED, VETOED)


@dataclass
class OpenEvent:
    id: int
    site: str
    first: datetime | None = None
    last: datetime | None = None
    key: str | None = None  # replay: the event id from group_events (images without a clock)
    n: int = 0
    n_scored: int = 0
    sum_target: float = 0.0
    max_target: float = 0.0
    fires: int = 0
    rule: str | None = None  # the rule whose tracker keeps it

    @property
    def mean(self) -> float:
        return self.sum_target / self.n_scored if self.n_scored else 0.0


@dataclass
class Decision:
    event: OpenEvent
    new_event: bool
    target_score: float
    reason: str | None = None  # "image" | "event-mean" when the image is an alarm
    outcome: str | None = None  # FIRED | COOLDOWN | a hold (VETOED, OFF_SCHEDULE) when it is an alarm

    @property
    def fire(self) -> bool:
        return self.outcome == FIRED


class Tracker:
    def __init__(self, threshold: float, cooldown: float = GUARD_COOLDOWN, gap: float = EVENT_GAP, next_id: int = 1,
                 ids: Iterator[int] | None = None, rule: str | None = None):
        self.threshold, self.cooldown, self.gap, self.rule = threshold, cooldown, gap, rule
        self.open: dict[str, OpenEvent] = {}
        self.last_fire: dict[str, datetime] = {}
        self.ids = ids or itertools.count(next_id)

    def _joins(self, ev: OpenEvent, clock: datetime | None, key: str | None) -> bool:
        if key is not None or ev.key is not None:
            return key == ev.key
        if clock is None or ev.first is None:
            return False
        gap = timedelta(seconds=self.gap)
        return ev.first - gap <= clock <= ev.last + gap

    def observe(self, site: str, clock: datetime | None, target_score: float | None, scored: bool,
                key: str | None = None, hold: str | None = None) -> Decision:
        """One decided image: `scored` = it has class scores (not empty), as decide_event counts;
        `hold`: the outcome an alarm gets instead of FIRED (it still cools down first)."""
        ts = float(target_score or 0.0)
        ev = self.open.get(site)
        new = ev is None or not self._joins(ev, clock, key)
        if new:
            ev = OpenEvent(next(self.ids), site, clock, clock, key, rule=self.rule)
            self.open[site] = ev
        elif clock is not None:
            ev.first, ev.last = min(ev.first, clock), max(ev.last, clock)
        ev.n += 1
        if scored:
            ev.n_scored += 1
            ev.sum_target += ts
            ev.max_target = max(ev.max_target, ts)
        d = Decision(ev, new, ts)
        if ts >= self.threshold:
            d.reason = "image"
        elif scored and ev.mean >= self.threshold:  # only after an earlier image was >= threshold
            d.reason = "event-mean"
        if d.reason:
            last = self.last_fire.get(site)
            if clock is None:  # no clock (replay of untimed files): once per event
                cooling = ev.fires > 0
            else:
                cooling = last is not None and last <= clock < last + timedelta(seconds=self.cooldown)
            d.outcome = COOLDOWN if cooling else hold or FIRED
            if d.outcome in STARTS_COOLDOWN:
                ev.fires += 1
                if clock is not None:
                    self.last_fire[site] = clock
        return d
