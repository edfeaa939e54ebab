"""`patou guard` on real images: a watched folder, real models, real actions (command, HTTP, GPIO mock).

Waits are generous "within N seconds" polls, never timing assertions. One Analyser instance is
shared by the in-process guards (loading the sessions once keeps these tests short).
"""
import io
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from patou.guard import DEFAULT_GUARD_THRESHOLD, Guard, status
from patou.guard.replay import replay
from patou.guard.state import COOLDOWN, FIRED, Tracker
from patou.pipeline import Analyser

ENA = "zamba-ena24-small/tests/assets/images/ena24_small"
SN = "speciesnet-cameratrapai/test_data"
BEAR_1, BEAR_2 = f"{ENA}/8831.jpg", f"{ENA}/9455.jpg"  # confident bears, no EXIF time
BLANK = f"{SN}/blank.jpg"
FOX = f"{ENA}/4383.jpg"  # a grey fox at night: not a bear
# The bound of a wait for a guard that is broken, not a timing: every wait ends as soon as its
# condition holds, so a loaded machine only makes it longer (30 s once ran out in a full run).
WAIT = 600.0
_progress = threading.Condition()  # notified whenever an in-process guard handled a file or logged


def _notify(*_) -> None:
    with _progress:
        _progress.notify_all()


@pytest.fixture(scope="module")
def models():
    return Analyser(fast=True)


def wait_for(cond, timeout=WAIT, what="condition"):
    """Wait on the guard's own progress (in-process guards wake it) until `cond()` holds; the
    condition is also re-checked a few times a second for what happens elsewhere (a subprocess
    guard, an action's thread)."""
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        left = end - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {what} after {timeout:g} s")
        with _progress:
            _progress.wait(min(left, 0.2))


def rows(db: Path, sql: str, args=()):
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def n_processed(db: Path) -> int:
    return rows(db, "SELECT COUNT(*) FROM files")[0][0] if db.exists() else 0


def drop(real: Path, rel: str, incoming: Path, name: str | None = None) -> Path:
    """Copy a real image into the watched folder the way a camera upload does (new mtime)."""
    dst = incoming / (name or Path(rel).name)
    shutil.copyfile(real / rel, dst)
    return dst


def fired_events(out: Path) -> list[dict]:
    """The events the writer action wrote; [] while one is still being written."""
    events = []
    for p in sorted(out.glob("fired-*.json")):
        try:
            events.append(json.loads(p.read_text()))
        except ValueError:
            return []
    return events


def writer_action(out: Path) -> str:
    """A command action that writes the event JSON it gets on stdin to out/fired-<trigger id>.json."""
    return f"command:sh -c 'cat > {out}/fired-$PATOU_TRIGGER_ID.json'"


@contextmanager
def running(tmp: Path, models, actions, **kw):
    incoming = tmp / "incoming"
    incoming.mkdir(exist_ok=True)
    kw.setdefault("settle", 0.3)
    kw.setdefault("rescan", 5.0)
    said = kw.pop("log", lambda m: None)
    kw["log"] = lambda m: (said(m), _notify())
    g = Guard(incoming, actions=actions, db=tmp / "guard.sqlite", models=models, **kw)
    handle = g.handle_safely

    def handled(path):
        try:
            return handle(path)
        finally:
            _notify()
    g.handle_safely = handled
    t = threading.Thread(target=g.run, daemon=True)
    t.start()
    try:
        yield g, incoming
    finally:
        g.stop()
        t.join(timeout=WAIT)
        assert not t.is_alive(), "the guard did not stop"


def test_tracker_events_cooldown_and_running_mean():
    from datetime import datetime, timedelta

    t0 = datetime(2026, 6, 1, 22, 0, 0)
    tr = Tracker(threshold=0.3, cooldown=60, gap=20)
    assert tr.observe("A", t0, 0.0, scored=False).outcome is None  # empty frame opens the event
    d = tr.observe("A", t0 + timedelta(seconds=5), 0.8, scored=True)
    assert d.outcome == FIRED and d.reason == "image" and not d.new_event
    d = tr.observe("A", t0 + timedelta(seconds=8), 0.1, scored=True)  # mean (0.8+0.1)/2 >= 0.3
    assert d.reason == "event-mean" and d.outcome == COOLDOWN
    assert tr.observe("B", t0 + timedelta(seconds=9), 0.9, scored=True).outcome == FIRED  # other site
    d = tr.observe("A", t0 + timedelta(seconds=50), 0.9, scored=True)  # new event, still cooling down
    assert d.new_event and d.outcome == COOLDOWN
    d = tr.observe("A", t0 + timedelta(seconds=70), 0.9, scored=True)  # the bear stayed: fire again
    assert not d.new_event and d.outcome == FIRED
    assert tr.observe("A", t0 + timedelta(seconds=300), 0.05, scored=True).outcome is None


