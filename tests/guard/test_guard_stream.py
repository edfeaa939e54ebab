"""`patou guard --stream` with rules, on real peers on 127.0.0.1: an HTTP MJPEG camera fed real photos,
Debian's GStreamer RTSP server (when installed), an HTTP receiver and a Telegram-style bot API.

Waits are generous "within N seconds" polls, never timing assertions (the latency goal is
measured by benchmarks/guard_latency.py --stream). One Analyser instance is shared by the
in-process guards; the kill -9 tests run the guard as a process.
"""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from patou.guard import Guard, status
from patou.guard.replay import replay
from patou.guard.state import COOLDOWN, FIRED, OFF_SCHEDULE, VETOED
from patou.pipeline import Analyser
from test_guard import rows, wait_for as _wait_for
from stream_servers import BLUE, RED, MjpegServer, Receiver, drawn, jpeg, rtsp_available, rtsp_server, side_by_side

ENA = "zamba-ena24-small/tests/assets/images/ena24_small"
SW = "animl-py-southwest/examples/Southwest"
BEAR = f"{ENA}/8831.jpg"
BLANK = "speciesnet-cameratrapai/test_data/blank.jpg"
WOLF = f"{SW}/IMAG0031_wolf.JPG"
PERSON = f"{SW}/B012_2021-05-27_human.jpg"
WAIT = 90.0  # generous: the machine is shared


@pytest.fixture(scope="module")
def models():
    return Analyser(fast=True)


@pytest.fixture(scope="module")
def frames(real):
    """What the cameras see, as JPEGs: real photos (a person beside a bear: two real photos in one frame)."""
    return {"blank": jpeg(real / BLANK), "bear": jpeg(real / BEAR), "wolf": jpeg(real / WOLF),
            "person+bear": jpeg(side_by_side(real / PERSON, real / BEAR, (1600, 600)))}


def wait_for(cond, timeout=WAIT, what="condition"):
    return _wait_for(cond, timeout=timeout, what=what)


def count(db: Path, sql: str, args=()) -> int:
    """A COUNT(*) of the log, 0 while the guard has not made it yet."""
    try:
        return rows(db, sql, args)[0][0] if db.exists() else 0
    except sqlite3.OperationalError:  # no such table yet: the guard is still starting
        return 0


def writer(out: Path, name: str) -> str:
    """A deterrent that writes the event it gets to out/<name>-<trigger id>.json."""
    return f"command:sh -c 'cat > {out}/{name}-$PATOU_TRIGGER_ID.json'"


def fired(out: Path, name: str) -> list[dict]:
    got = []
    for p in sorted(out.glob(f"{name}-*.json")):
        try:
            got.append(json.loads(p.read_text()))
        except ValueError:
            return []
    return got


def rules_file(tmp: Path, out: Path, hook: str, bot: str, bear: str = "", heartbeat: float | None = None) -> Path:
    p = tmp / "rules.toml"
    p.write_text(f"""
[veto]
labels = {{ human = 0.02, person = 0.2 }}

[rule.bear]
targets = ["bear"]
threshold = 0.1
cooldown = 60
deter = ["{writer(out, 'bear')}"]
notify = ["{hook}", "{bot}"]
{bear}

[rule.wolf]
targets = ["wolf"]
threshold = 0.3
cooldown = 60
deter = ["{writer(out, 'wolf')}"]
notify = ["{hook}"]
{f'[heartbeat]{chr(10)}after = {heartbeat}{chr(10)}actions = ["{hook}"]' if heartbeat else ""}
""")
    return p


@pytest.fixture
def peers():
    cam, rec = MjpegServer(fps=10), Receiver()
    try:
        yield cam, rec
    finally:
        cam.close()
        rec.close()


@contextmanager
def guarding(tmp: Path, models, streams, rules, **kw):
    kw.setdefault("log", lambda m: None)
    g = Guard(streams=streams, rules=rules, db=tmp / "guard.sqlite", models=models, **kw)
    t = threading.Thread(target=g.run, daemon=True)
    t.start()
    try:
        yield g
    finally:
        g.stop()
        t.join(timeout=WAIT)
        assert not t.is_alive(), "the guard did not stop"


