"""The guard's rules: which labels fire what, when, how often, never on people; one frozen record.

A rules file (TOML) is parsed into `Rules`, which the live guard and `--replay` share; the command
line's --target/--threshold/--cooldown/--action/--notify are the one-rule shorthand (`shorthand`).
Every mistake in a file is one ValueError naming the file and the line ("rules.toml:14: ...").

    [location]                  # needed for night_only; timezone: the camera clock's zone
    latitude = 42.79
    longitude = 0.60
    timezone = "Europe/Paris"

    [veto]                      # never a deterrent with a person in frame: only notifications
    labels = { human = 0.02, person = 0.2 }   # label = the score (box confidence) that counts
    hold = 60                   # ...nor for this many seconds after one was seen at the site

    [heartbeat]                 # a camera silent this long: one alert, then one recovery
    after = "6h"
    actions = ["telegram:https://api.telegram.org/bot<TOKEN>?chat_id=<CHAT>"]

    [rule.bear]
    targets = ["bear"]          # classifier labels (or detector categories such as person)
    threshold = 0.1             # a box's P(target), or its event's running mean, reaching this
    cooldown = 60               # seconds (or "2m", "1h") before the same site fires again
    deter = ["gpio:17:20", "command:/usr/local/bin/siren --sound howl.wav"]   # held by the veto
    notify = ["mqtt://localhost:1883/patou/alerts"]                           # always sent
    choose = "random"           # all | random | rotate: vary the stimulus (no habituation)
    pick = 1                    # how many deterrents random/rotate choose
    jitter = 3                  # each chosen deterrent starts after a random 0..3 s delay
    active = ["20:00-08:00"]    # hours of the day (may span midnight)
    night_only = true           # sunset to sunrise at [location]
    sites = ["pasture-east"]    # only these sites (default: every site)
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Mapping

from ..options import GUARD_COOLDOWN, GUARD_THRESHOLD, GuardOptions
from .schedule import Location, Schedule, parse_window, zone_of

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CHOICES = ("all", "random", "rotate")
# the bundled classifier's `human` is an ImageNet roll-up and weak: the people of the real test
# photos score 0.022-0.085, the bears at most 0.013 (docs/guard.md); `person` is an installed
# MegaDetector's box confidence
DEFAULT_VETO = (("human", 0.02), ("person", 0.2))
DEFAULT_VETO_HOLD = 60.0
DEFAULT_THRESHOLD = GUARD_THRESHOLD  # the guard's default (how it was chosen: patou/options.py)
HEARTBEAT = "heartbeat"  # the rule name heartbeat alerts are journalled under
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)?\s*$")
_UNITS = {None: 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Rule:
    name: str
    targets: tuple[str, ...]
    threshold: float = DEFAULT_THRESHOLD
    cooldown: float = GUARD_COOLDOWN
    deter: tuple[str, ...] = ()  # siren-class actions: never with a person in frame
    notify: tuple[str, ...] = ()  # messages (with the photo): sent also when the veto holds
    choose: str = "all"
    pick: int = 1
    jitter: float = 0.0
    schedule: Schedule = Schedule()
    sites: tuple[str, ...] = ()  # empty: every site
    line: int | None = None

    def applies_to(self, site: str) -> bool:
        return not self.sites or site in self.sites


@dataclass(frozen=True)
class Veto:
    labels: tuple[tuple[str, float], ...] = DEFAULT_VETO
    hold: float = DEFAULT_VETO_HOLD

    def person(self, seen: Mapping[str, float]) -> tuple[str, float] | None:
        """The first veto label the frame shows at or over its threshold, with its score."""
        for label, threshold in self.labels:
            if seen.get(label, 0.0) >= threshold:
                return label, seen[label]
        return None


@dataclass(frozen=True)
class Heartbeat:
    after: float  # seconds without a photo or frame from a site
    actions: tuple[str, ...]


@dataclass(frozen=True)
class Rules:
    rules: tuple[Rule, ...]
    veto: Veto = Veto()
    heartbeat: Heartbeat | None = None
    location: Location | None = None
    source: str = "the command line"
    lines: tuple[tuple[str, int], ...] = field(default=(), compare=False)  # "rule.bear.targets" -> line

    def actions(self) -> list[str]:
        """Every action spec the rules use, once, in order of appearance."""
        specs = [s for r in self.rules for s in (*r.deter, *r.notify)]
        specs += list(self.heartbeat.actions) if self.heartbeat else []
        return list(dict.fromkeys(specs))

    def where(self, what: str) -> str:
        """'rules.toml:12' for a table or key ('veto', 'rule.bear.targets', or a rule's name), for messages."""
        lines = dict(self.lines)
        line = lines.get(what) or lines.get(f"rule.{what}") or lines.get(what.rsplit(".", 1)[0])
        return f"{self.source}:{line}" if line else self.source

    def explain(self, today: date | None = None) -> str:
        return explain(self, today)


# -- parsing -------------------------------------------------------------------------------------
class _Lines:
    """Where a table or a key is in the file: tomllib gives no positions for values."""

    def __init__(self, text: str):
        self.tables: dict[str, int] = {}
        self.keys: dict[tuple[str, str], int] = {}
        table = ""
        for n, line in enumerate(text.splitlines(), 1):
            m = re.match(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$", line)
            if m:
                table = ".".join(p.strip().strip("\"'") for p in m.group(1).split("."))
                self.tables.setdefault(table, n)
                continue
            m = re.match(r"^\s*([A-Za-z0-9_\-\"'.]+)\s*=", line)
            if m:
                key = m.group(1).strip("\"'")
                self.keys.setdefault((table, key), n)

    def of(self, table: str, key: str | None = None) -> int | None:
        """The line of `key` in [table] (or of a table named by it), else of [table] itself."""
        if key is not None:
            if (table, key) in self.keys:
                return self.keys[(table, key)]
            dotted = f"{table}.{key}" if table else key
            for t, n in self.tables.items():
                if t == dotted or t.startswith(dotted + "."):
                    return n
        for t, n in self.tables.items():
            if table and (t == table or t.startswith(table + ".")):
                return n
        return None


class _Parser:
    def __init__(self, text: str, source: str):
        self.text, self.source, self.lines = text, source, _Lines(text)

    def fail(self, table: str, key: str | None, message: str) -> None:
        line = self.lines.of(table, key)
        raise ValueError(f"{self.source}:{line}: {message}" if line else f"{self.source}: {message}")

    def only(self, data: dict, table: str, known: tuple[str, ...]) -> None:
        for key in data:
            if key not in known:
                self.fail(table, key, f"unknown key {key!r} in [{table}] (known: {', '.join(known)})"
                          if table else f"unknown table or key {key!r} (known: {', '.join(known)})")

    def number(self, data: dict, table: str, key: str, default: float, lo: float, hi: float) -> float:
        v = data.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
            self.fail(table, key, f"{key} = {v!r}: expected a number from {lo:g} to {hi:g}")
        return float(v)

    def duration(self, data: dict, table: str, key: str, default: float | None) -> float | None:
        v = data.get(key, default)
        if v is None:
            return None
        if isinstance(v, str):
            m = _DURATION.match(v)
            if m:
                return float(m.group(1)) * _UNITS[m.group(2)]
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0:
            return float(v)
        self.fail(table, key, f"{key} = {v!r}: expected seconds, or a text such as \"90s\", \"15m\", \"6h\", \"1d\"")

    def strings(self, data: dict, table: str, key: str, one_ok: bool = True) -> tuple[str, ...]:
        v = data.get(key, [])
        if isinstance(v, str) and one_ok:
            v = [v]
        if not isinstance(v, list) or not all(isinstance(x, str) and x.strip() for x in v):
            self.fail(table, key, f"{key}: expected a list of texts, e.g. {key} = [\"...\"]")
        return tuple(x.strip() for x in v)

    def actions(self, data: dict, table: str, key: str) -> tuple[str, ...]:
        from .actions import parse_action

        specs = self.strings(data, table, key)
        for spec in specs:
            try:
                parse_action(spec).close()
            except ValueError as e:
                self.fail(table, key, str(e))
        return specs

    # -- tables --------------------------------------------------------------------------------
    def parse(self) -> Rules:
        try:
            data = tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as e:
            m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
            msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e)) or "not TOML"
            raise ValueError(f"{self.source}:{m.group(1)}: {msg} (column {m.group(2)})" if m
                             else f"{self.source}: not TOML: {msg}") from None
        self.only(data, "", ("location", "veto", "heartbeat", "rule"))
        location = self.location(data.get("location"))
        veto = self.veto(data.get("veto", {}))
        tables = data.get("rule")
        if not isinstance(tables, dict) or not tables:
            self.fail("rule", None, "no rule: add at least one [rule.NAME] table (e.g. [rule.bear])")
        rules = tuple(self.rule(name, t, location) for name, t in tables.items())
        heartbeat = self.heartbeat(data.get("heartbeat"), rules)
        lines = tuple(self.lines.tables.items()) + tuple((f"{t}.{k}" if t else k, n) for (t, k), n in self.lines.keys.items())
        out = Rules(rules, veto, heartbeat, location, self.source, lines)
        _check_pins(out, lambda spec, msg: self.fail(*self._where_action(tables, spec), msg))
        return out

    def _where_action(self, tables: dict, spec: str) -> tuple[str, str | None]:
        for name, t in tables.items():
            for key in ("deter", "notify"):
                if spec in (t.get(key) or []):
                    return f"rule.{name}", key
        return "heartbeat", "actions"

    def location(self, t) -> Location | None:
        if t is None:
            return None
        if not isinstance(t, dict):
            self.fail("location", None, "[location] must be a table with latitude and longitude")
        self.only(t, "location", ("latitude", "longitude", "timezone"))
        for key in ("latitude", "longitude"):
            if key not in t:
                self.fail("location", None, f"[location] needs {key}")
        lat = self.number(t, "location", "latitude", 0, -90, 90)
        lon = self.number(t, "location", "longitude", 0, -180, 180)
        tz = t.get("timezone")
        if tz is not None:
            try:
                zone_of(tz if isinstance(tz, str) else "?")
            except ValueError as e:
                self.fail("location", "timezone", str(e))
        return Location(lat, lon, tz)

    def veto(self, t) -> Veto:
        if not isinstance(t, dict):
            self.fail("veto", None, "[veto] must be a table (labels, hold)")
        self.only(t, "veto", ("labels", "hold"))
        labels = t.get("labels", dict(DEFAULT_VETO))
        if not isinstance(labels, dict):
            self.fail("veto", "labels", "labels: expected a table of label = score, e.g. labels = { human = 0.02 }")
        pairs = []
        for label, thr in labels.items():
            if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not 0 <= thr <= 1:
                self.fail("veto", "labels", f"veto label {label} = {thr!r}: expected a score from 0 to 1")
            pairs.append((label, float(thr)))
        return Veto(tuple(pairs), self.duration(t, "veto", "hold", DEFAULT_VETO_HOLD))

    def rule(self, name: str, t, location: Location | None) -> Rule:
        table = f"rule.{name}"
        if not isinstance(t, dict):
            self.fail(table, None, f"[{table}] must be a table")
        if not _NAME.match(name) or name == HEARTBEAT:
            self.fail(table, None, f"rule name {name!r}: letters, digits, '_', '-', '.' (and not {HEARTBEAT!r})")
        self.only(t, table, ("targets", "threshold", "cooldown", "deter", "notify", "choose", "pick",
                             "jitter", "active", "night_only", "sites"))
        targets = self.strings(t, table, "targets") if "targets" in t else (name,)
        if not targets:
            self.fail(table, "targets", "targets: at least one label")
        deter, notify = self.actions(t, table, "deter"), self.actions(t, table, "notify")
        choose = t.get("choose", "all")
        if choose not in CHOICES:
            self.fail(table, "choose", f"choose = {choose!r}: expected one of {', '.join(CHOICES)}")
        pick = t.get("pick", 1)
        if choose != "all" and (isinstance(pick, bool) or not isinstance(pick, int) or not 1 <= pick <= max(1, len(deter))):
            self.fail(table, "pick", f"pick = {pick!r}: expected a whole number from 1 to the {len(deter)} deterrent(s)")
        if choose != "all" and not deter:
            self.fail(table, "choose", f"choose = {choose!r} needs deter actions to choose among")
        night = t.get("night_only", False)
        if not isinstance(night, bool):
            self.fail(table, "night_only", f"night_only = {night!r}: expected true or false")
        if night and location is None:
            self.fail(table, "night_only", "night_only needs the site's [location] (latitude, longitude)")
        windows = []
        for w in self.strings(t, table, "active"):
            try:
                windows.append(parse_window(w))
            except ValueError as e:
                self.fail(table, "active", str(e))
        return Rule(
            name=name, targets=targets,
            threshold=self.number(t, table, "threshold", DEFAULT_THRESHOLD, 0, 1),
            cooldown=self.duration(t, table, "cooldown", GUARD_COOLDOWN),
            deter=deter, notify=notify, choose=choose, pick=int(pick) if choose != "all" else 1,
            jitter=self.number(t, table, "jitter", 0, 0, 600),
            schedule=Schedule(tuple(windows), night), sites=self.strings(t, table, "sites"),
            line=self.lines.of(table))

    def heartbeat(self, t, rules: tuple[Rule, ...]) -> Heartbeat | None:
        if t is None:
            return None
        if not isinstance(t, dict):
            self.fail("heartbeat", None, "[heartbeat] must be a table (after, actions)")
        self.only(t, "heartbeat", ("after", "actions"))
        if "after" not in t:
            self.fail("heartbeat", None, "[heartbeat] needs after (e.g. after = \"6h\")")
        after = self.duration(t, "heartbeat", "after", None)
        if after <= 0:
            self.fail("heartbeat", "after", "after must be more than 0")
        actions = self.actions(t, "heartbeat", "actions") if "actions" in t else heartbeat_actions(rules)
        if not actions:
            self.fail("heartbeat", None, "[heartbeat]: no action to alert through (give actions = [...])")
        return Heartbeat(after, actions)