@pytest.mark.slow
def test_bear_fires_command_empty_and_fox_do_not_second_bear_cools_down(real, models, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with running(tmp_path, models, [writer_action(out)]) as (g, incoming):
        db = g.journal.path
        drop(real, BLANK, incoming)
        drop(real, FOX, incoming)
        wait_for(lambda: n_processed(db) == 2, what="the empty and fox photos to be processed")
        assert not list(out.iterdir()), "an empty or non-bear photo fired"

        drop(real, BEAR_1, incoming)
        event, = wait_for(lambda: fired_events(out), what="the bear photo to fire the command")
        assert event["target"] == "bear" and event["score"] >= DEFAULT_GUARD_THRESHOLD
        assert Path(event["image"]).name == "8831.jpg" and event["outcome"] == FIRED

        drop(real, BEAR_2, incoming)  # the same visit, within the cooldown
        wait_for(lambda: n_processed(db) == 4, what="the second bear photo to be processed")
        time.sleep(0.5)
        assert len(list(out.glob("fired-*.json"))) == 1, "the second bear photo of the visit fired again"
        outcomes = rows(db, "SELECT path, outcome FROM triggers ORDER BY id")
        assert [(Path(p).name, o) for p, o in outcomes] == [("8831.jpg", FIRED), ("9455.jpg", COOLDOWN)]
        labels = dict((Path(p).name, lab) for p, lab in rows(db, "SELECT path, label FROM files"))
        assert labels["blank.jpg"] == "empty" and labels["8831.jpg"] == "bear"
        wait_for(lambda: rows(db, "SELECT ok FROM attempts WHERE ok IS NOT NULL"), what="the attempt's outcome")
        text = status(db)  # readable while the guard runs
    assert "4 images processed" in text and "1 cooldown, 1 fired" in text and "ok of 1" in text
    assert "latency from file written (frame received) to action start: p50" in text and "8831.jpg" in text


@pytest.mark.slow
def test_hidden_and_temporary_names_wait_for_their_final_name(real, models, tmp_path):
    with running(tmp_path, models, []) as (g, incoming):
        db = g.journal.path
        drop(real, BEAR_1, incoming, ".8831.jpg")
        part = drop(real, BEAR_2, incoming, "9455.jpg.part")
        time.sleep(1.5)
        assert n_processed(db) == 0
        part.rename(incoming / "9455.jpg")  # the uploader's last step
        wait_for(lambda: n_processed(db) == 1, what="the renamed file to be processed")
        time.sleep(0.5)
        assert [Path(p).name for (p,) in rows(db, "SELECT path FROM files")] == ["9455.jpg"]


def _guard_process(tmp: Path, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "patou.cli", "guard", "--watch", str(tmp / "incoming"), "--db", str(tmp / "guard.sqlite"),
           "--action", writer_action(out), "--settle", "0.3", "--threads", "1"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(tmp / "guard.log", "a"))


@pytest.mark.slow
def test_kill_and_restart_neither_refires_nor_skips(real, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    db = tmp_path / "guard.sqlite"
    p = _guard_process(tmp_path, out)
    try:
        drop(real, BEAR_1, incoming)
        wait_for(lambda: list(out.glob("fired-*.json")), what="the first guard to fire")
        wait_for(lambda: rows(db, "SELECT COUNT(*) FROM attempts WHERE ok=1")[0][0] == 1, what="the attempt to be logged")
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    drop(real, BLANK, incoming)  # arrives while the guard is down
    p = _guard_process(tmp_path, out)
    try:
        wait_for(lambda: n_processed(db) == 2, what="the restarted guard to process the file that came meanwhile")
        drop(real, BEAR_2, incoming)  # same visit as the first bear: the restored cooldown holds
        wait_for(lambda: n_processed(db) == 3, what="the second bear photo to be processed")
        time.sleep(0.5)
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=WAIT) == 0
    assert len(list(out.glob("fired-*.json"))) == 1, (tmp_path / "guard.log").read_text()
    assert rows(db, "SELECT outcome FROM triggers ORDER BY id") == [(FIRED,), (COOLDOWN,)]
    assert rows(db, "SELECT COUNT(*) FROM attempts")[0][0] == 1


@pytest.mark.slow
def test_failing_action_is_logged_and_the_next_event_fires(real, models, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    # fails (exit 3) the first time it runs, works after; plus an HTTP endpoint nobody listens on
    flaky = f"command:sh -c 'test -e {out}/once || {{ touch {out}/once; exit 3; }}; cat > {out}/fired-$PATOU_TRIGGER_ID.json'"
    dead = "http://127.0.0.1:9/hook"
    with running(tmp_path, models, [flaky, dead], cooldown=0, event_gap=0.5, action_timeout=1.5) as (g, incoming):
        db = g.journal.path
        drop(real, BEAR_1, incoming)
        wait_for(lambda: rows(db, "SELECT COUNT(*) FROM attempts WHERE ok=0")[0][0] == 2, what="both failures to be logged")
        time.sleep(1.0)  # more than the event gap: the next photo is a new event
        drop(real, BEAR_2, incoming)
        event, = wait_for(lambda: fired_events(out), what="the next event to fire")
        assert event["image"].endswith("9455.jpg")
        wait_for(lambda: rows(db, "SELECT ok FROM attempts WHERE trigger_id=2 AND action LIKE 'command%' AND ok IS NOT NULL"),
                 what="the second command's outcome")
        attempts = rows(db, "SELECT trigger_id, action, ok, detail FROM attempts ORDER BY trigger_id, action")
    first = [a for a in attempts if a[0] == 1]
    assert all(a[2] == 0 for a in first) and any("exit status 3" in a[3] for a in first)
    assert any(a[1].startswith("http") and a[3] for a in first)  # the dead endpoint, with its reason
    assert [a[2] for a in attempts if a[0] == 2 and a[1].startswith("command")] == [1]


@pytest.mark.parametrize("poll", [None, 0.2], ids=["inotify", "polling"])
@pytest.mark.slow
def test_truncated_file_written_slowly_is_processed_once_whole(real, models, tmp_path, poll):
    data = (real / BEAR_1).read_bytes()
    said = []
    with running(tmp_path, models, [], poll=poll, log=said.append) as (g, incoming):
        db = g.journal.path
        dst = incoming / "slow.jpg"
        with open(dst, "wb") as f:  # an upload that stalls for longer than the settle time
            for i in range(3):
                f.write(data[i * len(data) // 3:(i + 1) * len(data) // 3])
                f.flush()
                time.sleep(1.0)
        wait_for(lambda: n_processed(db) >= 1, what="the slow file to be processed")
        time.sleep(1.0)
        files = rows(db, "SELECT size, status, label FROM files")
    assert files == [(len(data), "done", "bear")]
    assert rows(db, "SELECT COUNT(*) FROM failures")[0][0] == 0
    assert any(m.startswith("partial:") for m in said), said  # it was seen half-written, and waited


@pytest.mark.parametrize("head", [2, 100])
@pytest.mark.slow
def test_archive_waits_for_an_upload_that_pauses_and_keeps_it_whole(real, models, tmp_path, head):
    """Issue 10 item 1: a writer sends `head` bytes, pauses 3 s, then the rest. The photo must be
    analysed once whole (the bear found) and archived whole, also onto another filesystem."""
    data = (real / BEAR_1).read_bytes()
    shm = Path("/dev/shm")
    cross = shm.is_dir() and shm.stat().st_dev != tmp_path.stat().st_dev
    archive = (shm / f"patou-guard-{tmp_path.name}") if cross else tmp_path / "archive"
    said = []
    try:
        with running(tmp_path, models, [], archive=archive, settle=1.0, log=said.append) as (g, incoming):
            db = g.journal.path
            with open(incoming / "IMG_0042.JPG", "wb") as f:
                f.write(data[:head])
                f.flush()
                time.sleep(3.0)
                f.write(data[head:])
            wait_for(lambda: (archive / "IMG_0042.JPG").exists() or (archive / "failed/IMG_0042.JPG").exists(),
                     what="the photo to be archived")
            files = rows(db, "SELECT size, status, label FROM files")
            failures = rows(db, "SELECT path, stage, message FROM failures")
        assert files == [(len(data), "done", "bear")], (files, said)
        assert failures == []
        assert (archive / "IMG_0042.JPG").read_bytes() == data
        assert not (archive / "failed").exists()
        assert any(m.startswith("partial:") for m in said), said
    finally:
        shutil.rmtree(archive, ignore_errors=True)


def test_http_action_receives_the_event_json_and_the_photo(real, models, tmp_path):
    from PIL import Image
    from stream_servers import RED, drawn, parse_multipart

    got = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            ctype = self.headers["Content-Type"]
            got.append((ctype, json.loads(body) if ctype == "application/json" else parse_multipart(ctype, body)))
            self.send_response(500 if len(got) == 1 else 200)  # the first try fails: retried
            self.end_headers()

        def log_message(self, *a):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/hook"
        with running(tmp_path, models, [url, url.replace("/hook", "/plain#json")]) as (g, incoming):
            drop(real, BEAR_1, incoming)
            wait_for(lambda: len(got) == 3, what="the HTTP hooks to get the event (one after a retry)")
            wait_for(lambda: len(rows(g.journal.path, "SELECT ok FROM attempts WHERE ok IS NOT NULL")) == 2,
                     what="the attempts' outcomes")
            attempt = rows(g.journal.path, "SELECT action, ok, detail FROM attempts ORDER BY action")
    finally:
        server.shutdown()
    (ctype, fields), = [x for x in got if x[0].startswith("multipart/form-data")][-1:]
    event = json.loads(fields["event"][0])
    assert event["target"] == "bear" and event["score"] >= DEFAULT_GUARD_THRESHOLD and event["trigger_id"] == 1
    photo, name = fields["photo"]
    assert name.endswith(".jpg") and Path(event["photo"]).read_bytes() == photo  # the saved photo, sent
    img = Image.open(io.BytesIO(photo))
    assert img.format == "JPEG" and max(img.size) <= 1024
    assert drawn(photo, RED) > 100  # the bear's box is drawn in red
    plain = [b for c, b in got if c == "application/json"]
    assert plain and plain[0]["trigger_id"] == 1  # #json: the JSON alone, as before photos
    assert sorted(ok_detail[1:] for ok_detail in attempt) == [(1, "HTTP 200 (try 1)"), (1, "HTTP 200 (try 2)")]


@pytest.mark.slow
def test_gpio_pin_goes_high_then_low_with_the_mock_factory(real, models, tmp_path):
    from gpiozero.pins.mock import MockFactory

    factory = MockFactory()
    with running(tmp_path, models, ["gpio:17:1.5"], pin_factory=factory) as (g, incoming):
        pin = factory.pin(17)
        assert not pin.state
        drop(real, BEAR_1, incoming)
        wait_for(lambda: pin.state, what="GPIO 17 to go high")
        wait_for(lambda: not pin.state, what="GPIO 17 to go low again")
        wait_for(lambda: rows(g.journal.path, "SELECT ok FROM attempts WHERE ok IS NOT NULL"), what="the attempt's outcome")
        assert rows(g.journal.path, "SELECT action, ok FROM attempts") == [("gpio:17:1.5", 1)]


@pytest.mark.slow
def test_archive_moves_processed_files_and_never_clobbers(real, models, tmp_path):
    archive = tmp_path / "archive"
    # partial_grace: how long an unreadable file may still be arriving before it goes to failed/
    said = []
    with running(tmp_path, models, [], archive=archive, partial_grace=2.0, log=said.append) as (g, incoming):
        db = g.journal.path
        (incoming / "cam2").mkdir()
        drop(real, BLANK, incoming / "cam2", "IMG_0001.JPG")
        wait_for(lambda: (archive / "cam2/IMG_0001.JPG").exists(), what="the first file to be archived")
        drop(real, FOX, incoming / "cam2", "IMG_0001.JPG")  # the camera reuses a name
        wait_for(lambda: (archive / "cam2/IMG_0001-1.JPG").exists(), what="the second file to be archived")
        (incoming / "broken.jpg").write_bytes(b"not a jpeg at all")
        wait_for(lambda: (archive / "failed/broken.jpg").exists(), what="the unreadable file to be archived")
    assert (archive / "cam2/IMG_0001.JPG").read_bytes() == (real / BLANK).read_bytes()
    assert (archive / "cam2/IMG_0001-1.JPG").read_bytes() == (real / FOX).read_bytes()
    assert sorted(p.name for p in incoming.rglob("*") if p.is_file()) == []
    sites = rows(db, "SELECT site, status FROM files ORDER BY processed")
    assert sites == [("cam2", "done"), ("cam2", "done"), (".", "failed")]


@pytest.mark.slow
def test_replay_prints_what_would_fire_and_scores_events(real, models, capsys):
    photos = [real / "camtrapdp-mica-heron", real / SN]  # a night-IR heron burst, a night-IR bear, a black cow
    res = replay(photos, labels=real / "LABELS.csv", models=models)
    text = capsys.readouterr().out
    m = res.metrics
    assert m["target_events"] == 1 and m["target_caught"] == 1  # the night-IR black bear
    assert m["night_false"] == 0 and m["night_events"] >= 2  # heron burst and the IR blank do not fire
    assert [a.record.path.name for a in res.false_triggers] == ["domestic_cattle.jpg"]
    assert "FIRE" in text and "american_black_bear.jpg" in text and "bear events caught: 1/1" in text
    heron = [r for r in res.records if "heron" in str(r.root)]
    assert len({r.event_id for r in heron}) == 1  # 10 frames in 6 s: one event


def _fake_mqtt_broker(received: list):
    """Just enough MQTT 3.1.1 for one client: CONNACK its CONNECT, PUBACK its QoS 1 PUBLISH."""
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def read_packet(conn):
        head = conn.recv(1)
        if not head:
            return None, b""
        length, shift = 0, 0
        while True:
            b = conn.recv(1)[0]
            length |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        body = b""
        while len(body) < length:
            body += conn.recv(length - len(body))
        return head[0], body

    def serve():
        conn, _ = srv.accept()
        with conn:
            while True:
                kind, body = read_packet(conn)
                if kind is None or kind >> 4 == 14:  # closed, DISCONNECT
                    return
                if kind >> 4 == 1:  # CONNECT
                    conn.sendall(b"\x20\x02\x00\x00")
                elif kind >> 4 == 3:  # PUBLISH
                    n = int.from_bytes(body[:2], "big")
                    topic, rest = body[2:2 + n].decode(), body[2 + n:]
                    msg_id, payload = rest[:2], rest[2:]
                    received.append((topic, (kind >> 1) & 3, payload))
                    conn.sendall(b"\x40\x02" + msg_id)

    threading.Thread(target=serve, daemon=True).start()
    return srv


def _check_mqtt_messages(received: list) -> None:
    """The photo on <topic>/photo first, then the event JSON on <topic>, both QoS 1."""
    assert [(t, q) for t, q, _ in received] == [("patou/alerts/photo", 1), ("patou/alerts", 1)]
    photo, event = received[0][2], json.loads(received[1][2])
    assert photo[:3] == b"\xff\xd8\xff" and Path(event["photo"]).read_bytes() == photo
    assert event["target"] == "bear" and event["trigger_id"] == 1 and event["photo_topic"] == "patou/alerts/photo"


def test_mqtt_action_publishes_the_photo_and_the_event_to_a_real_broker(real, models, tmp_path):
    from stream_servers import MOSQUITTO, mosquitto

    if MOSQUITTO is None:
        pytest.skip("mosquitto not installed (apt-get install mosquitto; .ci/run does): the fake-broker test runs instead")
    import paho.mqtt.client as mqtt

    received = []
    with mosquitto(tmp_path) as port:
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="patou-test-sub")
        sub.username_pw_set("patou", "s3cret-pw")
        sub.on_message = lambda c, u, m: received.append((m.topic, m.qos, m.payload))
        subscribed = threading.Event()
        sub.on_subscribe = lambda *a: subscribed.set()
        sub.on_connect = lambda c, *a: c.subscribe("patou/alerts/#", qos=1)
        sub.connect("127.0.0.1", port)
        sub.loop_start()
        try:
            assert subscribed.wait(WAIT), "the test subscriber could not subscribe"
            url = f"mqtt://patou:s3cret-pw@127.0.0.1:{port}/patou/alerts"
            with running(tmp_path, models, [url]) as (g, incoming):
                drop(real, BEAR_1, incoming)
                wait_for(lambda: len(received) == 2, what="the broker to deliver the photo and the alert")
                wait_for(lambda: rows(g.journal.path, "SELECT ok FROM attempts WHERE ok IS NOT NULL"), what="the attempt's outcome")
                attempts = rows(g.journal.path, "SELECT action, ok FROM attempts")
        finally:
            sub.loop_stop()
            sub.disconnect()
    _check_mqtt_messages(received)
    assert attempts == [(f"mqtt://127.0.0.1:{port}/patou/alerts", 1)]  # the password is never logged
    assert "s3cret-pw" not in (tmp_path / "guard.sqlite").read_bytes().decode("latin-1")


def test_mqtt_action_with_the_fake_broker_when_mosquitto_is_absent(real, models, tmp_path):
    from stream_servers import MOSQUITTO

    if MOSQUITTO is not None:
        pytest.skip("mosquitto is installed: the real-broker test covers MQTT (this fake is the fallback)")
    received = []
    srv = _fake_mqtt_broker(received)
    try:
        url = f"mqtt://127.0.0.1:{srv.getsockname()[1]}/patou/alerts"
        with running(tmp_path, models, [url]) as (g, incoming):
            drop(real, BEAR_1, incoming)
            wait_for(lambda: len(received) == 2, what="the broker to receive the photo and the alert")
            wait_for(lambda: rows(g.journal.path, "SELECT ok FROM attempts WHERE ok IS NOT NULL"), what="the attempt's outcome")
            assert rows(g.journal.path, "SELECT ok FROM attempts") == [(1,)]
    finally:
        srv.close()
    _check_mqtt_messages(received)


@pytest.mark.slow
def test_faults_are_logged_and_the_guard_goes_on(real, models, tmp_path, monkeypatch):
    """A non-image, a model error and a full disk each cost at most their photo; bears still fire."""
    out = tmp_path / "out"
    out.mkdir()
    real_analyse = models.analyse
    calls = []

    def analyse_failing_once(loaded, record, thr):
        calls.append(record.path.name)
        if len(calls) == 1:
            raise RuntimeError("simulated ONNX Runtime failure")
        return real_analyse(loaded, record, thr)

    monkeypatch.setattr(models, "analyse", analyse_failing_once)
    said = []
    with running(tmp_path, models, [writer_action(out)], cooldown=0, event_gap=0.5, log=said.append,
                 partial_grace=2.0) as (g, incoming):
        db = g.journal.path
        (incoming / "notes.jpg").write_text("not a photo")
        drop(real, BEAR_1, incoming, "first.jpg")  # hits the model error
        wait_for(lambda: n_processed(db) == 2, what="the two faulty files to be logged")
        failures = dict((Path(p).name, m) for p, m in rows(db, "SELECT path, message FROM failures"))
        assert "not an image" in failures["notes.jpg"] and "simulated" in failures["first.jpg"]
        assert not list(out.iterdir())

        def disk_full(*a, **k):
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(g.journal, "record_image", disk_full)
        time.sleep(1.0)
        drop(real, BEAR_2, incoming)
        wait_for(lambda: list(out.glob("fired-*.json")), what="the bear to fire despite the full disk")
        assert any("disk is full" in m for m in said)
        monkeypatch.undo()  # the disk has room again
        time.sleep(1.0)
        drop(real, BEAR_1, incoming, "later.jpg")
        wait_for(lambda: rows(db, "SELECT COUNT(*) FROM triggers WHERE path LIKE '%later.jpg'")[0][0] == 1,
                 what="the guard to go on logging after the full disk")
