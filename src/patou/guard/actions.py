"""What the guard does when it fires: run a command, POST to a URL, publish MQTT, drive a GPIO pin, send to a bot.

Every action runs in a thread pool with its own timeout, so a siren that hangs or a dead endpoint
never blocks the watcher; each attempt (start, latency, duration, outcome) goes to the journal.

  command:/usr/local/bin/siren --seconds 20   event JSON on stdin, PATOU_* environment variables
  http://host/hook, https://...               POST the event JSON and its photo (multipart/form-data:
                                              fields event, photo), 3 tries with back-off; a URL
                                              ending in #json POSTs the JSON alone
  mqtt://[user:pass@]broker[:1883]/topic      publish the photo on topic/photo, then the event JSON,
                                              QoS 1 (mqtts:// for TLS)
  gpio:PIN:SECONDS                            pin (BCM number) high for SECONDS, via gpiozero
  telegram:https://api.telegram.org/bot<TOKEN>?chat_id=<ID>   the photo and a caption (a Telegram-style bot API)
"""
from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from ..options import ACTION_TIMEOUT
from .notify import event_parts, multipart, read_photo, summary

DEFAULT_TIMEOUT = ACTION_TIMEOUT


class ActionError(Exception):
    pass


class Action:
    kind = "action"
    sends_photo = False  # it reads the trigger's photo: it waits until the photo is saved

    def __init__(self, spec: str, timeout: float = DEFAULT_TIMEOUT):
        self.spec, self.timeout = spec, timeout

    def __str__(self) -> str:
        return self.spec

    def run(self, event: dict) -> str:
        """Do it; return a short detail on success, raise on failure."""
        raise NotImplementedError

    def close(self) -> None:
        pass


def event_env(event: dict) -> dict[str, str]:
    keys = {"PATOU_TRIGGER_ID": "trigger_id", "PATOU_EVENT_ID": "event_id", "PATOU_SITE": "site",
            "PATOU_TARGET": "target", "PATOU_SCORE": "score", "PATOU_EVENT_MEAN": "event_mean",
            "PATOU_REASON": "reason", "PATOU_IMAGE": "image", "PATOU_TIME": "image_time",
            "PATOU_RULE": "rule", "PATOU_OUTCOME": "outcome", "PATOU_PHOTO": "photo", "PATOU_KIND": "kind"}
    env = {k: "" if event.get(v) is None else str(event[v]) for k, v in keys.items()}
    env["PATOU_TEXT"] = summary(event)
    return env


class CommandAction(Action):
    kind = "command"

    def __init__(self, spec: str, timeout: float = DEFAULT_TIMEOUT):
        super().__init__(spec, timeout)
        self.argv = shlex.split(spec.split(":", 1)[1])
        if not self.argv:
            raise ValueError(f"action {spec!r}: no command after 'command:'")

    def run(self, event: dict) -> str:
        try:
            p = subprocess.run(self.argv, input=json.dumps(event).encode(), capture_output=True,
                               timeout=self.timeout, env={**os.environ, **event_env(event)})
        except subprocess.TimeoutExpired:
            raise ActionError(f"timed out after {self.timeout:g} s (killed)") from None
        except OSError as e:
            raise ActionError(f"cannot run {self.argv[0]}: {e.strerror or e}") from None
        if p.returncode != 0:
            tail = p.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise ActionError(f"exit status {p.returncode} {tail[0][:200]}".strip())
        return "exit status 0"