def analysed_since(g, n0: int, more: int = 3):
    """The stream has sent `more` frames to the models since n0 (an animal shown now has been seen)."""
    return lambda: g.streams[0].analysed >= n0 + more


def more_frames(g, more: int = 3, what: str = "more frames") -> None:
    wait_for(analysed_since(g, g.streams[0].analysed, more), what=what)


def pasture(tmp: Path, peers, **kw):
    """(camera, receiver, deterrents' folder, rules file)."""
    cam, rec = peers
    out = tmp / "out"
    out.mkdir()
    rules = rules_file(tmp, out, f"{rec.base}/hook", f"telegram:{rec.base}/bot1:T?chat_id=7", **kw)
    return cam, rec, out, rules


@contextmanager
def on_pasture(tmp: Path, models, peers, frames, site: str = "pasture", **kw):
    """A guard watching the camera, once it has seen the empty pasture: (guard, camera, receiver, out)."""
    cam, rec, out, rules = pasture(tmp, peers, **kw)
    cam.show(frames["blank"], "blank")
    with guarding(tmp, models, [f"{site}={cam.url}"], rules) as g:
        wait_for(lambda: g.streams[0].checked >= 2, what="the guard to see the empty pasture")
        yield g, cam, rec, out


def test_a_bear_in_the_mjpeg_stream_fires_the_bear_rule_once(real, models, frames, peers, tmp_path):
    cam, rec = peers
    out = tmp_path / "out"
    out.mkdir()
    rules = rules_file(tmp_path, out, f"{rec.base}/hook", f"telegram:{rec.base}/bot123456:SECRET-TOKEN?chat_id=42")
    cam.show(frames["blank"], "blank")
    with guarding(tmp_path, models, [f"pasture={cam.url}"], rules) as g:
        db = g.journal.path
        wait_for(lambda: g.streams[0].checked >= 4, what="the guard to decide frames of the empty pasture")
        assert not list(out.iterdir()) and not rec.got, "an empty pasture fired"
        cam.show(frames["bear"], "bear")
        (event,) = wait_for(lambda: fired(out, "bear"), what="the bear to fire the bear rule")
        wait_for(lambda: len(rec.got) == 2, what="the notification and the bot message")
        more_frames(g, 6, "more bear frames (the bear stays)")
        wait_for(lambda: rows(db, "SELECT COUNT(*) FROM attempts WHERE ok IS NOT NULL")[0][0] == 3, what="the outcomes")
        text = status(db)
    assert event["rule"] == "bear" and event["outcome"] == FIRED and event["site"] == "pasture"
    assert event["score"] >= 0.1 and event["clock_source"] == "capture" and event["deterrents"]
    assert len(fired(out, "bear")) == 1 and not fired(out, "wolf"), "the bear fired more than once, or the wolf rule"
    outcomes = [o for (o,) in rows(db, "SELECT outcome FROM triggers WHERE rule='bear' ORDER BY id")]
    assert outcomes[0] == FIRED and set(outcomes[1:]) <= {COOLDOWN}  # (cooldowns: one row per 10 s)
    assert g.engine.trackers["bear"].open["pasture"].n >= 7  # the bear stayed in view, one event
    # latency counts from the frame's arrival: after the camera sent it, before the deterrent started
    started, latency = rows(db, "SELECT started, latency_s FROM attempts WHERE role='deter'")[0]
    assert 0 < latency and started - latency >= cam.first_sent["bear"] - 0.01
    # the notification carries the photo with the bear's box drawn; the bot API got it with a caption
    (hook_event, photo), = rec.events("/hook")
    assert hook_event["trigger_id"] == event["trigger_id"] and photo == Path(event["photo"]).read_bytes()
    assert drawn(Path(event["photo"]), RED) > 100 and drawn(Path(event["photo"]), BLUE) == 0
    (bot,) = [g for g in rec.got if g["path"].startswith("/bot")]
    assert bot["path"] == "/bot123456:SECRET-TOKEN/sendPhoto" and bot["fields"]["chat_id"][0] == b"42"
    assert bot["fields"]["photo"][0] == photo and b"bear" in bot["fields"]["caption"][0]
    assert "SECRET-TOKEN" not in db.read_bytes().decode("latin-1")  # the token is never logged
    assert "stream pasture" in text and "connected since" in text and "photo: " in text