def heartbeat_actions(rules: tuple[Rule, ...]) -> tuple[str, ...]:
    """The default: every rule's notifications; without any, its deterrents that are not pins
    (a silent camera is worth a message, not a siren)."""
    notify = [s for r in rules for s in r.notify]
    if notify:
        return tuple(dict.fromkeys(notify))
    return tuple(dict.fromkeys(s for r in rules for s in r.deter if not s.lower().startswith("gpio:")))


def _check_pins(rules: Rules, fail) -> None:
    pins: dict[int, str] = {}
    for spec in rules.actions():
        if spec.lower().startswith("gpio:"):
            pin = spec.split(":")[1]
            if pin in pins and pins[pin] != spec:
                fail(spec, f"gpio pin {pin} is driven by two actions ({pins[pin]}, {spec}): give it one")
            pins[pin] = spec


def parse(text: str, source: str = "rules") -> Rules:
    return _Parser(text, source).parse()


def load(path: str | Path) -> Rules:
    """The rules of a TOML file; a ValueError naming the file and line for anything wrong."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ValueError(f"{path}: cannot read the rules file ({e.strerror or e})") from None
    if len(raw) > 1_000_000:
        raise ValueError(f"{path}: {len(raw):,} bytes is not a rules file (more than 1 MB)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text") from None
    return parse(text, str(path))


def check(path: str | Path, model: str | Path | None = None) -> str:
    """`--check-rules`: the rules in words, their labels checked against the model's card."""
    from .analysis import model_labels

    rules = load(path)
    check_labels_of(rules, model_labels(model))
    return rules.explain()