class HttpAction(Action):
    kind = "http"
    sends_photo = True

    def __init__(self, spec: str, timeout: float = DEFAULT_TIMEOUT, tries: int = 3, backoff: float = 0.5):
        super().__init__(spec, timeout)
        self.tries, self.backoff = tries, backoff
        self.url, _, fragment = spec.partition("#")
        self.json_only = fragment.lower() == "json"

    def __str__(self) -> str:  # never log a password
        u = urllib.parse.urlsplit(self.spec)
        if u.password is None:
            return self.spec
        return self.spec.replace(f":{u.password}@", ":***@", 1)

    def run(self, event: dict) -> str:
        if self.json_only or not event.get("photo"):
            body, ctype = json.dumps(event).encode(), "application/json"
        else:
            body, ctype = event_parts(event)
        deadline = time.monotonic() + self.timeout
        last, i = "", 0
        for i in range(self.tries):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            req = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": ctype, "User-Agent": "patou-guard"})
            try:
                with urllib.request.urlopen(req, timeout=min(left, 10.0)) as resp:
                    return f"HTTP {resp.status} (try {i + 1})"
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
                if 400 <= e.code < 500 and e.code not in (408, 429):
                    break  # the request itself is refused: trying again will not help
            except (urllib.error.URLError, OSError) as e:
                last = str(getattr(e, "reason", e))
            time.sleep(min(self.backoff * 2 ** i, max(0.0, deadline - time.monotonic())))
        raise ActionError(f"{last or 'timed out'} after {i + 1} tries")


class MqttAction(Action):
    kind = "mqtt"
    sends_photo = True

    def __init__(self, spec: str, timeout: float = DEFAULT_TIMEOUT):
        super().__init__(spec, timeout)
        u = urllib.parse.urlsplit(spec)
        self.tls = u.scheme == "mqtts"
        self.host, self.port = u.hostname, u.port or (8883 if self.tls else 1883)
        self.topic = u.path.lstrip("/")
        self.user, self.password = u.username, u.password
        if not self.host or not self.topic:
            raise ValueError(f"action {spec!r}: expected mqtt://[user:pass@]host[:port]/topic")
        _require("paho.mqtt.client", "paho-mqtt", spec)

    def __str__(self) -> str:  # never log a password
        return f"mqtt{'s' if self.tls else ''}://{self.host}:{self.port}/{self.topic}"

    def run(self, event: dict) -> str:
        import paho.mqtt.client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"patou-guard-{os.getpid()}-{secrets.token_hex(3)}")  # unique: triggers may overlap
        client.connect_timeout = min(self.timeout, 10.0)
        if self.user:
            client.username_pw_set(self.user, self.password)
        if self.tls:
            client.tls_set()
        try:
            client.connect(self.host, self.port, keepalive=30)
        except OSError as e:
            raise ActionError(f"cannot connect to {self.host}:{self.port}: {e.strerror or e}") from None
        client.loop_start()
        photo = read_photo(event)
        try:
            sent = []
            messages = [(f"{self.topic}/photo", photo)] if photo is not None else []
            body = dict(event, photo_topic=f"{self.topic}/photo") if photo is not None else event
            for topic, payload in messages + [(self.topic, json.dumps(body))]:
                info = client.publish(topic, payload, qos=1)
                info.wait_for_publish(timeout=self.timeout)
                if not info.is_published():
                    raise ActionError(f"not acknowledged within {self.timeout:g} s ({topic})")
                sent.append(topic)
            return f"published to {', '.join(sent)}"
        finally:
            client.disconnect()
            client.loop_stop()


class GpioAction(Action):
    """Pin high for `seconds`; a second trigger while high keeps it high until the later end."""

    kind = "gpio"

    def __init__(self, spec: str, timeout: float = DEFAULT_TIMEOUT, pin_factory=None):
        super().__init__(spec, timeout)
        parts = spec.split(":")
        try:
            _, pin, seconds = parts
            self.pin, self.seconds = int(pin), float(seconds)
        except ValueError:
            raise ValueError(f"action {spec!r}: expected gpio:PIN:SECONDS, e.g. gpio:17:20") from None
        _require("gpiozero", "gpiozero", spec)
        self.pin_factory = pin_factory
        self._device = None
        self._lock = threading.Lock()
        self._until = 0.0

    def _open(self):
        if self._device is None:  # gpiozero allows one device per pin: open it once, keep it
            from gpiozero import DigitalOutputDevice

            self._device = DigitalOutputDevice(self.pin, pin_factory=self.pin_factory)
        return self._device

    def run(self, event: dict) -> str:
        with self._lock:
            dev = self._open()
            self._until = max(self._until, time.monotonic() + self.seconds)
            dev.on()
        while True:
            with self._lock:
                left = self._until - time.monotonic()
                if left <= 0:
                    dev.off()
                    return f"pin {self.pin} high for {self.seconds:g} s"
            time.sleep(min(left, 0.5))

    def close(self) -> None:
        with self._lock:
            if self._device is not None:
                self._device.off()
                self._device.close()
                self._device = None