def test_a_person_beside_a_bear_fires_nothing_and_notifies(real, models, frames, peers, tmp_path):
    with on_pasture(tmp_path, models, peers, frames, "trail") as (g, cam, rec, out):
        cam.show(frames["person+bear"], "person+bear")
        wait_for(lambda: rec.events("/hook"), what="the notification of the bear held by the veto")
        wait_for(lambda: len(rec.got) == 2, what="the bot message")
        more_frames(g, 4, "more frames of the person and the bear")
        db = g.journal.path
    assert not list(out.iterdir()), "a deterrent fired with a person in frame"
    (event, photo), = rec.events("/hook")
    assert event["rule"] == "bear" and event["outcome"] == VETOED and event["deterrents"] == []
    assert event["person_in_frame"][0] == "human" and "in frame" in event["held_by"] and "NOT deterred" in event["text"]
    assert drawn(photo, BLUE) > 100 and drawn(photo, RED) > 100  # the person's box in blue, the bear's in red
    assert rows(db, "SELECT COUNT(*) FROM attempts WHERE role='deter'")[0][0] == 0
    assert {o for (o,) in rows(db, "SELECT outcome FROM triggers")} <= {VETOED, COOLDOWN}


def test_a_wolf_goes_to_its_own_rule(real, models, frames, peers, tmp_path):
    with on_pasture(tmp_path, models, peers, frames, "ridge") as (g, cam, rec, out):
        cam.show(frames["wolf"], "wolf")
        (event,) = wait_for(lambda: fired(out, "wolf"), what="the wolf rule to fire")
        more_frames(g, 3, "more wolf frames")
    assert event["rule"] == "wolf" and event["target"] == "wolf" and event["score"] >= 0.3
    assert not fired(out, "bear"), "the bear rule fired on a wolf"
    assert [e["rule"] for e, _ in rec.events("/hook")] == ["wolf"]


def test_outside_active_hours_nothing_fires(real, models, frames, peers, tmp_path):
    now = datetime.now()
    a, b = now + timedelta(hours=2), now + timedelta(hours=4)  # a window that excludes the present
    with on_pasture(tmp_path, models, peers, frames, bear=f'active = ["{a:%H:%M}-{b:%H:%M}"]') as (g, cam, rec, out):
        db = g.journal.path
        cam.show(frames["bear"], "bear")
        wait_for(lambda: rows(db, "SELECT COUNT(*) FROM triggers WHERE outcome=?", (OFF_SCHEDULE,))[0][0] >= 1,
                 what="the bear to be seen outside the rule's hours")
        more_frames(g, 4, "more bear frames")
    assert not list(out.iterdir()) and not rec.got, "a rule fired outside its active hours"
    assert rows(db, "SELECT COUNT(*) FROM attempts")[0][0] == 0
    assert {o for (o,) in rows(db, "SELECT outcome FROM triggers")} == {OFF_SCHEDULE}


@pytest.mark.slow
def test_a_stream_that_stops_raises_one_heartbeat_alert_and_one_recovery(real, models, frames, peers, tmp_path):
    with on_pasture(tmp_path, models, peers, frames, heartbeat=2) as (g, cam, rec, out):
        db = g.journal.path
        cam.cut()  # battery dead: the stream ends, reconnections are refused
        wait_for(lambda: rec.events("/hook"), what="the heartbeat alert")
        time.sleep(5.0)  # longer than `after` twice over: still one alert
        silent = status(db)
        assert [e["outcome"] for e, _ in rec.events("/hook")] == ["camera-silent"]
        cam.resume()
        wait_for(lambda: len(rec.events("/hook")) == 2, what="the recovery once frames come back")
        more_frames(g, 4, "frames after the recovery")
        reconnects = g.streams[0].reconnects
    alerts = [e for e, _ in rec.events("/hook")]
    assert [(e["kind"], e["outcome"], e["site"]) for e in alerts] == [("heartbeat", "camera-silent", "pasture"),
                                                                      ("heartbeat", "camera-back", "pasture")]
    assert "silent" in alerts[0]["text"] and "is back" in alerts[1]["text"]
    assert "SILENT: site pasture" in silent and "DISCONNECTED" in silent
    assert reconnects >= 1 and cam.connections >= 2
    assert rows(db, "SELECT outcome FROM triggers WHERE rule='heartbeat' ORDER BY id") == [("camera-silent",), ("camera-back",)]
    assert rows(db, "SELECT COUNT(*) FROM state WHERE key LIKE 'heartbeat:%'")[0][0] == 0


