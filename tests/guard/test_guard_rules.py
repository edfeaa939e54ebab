"""The guard's rules file, schedules (fake times), the rule engine, the heartbeat (fake clock), the motion gate.

No models here: the engine is fed the labels an image shows, as the live guard and --replay feed
it; the motion gate is fed real photos.
"""
import random
import re
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from patou.guard.engine import RuleEngine
from patou.guard.heartbeat import Heartbeat
from patou.guard.journal import Journal
from patou.guard.rules import load, parse, shorthand
from patou.guard.schedule import Location, Schedule, is_night, parse_window
from patou.guard.state import COOLDOWN, FIRED, OFF_SCHEDULE, VETOED
from patou.guard.stream import Frame, MotionGate, Stream, parse_stream, redact

ROOT = Path(__file__).resolve().parents[2]
PYRENEES = ROOT / "docs" / "guard-rules-pyrenees.toml"
LUCHON = Location(42.79, 0.60, "Europe/Paris")
T0 = datetime(2026, 6, 21, 23, 0, 0)  # a June night in the Pyrenees


def rules_text(**extra) -> str:
    return """
[location]
latitude = 42.79
longitude = 0.60
timezone = "Europe/Paris"

[veto]
labels = { human = 0.02, person = 0.2 }
hold = 60

[rule.bear]
targets = ["bear"]
threshold = 0.1
cooldown = 60
deter = ["command:siren-a", "command:siren-b", "command:siren-c"]
notify = ["http://127.0.0.1:9/hook"]
choose = "%(choose)s"
pick = %(pick)d
jitter = %(jitter)g

[rule.wolf]
targets = ["wolf"]
threshold = 0.3
deter = ["command:lights"]
notify = ["http://127.0.0.1:9/hook"]
night_only = true

[rule.boar]
targets = ["wild_boar"]
threshold = 0.5
notify = ["http://127.0.0.1:9/hook"]
active = ["20:00-08:00"]
""" % {"choose": "rotate", "pick": 1, "jitter": 0, **extra}


# -- the file ------------------------------------------------------------------------------------
def test_the_pyrenees_example_parses_and_is_the_one_in_the_docs():
    rules = load(PYRENEES)
    assert [r.name for r in rules.rules] == ["bear", "wolf", "boar"]
    bear, wolf, boar = rules.rules
    assert bear.choose == "random" and bear.pick == 2 and len(bear.deter) == 3 and bear.jitter == 3
    assert bear.cooldown == 120 and wolf.cooldown == 300 and boar.cooldown == 1800
    assert wolf.schedule.night_only and boar.schedule.windows == ((20 * 60, 8 * 60),) and not boar.deter
    assert rules.heartbeat.after == 6 * 3600 and rules.heartbeat.actions  # defaults to the notify actions
    assert dict(rules.veto.labels) == {"human": 0.02, "person": 0.2} and rules.veto.hold == 60
    doc = (ROOT / "docs" / "guard.md").read_text()
    block = re.search(r"```toml\n(.*?)```", doc, re.S).group(1)
    assert block == PYRENEES.read_text(), "docs/guard.md's rules example differs from docs/guard-rules-pyrenees.toml"


def test_check_rules_explains_each_rule_in_words():
    text = load(PYRENEES).explain(today=date(2026, 6, 21))
    assert "rule 'bear'" in text and "2 of 3 chosen at random" in text and "random delay of 0 to 3 s" in text
    assert "never a deterrent with a person in frame (human >= 0.02 or person >= 0.2" in text
    assert "only at night (sunset to sunrise at 42.790 N, 0.600 E, Europe/Paris" in text and "sunset 21:" in text
    assert "rule 'boar'" in text and "between 20:00 and 08:00" in text and "deter" not in text.split("rule 'boar'")[1].split("heartbeat")[0]
    assert "heartbeat: a camera (site) with no photo or frame for 6 h raises one alert" in text
    assert "REPLACE-ME" not in text  # the bot token is never printed