class TelegramAction(Action):
    """telegram:https://api.telegram.org/bot<TOKEN>?chat_id=<ID>: the photo with the text as caption."""

    kind = "telegram"
    sends_photo = True

    def __init__(self, spec: str, timeout: float = DEFAULT_TIMEOUT):
        super().__init__(spec, timeout)
        u = urllib.parse.urlsplit(spec.split(":", 1)[1])
        chat = urllib.parse.parse_qs(u.query).get("chat_id", [""])[0]
        if u.scheme not in ("http", "https") or not u.hostname or not chat:
            raise ValueError(f"action {self}: expected telegram:https://api.telegram.org/bot<TOKEN>?chat_id=<CHAT>")
        self.base = urllib.parse.urlunsplit((u.scheme, u.netloc, u.path.rstrip("/"), "", ""))
        self.chat = chat

    def __str__(self) -> str:  # never log the bot token (the path) or a password
        try:
            u = urllib.parse.urlsplit(self.spec.split(":", 1)[1])
            chat = urllib.parse.parse_qs(u.query).get("chat_id", ["?"])[0]
            return f"telegram:{u.hostname}{':' + str(u.port) if u.port else ''} chat {chat}"
        except ValueError:
            return "telegram:(unreadable)"

    def run(self, event: dict) -> str:
        text, photo = summary(event), read_photo(event)
        if photo is not None:
            body, ctype = multipart([("chat_id", self.chat, None, None), ("caption", text[:1024], None, None),
                                     ("photo", photo, Path(event["photo"]).name, "image/jpeg")])
            url = f"{self.base}/sendPhoto"
        else:
            body = urllib.parse.urlencode({"chat_id": self.chat, "text": text}).encode()
            ctype, url = "application/x-www-form-urlencoded", f"{self.base}/sendMessage"
        req = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": ctype, "User-Agent": "patou-guard"})
        try:
            with urllib.request.urlopen(req, timeout=min(self.timeout, 30.0)) as resp:
                reply = json.loads(resp.read(100_000) or b"{}")
        except urllib.error.HTTPError as e:
            raise ActionError(f"HTTP {e.code} from the bot API") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise ActionError(f"bot API: {getattr(e, 'reason', e)}") from None
        if not isinstance(reply, dict) or not reply.get("ok"):
            raise ActionError(f"bot API refused: {str(reply)[:200]}")
        return f"{'photo' if photo is not None else 'message'} sent to chat {self.chat}"


def _require(module: str, package: str, spec: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module.split(".")[0]) is None:
        raise ValueError(f"action {spec!r} needs {package}: pip install 'patou[guard]'")


def parse_action(spec: str, timeout: float = DEFAULT_TIMEOUT, pin_factory=None) -> Action:
    """An Action from its text; a clear ValueError for anything else."""
    low = spec.lower()
    if low.startswith("command:"):
        return CommandAction(spec, timeout)
    if low.startswith(("http://", "https://")):
        return HttpAction(spec, timeout)
    if low.startswith(("mqtt://", "mqtts://")):
        return MqttAction(spec, timeout)
    if low.startswith("gpio:"):
        return GpioAction(spec, timeout, pin_factory=pin_factory)
    if low.startswith("telegram:"):
        return TelegramAction(spec, timeout)
    raise ValueError(f"action {spec!r}: expected command:..., http(s)://..., mqtt://..., gpio:PIN:SECONDS "
                     "or telegram:BOT_API_URL?chat_id=ID")