def test_one_guard_watches_a_folder_and_a_stream(real, models, frames, peers, tmp_path):
    cam, rec, out, rules = pasture(tmp_path, peers)
    incoming = tmp_path / "incoming"
    (incoming / "trap1").mkdir(parents=True)
    cam.show(frames["blank"], "blank")
    g = Guard(incoming, streams=[f"ridge={cam.url}"], rules=rules, db=tmp_path / "guard.sqlite", models=models,
              settle=0.3, log=lambda m: None)
    t = threading.Thread(target=g.run, daemon=True)
    t.start()
    try:
        wait_for(lambda: g.streams[0].checked >= 2, what="the stream")
        (incoming / "trap1" / "IMG_0001.JPG").write_bytes((real / BEAR).read_bytes())  # a photo trap uploads
        cam.show(frames["wolf"], "wolf")  # while a wolf walks past the stream camera
        wait_for(lambda: fired(out, "bear") and fired(out, "wolf"), what="both rules to fire")
    finally:
        g.stop()
        t.join(timeout=WAIT)
    (bear,), (wolf,) = fired(out, "bear"), fired(out, "wolf")
    assert (bear["site"], bear["clock_source"], Path(bear["image"]).name) == ("trap1", "arrival", "IMG_0001.JPG")
    assert (wolf["site"], wolf["clock_source"]) == ("ridge", "capture")


@pytest.mark.slow
def test_frames_do_not_pile_up_and_an_empty_pasture_is_gated(real, models, frames, tmp_path):
    cam = MjpegServer(fps=25)
    try:
        cam.show(frames["blank"], "blank")
        rules = tmp_path / "r.toml"
        rules.write_text('[rule.bear]\ntargets = ["bear"]\n')
        with guarding(tmp_path, models, [cam.url], rules, rate=2.0) as g:
            s = g.streams[0]
            wait_for(lambda: s.frames >= 100, what="100 frames from a 25 frames/s camera")
            frames_seen, checked, analysed = s.frames, s.checked, s.analysed
    finally:
        cam.close()
    assert checked <= frames_seen / 2.5  # 8 a second of 25 through the gate: the others dropped, not queued
    assert analysed < checked / 8  # the static frame stays behind the motion gate


def _guard_process(tmp: Path, url: str, rules: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "patou.cli", "guard", "--stream", f"pasture={url}", "--rules", str(rules),
           "--db", str(tmp / "guard.sqlite"), "--threads", "1", "--fast"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(tmp / "guard.log", "a"))


def _cooldowns(db: Path) -> int:
    """Alarms held by the cooldown (a stream journals one every 10 s while the bear stays)."""
    return count(db, "SELECT COUNT(*) FROM triggers WHERE outcome=?", (COOLDOWN,))


@pytest.mark.slow
def test_kill_9_mid_stream_and_restart_doubles_nothing(real, frames, peers, tmp_path):
    cam, rec, out, rules = pasture(tmp_path, peers)
    db = tmp_path / "guard.sqlite"
    cam.show(frames["bear"], "bear")  # the bear is there before, during and after the kill
    p = _guard_process(tmp_path, cam.url, rules)
    try:
        wait_for(lambda: fired(out, "bear"), timeout=120, what="the first guard to fire")
        wait_for(lambda: count(db, "SELECT COUNT(*) FROM attempts WHERE ok IS NOT NULL") == 3, what="its outcomes")
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    n = _cooldowns(db)
    p = _guard_process(tmp_path, cam.url, rules)
    try:
        wait_for(lambda: _cooldowns(db) >= n + 2, timeout=120, what="the restarted guard to hold its fire on the bear")
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=WAIT) == 0
    assert len(fired(out, "bear")) == 1, (tmp_path / "guard.log").read_text()
    assert rows(db, "SELECT COUNT(*) FROM triggers WHERE outcome=?", (FIRED,))[0][0] == 1
    assert rows(db, "SELECT COUNT(*) FROM attempts")[0][0] == 3  # one deterrent, two notifications: once each
    assert len(rec.events("/hook")) == 1