def check_labels_of(rules: Rules, labels) -> None:
    """Every label the rules name is one the model (its `labels`) or the detector can say."""
    from .analysis import check_labels

    if not rules.lines:  # the command line's shorthand
        return check_labels(labels, {t for r in rules.rules for t in r.targets}, "--target")
    for r in rules.rules:
        check_labels(labels, set(r.targets), f"{rules.where(f'rule.{r.name}.targets')}: rule {r.name!r} targets")
    check_labels(labels, {lab for lab, _ in rules.veto.labels}, f"{rules.where('veto.labels')}: [veto] labels")


def shorthand(target: str = GuardOptions.target, threshold: float = DEFAULT_THRESHOLD, cooldown: float = GUARD_COOLDOWN,
              actions: tuple[str, ...] | list[str] = (), notify: tuple[str, ...] | list[str] = (),
              heartbeat_hours: float | None = None) -> Rules:
    """The command line's one rule: --target fires every --action (deterrents) and --notify."""
    if not 0 <= threshold <= 1:
        raise ValueError(f"--threshold {threshold:g}: expected a score from 0 to 1")
    if cooldown < 0:
        raise ValueError(f"--cooldown {cooldown:g}: expected seconds >= 0")
    from .actions import parse_action

    for spec in (*actions, *notify):
        parse_action(spec).close()  # the ValueError names the action
    rule = Rule(target, (target,), float(threshold), float(cooldown), tuple(actions), tuple(notify))
    heartbeat = None
    if heartbeat_hours:
        specs = heartbeat_actions((rule,))
        if not specs:
            raise ValueError("--heartbeat needs an action to alert through (--notify, or a command/http/mqtt --action)")
        heartbeat = Heartbeat(float(heartbeat_hours) * 3600, specs)
    out = Rules((rule,), heartbeat=heartbeat)
    _check_pins(out, _refuse)
    return out