@pytest.mark.parametrize("text, line, words", [
    ('[rule.bear]\ntargets = ["bear"]\ntreshold = 0.2\n', 3, "unknown key 'treshold' in [rule.bear]"),
    ('[rule.bear]\ntargets = ["bear"]\nthreshold = 2\n', 3, "threshold = 2: expected a number from 0 to 1"),
    ('[rule.bear]\ntargets = ["bear"\nthreshold = 0.2\n', 3, "Unclosed array"),
    ('[rule.bear]\n\n[rule.wolf]\nnight_only = true\n', 4, "night_only needs the site's [location]"),
    ('[rule.bear]\ndeter = ["siren"]\n', 2, "action 'siren': expected command:..."),
    ('[rule.bear]\nactive = "22:00-22:00"\n', 2, "starts when it ends"),
    ('[rule.bear]\nactive = "9pm-6am"\n', 2, "expected HH:MM-HH:MM"),
    ('[rule.bear]\ncooldown = "ten minutes"\n', 2, 'expected seconds, or a text such as "90s"'),
    ('[rule.bear]\ndeter = ["command:a"]\nchoose = "shuffle"\n', 3, "choose = 'shuffle': expected one of all, random, rotate"),
    ('[rule.bear]\ndeter = ["command:a"]\nchoose = "random"\npick = 2\n', 4, "pick = 2: expected a whole number from 1 to the 1"),
    ('[location]\nlatitude = 42.8\n\n[rule.bear]\n', 1, "[location] needs longitude"),
    ('[location]\nlatitude = 42.8\nlongitude = 0.6\ntimezone = "Europe/Luchon"\n[rule.a]\n', 4, "unknown time zone"),
    ('[veto]\nlabels = { human = 2 }\n[rule.a]\n', 2, "veto label human = 2"),
    ('[heartbeat]\nafter = "6h"\n[rule.a]\n', 1, "no action to alert through"),
    ('[rules.bear]\n', 1, "unknown table or key 'rules'"),
    ('[location]\nlatitude = 1\nlongitude = 1\n', None, "no rule: add at least one [rule.NAME] table"),
    ('[rule.a]\ndeter = ["gpio:17:20"]\n[rule.b]\ndeter = ["gpio:17:5"]\n', 4, "gpio pin 17 is driven by two actions"),
])
def test_a_bad_rules_file_is_one_clear_error_naming_the_line(tmp_path, text, line, words):
    p = tmp_path / "rules.toml"
    p.write_text(text)
    with pytest.raises(ValueError) as e:
        load(p)
    msg = str(e.value)
    assert "\n" not in msg and words in msg, msg
    assert msg.startswith(f"{p}:{line}: " if line else f"{p}: "), msg