class Dispatcher:
    """Runs the actions of a trigger at once in worker threads; logs each attempt.

    `run` takes the attempts the journal planned with the trigger (each may wait its jitter delay
    first); an attempt without a plan (id None: the log could not be written) is logged as it starts."""

    def __init__(self, actions: list[Action], journal, log: Callable[[str], None] = print):
        self.actions, self.journal, self.log = actions, journal, log
        self.by_name = {str(a): a for a in actions}
        self.pool = ThreadPoolExecutor(max_workers=max(4, 2 * len(actions)), thread_name_prefix="action")
        self._timers: list[threading.Timer] = []  # jittered attempts wait here, not in a worker
        self._photos: dict[str, threading.Event] = {}  # photo path -> set once it is saved
        self._lock = threading.Lock()
        self._closed = False

    def run(self, trigger_id: int, event: dict, arrived: float | None,
            planned: list[tuple[int | None, Action, float]]) -> None:
        """Planned attempts (attempt id, action, delay s), each in a worker once its delay is over."""
        for aid, action, delay in planned:
            args = (action, trigger_id, event, arrived, aid)
            if delay > 0:
                t = threading.Timer(delay, self._submit, args)
                t.daemon = True
                with self._lock:
                    self._timers = [x for x in self._timers if x.is_alive()] + [t]
                t.start()
            else:
                self._submit(*args)

    def expect_photo(self, path: str) -> None:
        """The photo at `path` is being drawn: actions that send it wait for photo_saved(path)."""
        with self._lock:
            self._photos[path] = threading.Event()

    def photo_saved(self, path: str) -> None:
        """Saved (or given up on: the senders then go without it)."""
        with self._lock:
            ev = self._photos.pop(path, None)
        if ev is not None:
            ev.set()

    def _submit(self, *args) -> None:
        with self._lock:
            if self._closed:
                return  # stopping: a planned attempt that never began runs after the restart
            self.pool.submit(self._attempt, *args)

    def _attempt(self, action: Action, trigger_id: int, event: dict, arrived: float | None,
                 planned: int | None = None) -> bool:
        if action.sends_photo and event.get("photo"):
            with self._lock:
                drawing = self._photos.get(event["photo"])
            if drawing is not None:
                drawing.wait(10.0)  # a deterrent that sends the photo (an http hook) waits for it
        started = time.time()
        latency = started - arrived if arrived else None
        try:
            if planned is None:
                attempt = self.journal.attempt_started(trigger_id, str(action), started, latency)
            else:
                attempt = planned
                self.journal.attempt_begins(planned, started, latency)
        except Exception as e:  # the log is full or broken: still act, the deterrent matters more
            attempt = None
            self.log(f"error: cannot log the attempt of {action}: {e}")
        t0 = time.perf_counter()
        try:
            detail, ok = action.run(event), True
        except Exception as e:  # any failure of one action is logged, never raised into the guard
            detail, ok = f"{type(e).__name__}: {e}" if not isinstance(e, ActionError) else str(e), False
        duration = time.perf_counter() - t0
        if attempt is not None:
            try:
                self.journal.attempt_done(attempt, ok, duration, detail)
            except Exception as e:
                self.log(f"error: cannot log the outcome of {action}: {e}")
        if not ok:
            self.log(f"action failed: {action}: {detail}")
        return ok

    def close(self, wait: bool = True) -> None:
        with self._lock:
            self._closed = True
            for t in self._timers:
                t.cancel()
        self.pool.shutdown(wait=wait, cancel_futures=not wait)
        for a in self.actions:
            a.close()