@pytest.mark.slow
def test_an_action_planned_before_a_kill_runs_once_after_the_restart(real, frames, peers, tmp_path):
    """The trigger and its planned attempts are committed before any action starts: a kill -9 while
    the deterrent waits its jitter delay loses nothing, and a second restart does not run it again."""
    db = tmp_path / "guard.sqlite"
    cam, rec, out, rules = pasture(tmp_path, peers, bear='choose = "random"\npick = 1\njitter = 600')
    cam.show(frames["bear"], "bear")
    p = _guard_process(tmp_path, cam.url, rules)
    try:
        wait_for(lambda: count(db, "SELECT COUNT(*) FROM attempts WHERE role='deter' AND started IS NULL") == 1,
                 timeout=120, what="the deterrent to be planned (waiting its delay)")
        wait_for(lambda: len(rec.events("/hook")) == 1, what="the notification (it does not wait)")
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert not fired(out, "bear")
    for _ in range(2):
        p = _guard_process(tmp_path, cam.url, rules)
        try:
            n = _cooldowns(db)
            wait_for(lambda: fired(out, "bear"), timeout=120, what="the restarted guard to run the planned deterrent")
            wait_for(lambda: _cooldowns(db) > n, timeout=120, what="the restarted guard to see the bear")
        finally:
            p.send_signal(signal.SIGTERM)
            assert p.wait(timeout=WAIT) == 0
    assert len(fired(out, "bear")) == 1, (tmp_path / "guard.log").read_text()
    assert rows(db, "SELECT COUNT(*) FROM attempts WHERE role='deter'") == [(1,)]
    assert len(rec.events("/hook")) == 1


@pytest.mark.slow
def test_a_bear_in_an_rtsp_stream_fires(real, models, tmp_path):
    why = rtsp_available()
    if why:
        pytest.skip(f"no RTSP server here: {why}")
    out = tmp_path / "out"
    out.mkdir()
    current = tmp_path / "current.jpg"
    blank, bear = jpeg(real / BLANK, (1280, 960)), jpeg(real / BEAR, (1280, 960))
    current.write_bytes(blank)
    rules = tmp_path / "r.toml"
    rules.write_text(f'[rule.bear]\ntargets = ["bear"]\ndeter = ["{writer(out, "bear")}"]\n')
    with rtsp_server(current, fps=5) as url:
        with guarding(tmp_path, models, [f"rtsp-cam={url}"], rules) as g:
            wait_for(lambda: g.streams[0].checked >= 4, what="frames from the RTSP camera")
            assert not list(out.iterdir())
            (tmp_path / "next.jpg").write_bytes(bear)
            os.replace(tmp_path / "next.jpg", current)  # what the camera sees changes
            (event,) = wait_for(lambda: fired(out, "bear"), what="the bear in the RTSP stream to fire")
            n0 = g.streams[0].analysed
            wait_for(analysed_since(g, n0, 3), what="more RTSP frames")
    assert event["rule"] == "bear" and event["site"] == "rtsp-cam" and len(fired(out, "bear")) == 1


@pytest.mark.slow
def test_replay_with_a_rules_file_reports_per_rule(real, models, capsys):
    rules = Path(__file__).resolve().parents[2] / "docs" / "guard-rules-pyrenees.toml"
    photos = [real / "speciesnet-cameratrapai/test_data", real / SW]  # a bear, wolves, people, a cow
    res = replay(photos, labels=real / "LABELS.csv", rules=rules, models=models)
    text = capsys.readouterr().out
    bear, wolf = res.per_rule["bear"], res.per_rule["wolf"]
    assert bear["target_events"] == 1 and bear["target_caught"] == 1 and bear["person_fired"] == 0
    assert bear["person_events"] == 3
    # the wolves: one by day (off schedule: the wolf rule is night only), one at night
    assert wolf["target_events"] == 2 and wolf["target_caught"] == 2 and wolf["off_schedule"] == 1
    assert wolf["fired"] == 1 and wolf["false_per_100"] == 0
    assert "rule bear:" in text and "rule wolf:" in text and "events with a person labelled: 3; fired there: 0" in text
    assert "latency: each bear event fired at its photo 1: 1;" in text
    assert res.veto["person_events"] == 3 and res.veto["target_events_held"] == 0  # no bear or wolf held