@pytest.mark.slow
def test_check_rules_on_the_command_line(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "patou.cli", "guard", "--check-rules", str(PYRENEES)],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "rule 'wolf'" in ok.stdout, ok.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[rule.bear]\ntargets = ["bera"]\n')
    p = subprocess.run([sys.executable, "-m", "patou.cli", "guard", "--check-rules", str(bad)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    err = p.stderr.strip()
    assert err.startswith(f"error: {bad}:2: rule 'bear' targets: 'bera' is not a label of the model"), err
    assert len(err.splitlines()) <= 2  # one message (rich may wrap it once at 80 columns)


def test_the_flags_are_the_one_rule_shorthand():
    rules = shorthand("bear", 0.1, 60, ["gpio:17:20", "command:siren"], ["http://x/hook"], heartbeat_hours=6)
    (rule,) = rules.rules
    assert rule.targets == ("bear",) and rule.deter == ("gpio:17:20", "command:siren") and rule.notify == ("http://x/hook",)
    assert rules.heartbeat.actions == ("http://x/hook",) and rules.heartbeat.after == 6 * 3600
    # no --notify: the heartbeat goes through the deterrents that are not pins
    assert shorthand(actions=["gpio:17:20", "command:siren"], heartbeat_hours=1).heartbeat.actions == ("command:siren",)
    with pytest.raises(ValueError, match="--heartbeat needs an action"):
        shorthand(actions=["gpio:17:20"], heartbeat_hours=1)
    assert dict(rules.veto.labels)["human"] == 0.02  # the veto holds for the shorthand too


# -- schedules (fake times) ----------------------------------------------------------------------
def test_active_hours_span_midnight():
    s = Schedule((parse_window("20:00-06:30"),))
    at = lambda h, m=0: s.active(datetime(2026, 5, 1, h, m), None)  # noqa: E731
    assert at(20) and at(23, 59) and at(0) and at(6, 29) and not at(6, 30) and not at(12) and not at(19, 59)
    two = Schedule((parse_window("05:00-07:00"), parse_window("19:00-21:00")))
    assert two.active(datetime(2026, 5, 1, 6), None) and two.active(datetime(2026, 5, 1, 20), None)
    assert not two.active(datetime(2026, 5, 1, 12), None)
    assert s.active(None, None)  # a replayed photo without a time counts as in schedule


def test_night_only_follows_sunset_and_sunrise_at_the_site():
    # NOAA equations by hand for 42.79 N, 0.60 E on the June solstice: day length 15 h 20 min, solar noon
    # 13:59 CEST, so sunrise about 06:19 and sunset about 21:39 local time
    night = Schedule(night_only=True)
    d = date(2026, 6, 21)
    assert night.active(datetime.combine(d, datetime.min.time()) + timedelta(hours=23), LUCHON)
    assert night.active(datetime(2026, 6, 21, 6, 10), LUCHON) and not night.active(datetime(2026, 6, 21, 6, 30), LUCHON)
    assert not night.active(datetime(2026, 6, 21, 21, 30), LUCHON) and night.active(datetime(2026, 6, 21, 21, 50), LUCHON)
    assert not night.active(datetime(2026, 6, 21, 13, 0), LUCHON)
    # December: sunset near 17:20, sunrise near 08:10
    assert night.active(datetime(2026, 12, 21, 17, 45), LUCHON) and not night.active(datetime(2026, 12, 21, 16, 45), LUCHON)
    assert night.active(datetime(2026, 12, 21, 7, 50), LUCHON) and not night.active(datetime(2026, 12, 21, 8, 40), LUCHON)
    # the same clock read in another zone is another instant: 22:00 in UTC is midnight in Paris
    utc = Location(42.79, 0.60, "UTC")
    assert is_night(datetime(2026, 6, 21, 20, 30), utc) and not is_night(datetime(2026, 6, 21, 20, 30), LUCHON)
    # Tromsø: midnight sun in June (never night), polar night in December (night at noon)
    tromso = Location(69.65, 18.96, "Europe/Oslo")
    assert not is_night(datetime(2026, 6, 21, 0, 30), tromso) and is_night(datetime(2026, 12, 21, 12, 0), tromso)


# -- the rule engine -----------------------------------------------------------------------------
def engine(**extra) -> RuleEngine:
    return RuleEngine(parse(rules_text(**extra), "rules.toml"), gap=20, rng=random.Random(1))


def test_each_label_goes_to_its_rule_and_wolves_only_at_night():
    e = engine()
    v = e.observe("pasture", T0, {"bear": 0.8, "dog": 0.1}, True)
    assert [(a.rule.name, a.outcome) for a in v.alarms] == [("bear", FIRED)]
    assert v.alarms[0].deter == ("command:siren-a",) and v.alarms[0].notify == ("http://127.0.0.1:9/hook",)
    v = e.observe("ridge", T0 + timedelta(seconds=5), {"wolf": 0.85}, True)
    assert [(a.rule.name, a.outcome) for a in v.alarms] == [("wolf", FIRED)]
    # at the bear's site within the event gap, the wolf photo belongs to the bear's event (its mean)
    v = e.observe("pasture", T0 + timedelta(seconds=5), {"wolf": 0.85}, True)
    assert [(a.rule.name, a.outcome, a.decision.reason) for a in v.alarms] == [("bear", COOLDOWN, "event-mean"), ("wolf", FIRED, "image")]
    day = datetime(2026, 6, 22, 13, 0)
    v = e.observe("meadow", day, {"wolf": 0.85}, True)
    assert [(a.rule.name, a.outcome, a.deter, a.notify) for a in v.alarms] == [("wolf", OFF_SCHEDULE, (), ())]
    v = e.observe("meadow", day + timedelta(hours=9), {"wolf": 0.85}, True)  # 22:00: night, no cooldown left by day
    assert [(a.rule.name, a.outcome) for a in v.alarms] == [("wolf", FIRED)]
    v = e.observe("meadow", datetime(2026, 6, 22, 12, 0), {"wild_boar": 0.9}, True)  # boar rule: 20:00-08:00
    assert [(a.rule.name, a.outcome) for a in v.alarms] == [("boar", OFF_SCHEDULE)]


def test_a_person_in_frame_never_fires_a_deterrent_only_notifies():
    e = engine()
    v = e.observe("pasture", T0, {"bear": 0.9, "human": 0.035}, True)
    (a,) = v.alarms
    assert a.outcome == VETOED and a.deter == () and a.notify == ("http://127.0.0.1:9/hook",)
    assert a.held_by == "human 0.04 in frame" and v.state == {"veto:pasture": T0.isoformat()}
    # an installed MegaDetector's person box vetoes as well
    v = e.observe("ridge", T0, {"bear": 0.9, "person": 0.6}, True)
    assert v.alarms[0].outcome == VETOED and v.alarms[0].held_by == "person 0.60 in frame"
    # the person walked out of frame: still held for `hold` s (and the vetoed alarm started the cooldown)
    v = e.observe("pasture", T0 + timedelta(seconds=30), {"bear": 0.9}, True)
    assert v.alarms[0].outcome == COOLDOWN
    e2 = engine()
    e2.person_seen["pasture"] = T0
    v = e2.observe("pasture", T0 + timedelta(seconds=30), {"bear": 0.9}, True)
    assert v.alarms[0].outcome == VETOED and v.alarms[0].held_by == "a person seen 30 s before"
    v = e2.observe("pasture", T0 + timedelta(seconds=95), {"bear": 0.9}, True)
    assert v.alarms[0].outcome == FIRED  # the hold and the cooldown are over
    # a rule that only notifies is never held
    v = e2.observe("pasture", datetime(2026, 6, 22, 1, 0), {"wild_boar": 0.9, "human": 0.5}, True)
    assert [(a.rule.name, a.outcome) for a in v.alarms] == [("boar", FIRED)]


def test_no_habituation_rotation_and_random_choice_with_jitter_are_recorded_and_restored():
    e = engine(choose="rotate", pick=1)
    picked = []
    for i in range(4):
        v = e.observe("pasture", T0 + timedelta(minutes=2 * i), {"bear": 0.9}, True)
        picked += v.alarms[0].deter
        assert v.alarms[0].choice == f"rotation 1 of 3 (turn {i + 1})" and v.state["rotate:bear"] == i + 1
    assert picked == ["command:siren-a", "command:siren-b", "command:siren-c", "command:siren-a"]
    restored = RuleEngine(e.rules, 20, state={"rotate:bear": 4})  # after a restart: the next in turn
    assert restored.observe("pasture", T0, {"bear": 0.9}, True).alarms[0].deter == ("command:siren-b",)

    e = engine(choose="random", pick=2, jitter=3)
    seen = set()
    for i in range(30):
        a = e.observe("pasture", T0 + timedelta(minutes=2 * i), {"bear": 0.9}, True).alarms[0]
        assert len(set(a.deter)) == 2 and a.choice == "random 2 of 3"
        assert len(a.delays) == 2 and all(0 <= d <= 3 for d in a.delays)
        seen.add(a.deter)
    assert len(seen) >= 3  # the stimulus varies
    delays = [d for i in range(10) for d in engine(choose="random", pick=2, jitter=3).observe(
        "x", T0 + timedelta(minutes=i), {"bear": 0.9}, True).alarms[0].delays]
    assert len(set(delays)) > 1


def test_rules_state_survives_a_restart_through_the_journal(tmp_path):
    rules = parse(rules_text(), "rules.toml")
    j = Journal(tmp_path / "g.sqlite")
    e = RuleEngine(rules, 20, j.trackers(rules, 20), j.state())
    v = e.observe("pasture", T0, {"bear": 0.9, "human": 0.5}, True)  # vetoed: starts the cooldown, person seen
    w = e.observe("pasture", T0 + timedelta(seconds=2), {"wolf": 0.9}, True)  # the wolf rule fires
    for verdict in (v, w):
        payloads = [({"event_id": a.decision.event.id, "site": "pasture", "rule": a.rule.name, "outcome": a.outcome,
                      "image_time": T0.isoformat(), "score": a.score, "event_mean": a.decision.event.mean}, [])
                    for a in verdict.alarms]
        j.record_frame("pasture", 0.0, _Rec(), T0, verdict.events, payloads, verdict.state)
    j.close()
    j = Journal(tmp_path / "g.sqlite")
    e = RuleEngine(rules, 20, j.trackers(rules, 20), j.state())
    assert e.person_seen["pasture"] == T0
    later = T0 + timedelta(seconds=20)
    assert e.observe("pasture", later, {"bear": 0.9}, True).alarms[0].outcome == COOLDOWN  # per rule and site
    assert e.observe("pasture", later, {"wolf": 0.9}, True).alarms[0].outcome == COOLDOWN
    assert e.observe("other", later, {"wolf": 0.9}, True).alarms[0].outcome == FIRED
    j.close()


class _Rec:
    """The few record fields the journal keeps of a frame."""
    path, site, label, target_score, failure = Path("pasture@x"), "pasture", "bear", 0.9, None

    def to_json(self):
        return {}


# -- the heartbeat (fake clock) ------------------------------------------------------------------
def test_a_silent_camera_is_one_alert_until_it_is_back_then_one_recovery():
    now = [1000.0]
    hb = Heartbeat(3600, last_seen={"pasture": 900.0}, now=lambda: now[0])
    hb.watch("ridge")  # a stream, watched from the start
    assert hb.due() == [] and hb.next_check() == pytest.approx(3600)  # silence counted from the start (1000)
    now[0] = 4599.0
    assert hb.due() == []
    now[0] = 4600.0
    assert sorted(a["site"] for a in hb.due()) == ["pasture", "ridge"]
    now[0] = 9000.0
    assert hb.due() == []  # once, until it is back
    assert hb.seen("ridge", 9000.0)["outcome"] == "camera-back"
    assert hb.seen("ridge", 9001.0) is None  # one recovery
    # a restart while pasture is silent: no second alert; its recovery still comes
    hb2 = Heartbeat(3600, {"pasture": 900.0}, {"heartbeat:pasture": hb.silent["pasture"]}, now=lambda: now[0])
    now[0] = 20000.0
    assert [a["site"] for a in hb2.due()] == []
    back = hb2.seen("pasture", 20000.0)
    assert back["outcome"] == "camera-back" and back["silent_h"] == pytest.approx((20000 - 1000) / 3600, abs=0.01)


# -- streams: names and the motion gate ------------------------------------------------------------
def test_stream_specs_name_their_site_and_never_show_a_password():
    assert parse_stream("pasture=rtsp://user:pw@10.0.0.5:554/stream1") == ("pasture", "rtsp://user:pw@10.0.0.5:554/stream1")
    assert parse_stream("rtsp://10.0.0.5:554/stream1")[0] == "10.0.0.5-554-stream1"
    assert parse_stream("/dev/video0") == ("video0", "/dev/video0") and parse_stream("1") == ("video1", "1")
    assert parse_stream("http://cam/mjpg?res=hi&x=1")[0] == "cam-mjpg"  # '=' in a URL is not a site name
    assert redact("rtsp://user:pw@10.0.0.5/s") == "rtsp://user:***@10.0.0.5/s"
    with pytest.raises(ValueError, match="expected rtsp://"):
        parse_stream("camera-one")


@pytest.mark.slow
def test_the_motion_gate_lets_an_animal_through_and_not_noise_or_light(real):
    import io

    import numpy as np
    from PIL import Image, ImageEnhance

    blank = Image.open(real / "speciesnet-cameratrapai/test_data/blank.jpg").convert("RGB")
    bear = Image.open(real / "zamba-ena24-small/tests/assets/images/ena24_small/8831.jpg").convert("RGB").resize(blank.size)
    rng = np.random.default_rng(0)

    def frame(img, noise=0.0, light=1.0):
        a = np.asarray(ImageEnhance.Brightness(img).enhance(light), dtype=np.float32)
        a = np.clip(a + rng.normal(0, noise, a.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "JPEG", quality=85)
        return Frame(1, 0.0, buf.getvalue()).grey()

    gate = MotionGate(check_every=10.0)
    assert gate.wants(frame(blank, 4), 0.0) == (True, "first frame")
    assert not gate.wants(frame(blank, 4), 0.5)[0]  # sensor noise
    assert not gate.wants(frame(blank, 4, light=1.15), 1.0)[0]  # a cloud: the whole frame brighter
    assert gate.wants(frame(blank, 4), 10.5) == (True, "periodic check")
    assert gate.wants(frame(bear, 4), 11.0) == (True, "motion")
    gate.occupied = True  # the models found an animal: it may now stand still (the background learns it)
    why = [gate.wants(frame(bear, 4), 11.5 + i / 2)[1] for i in range(6)]
    assert why[0] == "motion" and why[-1] == "something in frame", why
    gate.occupied = False
    assert not gate.wants(frame(bear, 4), 15.0)[0]
    assert MotionGate(threshold=0).wants(frame(blank), 0.0)[0]


@pytest.mark.parametrize("kind", ["mjpeg", "mjpeg-without-lengths", "snapshot"])
@pytest.mark.slow
def test_http_streams_give_the_newest_whole_frame_at_the_rate(real, kind):
    """The reader alone (no models): MJPEG with and without Content-Length, a snapshot URL."""
    import time

    from stream_servers import MjpegServer, jpeg

    data = jpeg(real / "zamba-ena24-small/tests/assets/images/ena24_small/8831.jpg")
    cam = MjpegServer(fps=20, lengths=kind != "mjpeg-without-lengths")
    cam.show(data, "bear")
    s = Stream(f"cam={cam.snapshot_url if kind == 'snapshot' else cam.url}", rate=2.0, log=lambda m: None)
    s.start()
    try:
        got, t0 = [], time.monotonic()
        while time.monotonic() - t0 < 3.0:
            f = s.take(time.monotonic())
            if f is not None:
                got.append(f)
            time.sleep(0.01)
    finally:
        s.stop()
        cam.close()
    assert got and all(f.jpeg == data for f in got)  # whole frames, byte for byte
    assert len(got) <= 3.0 * 2 * 4 + 1  # at most GATE_FACTOR x rate a second through the gate
    if kind == "snapshot":
        assert cam.snapshots <= len(got) + 3  # fetched when a frame is due, not as fast as it answers
    else:
        assert s.frames > len(got)  # the camera sent more; the others were dropped
