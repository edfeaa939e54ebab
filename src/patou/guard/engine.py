"""The rules applied to one decided image: which rule alarms, fires or is held, and with what.

Pure bookkeeping over `Rules` (no files, no models, no clock of its own), shared by the live
guard and by `--replay`, so what the replay reports is what the guard does. Per image:
- the labels it shows (`analysis.labels_seen`) give each rule its score (the best of its targets);
  each rule has its own Tracker (events, running mean, cooldown: state.py);
- the human veto: a veto label at or over its threshold in the frame, or seen at the same site
  less than `veto.hold` seconds before (image clock), holds every deterrent (outcome VETOED): the
  rule's notifications still go out, saying why; a rule with notifications only is never held;
- outside a rule's schedule its alarms are OFF_SCHEDULE: nothing goes out;
- no habituation: a firing rule runs all its deterrents, or `pick` of them chosen at random or in
  rotation, each after a random delay of 0..`jitter` s; the choice is part of the record.
The state that must survive a restart (the last person seen per site, each rule's rotation turn)
is returned with the verdict, for the journal to commit with the image.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import Mapping

from ..options import EVENT_GAP
from .rules import Rule, Rules
from .state import FIRED, OFF_SCHEDULE, VETOED, Decision, OpenEvent, Tracker

VETO_KEY, TURN_KEY = "veto:", "rotate:"  # journal state keys: veto:<site>, rotate:<rule>


@dataclass
class Alarm:
    rule: Rule
    decision: Decision
    outcome: str
    score: float
    deter: tuple[str, ...] = ()  # the deterrents chosen (FIRED only)
    delays: tuple[float, ...] = ()  # seconds each waits first (jitter)
    notify: tuple[str, ...] = ()  # notifications (FIRED or VETOED)
    choice: str = ""  # in words, for the record: "random 1 of 3", "rotation 2 of 3 (turn 4)"
    held_by: str | None = None  # why the deterrent did not fire


@dataclass
class Verdict:
    seen: dict[str, float]
    person: tuple[str, float] | None  # a veto label in this frame
    held_by: str | None  # the veto in force (in frame, or seen shortly before)
    alarms: list[Alarm] = field(default_factory=list)
    events: list[OpenEvent] = field(default_factory=list)  # the events this image joined, one per rule
    state: dict[str, object] = field(default_factory=dict)  # changes for the journal


def new_trackers(rules: Rules, gap: float, next_id: int = 1) -> dict[str, Tracker]:
    import itertools

    ids = itertools.count(next_id)
    return {r.name: Tracker(r.threshold, r.cooldown, gap, ids=ids, rule=r.name) for r in rules.rules}


class RuleEngine:
    def __init__(self, rules: Rules, gap: float = EVENT_GAP, trackers: dict[str, Tracker] | None = None,
                 state: Mapping[str, object] | None = None, rng: random.Random | None = None):
        self.rules = rules
        self.trackers = trackers or new_trackers(rules, gap)
        state = state or {}
        self.person_seen: dict[str, datetime] = {
            k[len(VETO_KEY):]: datetime.fromisoformat(v) for k, v in state.items() if k.startswith(VETO_KEY) and v}
        self.turns: dict[str, int] = {
            k[len(TURN_KEY):]: int(v) for k, v in state.items() if k.startswith(TURN_KEY)}
        self.rng = rng or random.Random()

    def _held(self, site: str, clock: datetime | None, person) -> str | None:
        if person:
            return f"{person[0]} {person[1]:.2f} in frame"
        last, hold = self.person_seen.get(site), self.rules.veto.hold
        if last is not None and clock is not None and hold:
            ago = (clock - last).total_seconds()
            if 0 <= ago <= hold:
                return f"a person seen {ago:.0f} s before"
        return None

    def observe(self, site: str, clock: datetime | None, seen: Mapping[str, float], scored: bool,
                key: str | None = None, track: str | None = None) -> Verdict:
        """One decided image of `site` (its events and veto kept under `track`, default the site:
        the replay of several folders keeps folders apart)."""
        track = track or site
        person = self.rules.veto.person(seen)
        v = Verdict(dict(seen), person, self._held(track, clock, person))
        if person and clock is not None:
            self.person_seen[track] = clock
            v.state[VETO_KEY + track] = clock.isoformat()
        for rule in self.rules.rules:
            if not rule.applies_to(site):
                continue
            score = max((seen.get(t, 0.0) for t in rule.targets), default=0.0)
            hold = None
            if not rule.schedule.active(clock, self.rules.location):
                hold = OFF_SCHEDULE
            elif v.held_by and rule.deter:
                hold = VETOED
            d = self.trackers[rule.name].observe(track, clock, score, scored, key=key, hold=hold)
            v.events.append(d.event)
            if d.outcome:
                v.alarms.append(self._alarm(rule, d, score, v))
        return v

    def _alarm(self, rule: Rule, d: Decision, score: float, v: Verdict) -> Alarm:
        a = Alarm(rule, d, d.outcome, score)
        if d.outcome == VETOED:
            a.notify, a.held_by, a.choice = rule.notify, v.held_by, "held by the human veto"
        elif d.outcome == FIRED:
            a.notify = rule.notify
            a.deter, a.choice = self._choose(rule, v)
            a.delays = tuple(round(self.rng.uniform(0, rule.jitter), 3) if rule.jitter else 0.0 for _ in a.deter)
        return a

    def _choose(self, rule: Rule, v: Verdict) -> tuple[tuple[str, ...], str]:
        n = len(rule.deter)
        if rule.choose == "random" and n:
            return tuple(self.rng.sample(rule.deter, rule.pick)), f"random {rule.pick} of {n}"
        if rule.choose == "rotate" and n:
            turn = self.turns.get(rule.name, 0)
            self.turns[rule.name] = turn + 1
            v.state[TURN_KEY + rule.name] = turn + 1
            picked = tuple(rule.deter[(turn * rule.pick + i) % n] for i in range(rule.pick))
            return picked, f"rotation {rule.pick} of {n} (turn {turn + 1})"
        return rule.deter, f"all {n}" if n else ""