def _refuse(spec: str, message: str) -> None:
    raise ValueError(message)


# -- words ---------------------------------------------------------------------------------------
def _secs(s: float) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= n and s % n == 0:
            return f"{s / n:g} {unit}"
    return f"{s:g} s"


def _names(specs) -> str:
    from .actions import parse_action

    return ", ".join(str(parse_action(s)) for s in specs)  # passwords and bot tokens hidden


def explain(rules: Rules, today: date | None = None) -> str:
    """Each rule in words, as --check-rules prints it."""
    out = [f"{len(rules.rules)} rule(s) from {rules.source}:"]
    veto = rules.veto
    for r in rules.rules:
        where = f" (line {r.line})" if r.line else ""
        targets = " or ".join(f"P({t})" for t in r.targets)
        sites = f"at site {', '.join(r.sites)}" if r.sites else "at any site"
        out.append(f"\nrule {r.name!r}{where}: when {targets} of a box reaches {r.threshold:g} (or the "
                   f"running mean of its event does, after a photo that did), {sites}, "
                   f"{r.schedule.describe(rules.location, today)}:")
        if r.deter:
            how = {"all": f"all of {_names(r.deter)}" if len(r.deter) > 1 else _names(r.deter),
                   "random": f"{r.pick} of {len(r.deter)} chosen at random each time from {_names(r.deter)}",
                   "rotate": f"{r.pick} of {len(r.deter)} in turn (rotation) from {_names(r.deter)}"}[r.choose]
            jitter = f", each after a random delay of 0 to {r.jitter:g} s" if r.jitter else ""
            out.append(f"  deter: {how}{jitter}")
        if r.notify:
            out.append(f"  notify: {_names(r.notify)} (with the photo, its boxes drawn)")
        if not r.deter and not r.notify:
            out.append("  no action: it is only logged")
        out.append(f"  then not again at that site for {_secs(r.cooldown)} (image clock)")
        if r.deter:
            if veto.labels:
                people = " or ".join(f"{lab} >= {thr:g}" for lab, thr in veto.labels)
                hold = f", or one seen at the site in the last {_secs(veto.hold)}" if veto.hold else ""
                out.append(f"  never a deterrent with a person in frame ({people}{hold}): "
                           + ("only the notification goes out, saying why" if r.notify else
                              "nothing goes out (this rule has no notify action)"))
            else:
                out.append("  WARNING: no human veto ([veto] labels is empty): the deterrent fires with people in frame")
    hb = rules.heartbeat
    if hb:
        out.append(f"\nheartbeat: a camera (site) with no photo or frame for {_secs(hb.after)} raises one alert "
                   f"through {_names(hb.actions)}, and one recovery message when it is back")
    else:
        out.append("\nno heartbeat: a silent camera is not reported (add [heartbeat] after = \"6h\")")
    return "\n".join(out)
