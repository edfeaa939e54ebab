"""Live camera streams (RTSP, HTTP MJPEG, V4L2): the newest frame at a set rate, a motion gate, reconnects.

One reader thread per stream keeps only the newest frame (a one-frame mailbox: frames that come
while the guard is busy replace each other, nothing piles up) and reconnects with a growing pause
(0.5 s doubling to 30 s) whenever the stream fails, stalls (`timeout`) or ends. The guard's loop
puts up to GATE_FACTOR x `rate` frames a second through the motion gate (cheap) and sends at most
`rate` a second to the models: the first frame that moves after a quiet spell is analysed at
once, not at the next tick of the rate. A frame's clock is when its last byte arrived here:
latency counts from there.

- http(s)://: patou reads multipart/x-mixed-replace (MJPEG) itself, so a frame that is not
  decided costs no decoding; a URL answering one JPEG (a snapshot URL) is fetched `rate` times a
  second; anything else goes to OpenCV's FFmpeg.
- rtsp://, other URLs, /dev/videoN or N (V4L2): OpenCV (FFmpeg over TCP for RTSP; V4L2 for
  devices), which decodes every frame it grabs but converts only the ones decided.

The motion gate compares a 128x96 grey thumbnail (decoded at 1/8 from the JPEG) with a running
background, after removing the frame-wide brightness change (clouds, IR switching): a frame goes
to the models only when enough of it moved, while the last analysed frame still had something
in it (an animal standing still), or every `check_every` seconds anyway (a slow animal the gate
misses is found within that time).
"""
from __future__ import annotations

import base64
import io
import os
import re
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image

from ..media import to_rgb8
from ..options import STREAM_MOTION, STREAM_RATE

GATE_SIZE = (128, 96)
DEFAULT_RATE = STREAM_RATE  # frames sent to the models per second per stream, at most
DEFAULT_MOTION = STREAM_MOTION  # fraction of the thumbnail that must change (patou/options.py)
CHECK_EVERY = 10.0  # seconds: a frame is analysed at least this often, motion or not
GATE_FACTOR = 4  # frames through the gate per frame to the models (the gate costs ~1/50 of the models)
MAX_PART = 32_000_000  # bytes: a bigger MJPEG part is not a camera frame
_DEVICE = re.compile(r"^(/dev/video\d+|\d{1,2})$")
_SITE = re.compile(r"^([A-Za-z0-9_.-]{1,64})=(.+)$")


def redact(url: str) -> str:
    """The URL without its password, for logs and the journal."""
    try:
        u = urllib.parse.urlsplit(url)
        password = u.password
    except ValueError:
        return url
    if password is None:
        return url
    return url.replace(f":{password}@", ":***@", 1)


def parse_stream(spec: str) -> tuple[str, str]:
    """'[SITE=]URL_OR_DEVICE' -> (site, source); the site defaults to the host, port and path."""
    m = _SITE.match(spec)
    site, source = (m.group(1), m.group(2)) if m and ("://" in m.group(2) or _DEVICE.match(m.group(2))) else (None, spec)
    source = source.strip()
    if _DEVICE.match(source):
        default = "video" + re.sub(r"\D", "", source)
    else:
        u = urllib.parse.urlsplit(source)
        if not u.scheme or not u.hostname or "://" not in source:
            raise ValueError(f"--stream {redact(spec)!r}: expected rtsp://..., http(s)://... (MJPEG), "
                             "a V4L2 device (/dev/video0 or 0), optionally as SITE=...")
        parts = [u.hostname, str(u.port or ""), *u.path.split("/")]
        default = re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(p for p in parts if p)).strip("-.") or u.hostname
    return site or default[:64], source


@dataclass
class Frame:
    seq: int
    received: float  # time.time() when it arrived
    jpeg: bytes | None = None
    array: np.ndarray | None = None  # BGR, from OpenCV

    def grey(self) -> np.ndarray | None:
        """The gate's thumbnail: cheap (a JPEG decodes at 1/8 straight to grey)."""
        import cv2

        if self.jpeg is not None:
            g = cv2.imdecode(np.frombuffer(self.jpeg, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8)
        else:
            g = cv2.cvtColor(cv2.resize(self.array, (GATE_SIZE[0] * 2, GATE_SIZE[1] * 2),
                                        interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
        if g is None or g.size == 0:
            return None
        return cv2.resize(g, GATE_SIZE, interpolation=cv2.INTER_AREA)

    def image(self, side: int, max_pixels: int) -> Image.Image:
        """RGB for the models, at about `side` px (JPEG draft, as files are decoded); ValueError if bad."""
        if self.jpeg is not None:
            try:
                img = Image.open(io.BytesIO(self.jpeg))
                w, h = img.size
                if img.format == "JPEG":
                    s = min(1.0, side / max(w, h))
                    img.draft("RGB", (max(1, int(w * s)), max(1, int(h * s))))
                if img.size[0] * img.size[1] > max_pixels:
                    raise ValueError(f"frame too large to decode safely: {w}x{h}")
                img.load()
            except ValueError:
                raise
            except Exception as e:  # truncated or not an image: one line, the stream goes on
                raise ValueError(f"unreadable frame ({type(e).__name__}: {e})") from None
            img = to_rgb8(img)
            if max(img.size) > side * 2:
                img.thumbnail((side, side), Image.Resampling.BILINEAR)
            return img
        import cv2

        a = self.array
        h, w = a.shape[:2]
        if max(w, h) > side:
            s = side / max(w, h)
            a = cv2.resize(a, (max(1, int(w * s)), max(1, int(h * s))), interpolation=cv2.INTER_AREA)
        return Image.fromarray(cv2.cvtColor(a, cv2.COLOR_BGR2RGB))


class MotionGate:
    """Whether a frame is worth the models: motion, something seen last time, or a periodic check."""

    def __init__(self, threshold: float = DEFAULT_MOTION, check_every: float = CHECK_EVERY, level: int = 18):
        self.threshold, self.check_every, self.level = threshold, check_every, level
        self._bg: np.ndarray | None = None
        self._last_check = -1e18
        self.occupied = False  # the last analysed frame had a box in it

    def wants(self, grey: np.ndarray | None, now: float) -> tuple[bool, str]:
        moved = self.motion(grey)
        if self.threshold <= 0:
            why = "no gate"
        elif moved is None or moved >= self.threshold:
            why = "motion" if moved is not None else "first frame"
        elif self.occupied:
            why = "something in frame"
        elif now - self._last_check >= self.check_every:
            why = "periodic check"
        else:
            return False, f"still ({100 * moved:.2f} % moved)"
        self._last_check = now
        return True, why

    def motion(self, grey: np.ndarray | None) -> float | None:
        """Fraction of the thumbnail that changed against the background (None: no background yet)."""
        if grey is None:
            return None
        g = grey.astype(np.float32)
        if self._bg is None or self._bg.shape != g.shape:
            self._bg = g
            return None
        d = g - self._bg
        d -= np.median(d)  # a frame-wide change of light is not motion
        self._bg += 0.5 * (g - self._bg)
        return float(np.mean(np.abs(d) > self.level))


class Stream:
    """One camera stream: a reader thread, the newest frame, counters for --status."""

    def __init__(self, spec: str, rate: float = DEFAULT_RATE, motion: float = DEFAULT_MOTION,
                 check_every: float = CHECK_EVERY, wake: Callable[[], None] = lambda: None,
                 log: Callable[[str], None] = print, timeout: float = 10.0, backoff_max: float = 30.0):
        if rate <= 0:
            raise ValueError(f"--rate {rate:g}: expected frames per second > 0")
        self.site, self.source = parse_stream(spec)
        self.name = redact(self.source)
        self._secret = urllib.parse.urlsplit(self.source).password if "://" in self.source else None
        self.period, self.wake, self.log = 1.0 / rate, wake, log
        self.gate_period = self.period / GATE_FACTOR
        self.timeout, self.backoff_max = timeout, backoff_max
        self.gate = MotionGate(motion, check_every)
        self._lock = threading.Lock()
        self._pending: Frame | None = None
        self._due = 0.0  # monotonic time the next frame may be taken (for the gate)
        self._next_analysis = 0.0  # ... and sent to the models
        self.armed = False  # the gate opened while the models' budget was spent: analyse the next one
        self.logged_at = -1e18  # monotonic time a frame of this stream was last journalled
        self.failure: str | None = None  # the last frame failure logged (one line per kind, not per frame)
        self._seq = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # counters (read by the guard loop for the journal and --status)
        self.frames = self.checked = self.analysed = self.reconnects = 0
        self.connected, self.since, self.last_frame, self.error = False, None, None, None
        self.changed = True

    def __str__(self) -> str:
        return f"{self.site} ({self.name})"

    def scrub(self, text: str) -> str:
        """An error text without the stream's password, wherever it appears."""
        return text.replace(self._secret, "***") if self._secret else text

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"stream-{self.site}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 5)

    # -- the guard's side ----------------------------------------------------------------------
    def _take_at(self) -> float:
        return max(self._due, self._next_analysis) if self.armed else self._due

    def take(self, now: float) -> Frame | None:
        """The newest frame for the gate, if there is a new one and the gate's rate allows one now."""
        with self._lock:
            f = self._pending
            if f is None or now < self._take_at():
                return None
            self._pending = None
            self._due = now + self.gate_period
            self.checked += 1
            return f

    def admit(self, moved: bool, now: float) -> bool:
        """After the gate: whether this frame goes to the models now (at most `rate` a second)."""
        if not (moved or self.armed):
            return False
        if now < self._next_analysis:
            self.armed = True  # the next frame will go, once the budget allows
            return False
        self.armed = False
        self._next_analysis = now + self.period
        self.analysed += 1
        return True

    def next_due(self, now: float) -> float | None:
        """When take() will have a frame (None: not before a new one arrives; it wakes the guard)."""
        with self._lock:
            return None if self._pending is None else max(now, self._take_at())

    # -- the reader's side ---------------------------------------------------------------------
    def _wanted(self) -> bool:
        return time.monotonic() >= self._take_at() and self._pending is None

    def _put(self, received: float, jpeg: bytes | None = None, array: np.ndarray | None = None) -> None:
        with self._lock:
            self._seq += 1
            was_empty = self._pending is None
            self._pending = Frame(self._seq, received, jpeg, array)
        if was_empty:  # else the guard already waits for the due time of the one it has
            self.wake()

    def _arrived(self) -> float:
        now = time.time()
        self.frames += 1
        self.last_frame = now
        return now

    def _connected(self) -> None:
        self.connected, self.since, self.error, self.changed = True, time.time(), None, True
        self.log(f"stream {self}: connected")

    def _run(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            before = self.frames
            try:
                self._read()
                err = "the stream ended"
            except Exception as e:  # whatever failed, the reader reconnects
                err = f"{type(e).__name__}: {e}"
            with self._lock:
                self._pending = None  # a frame from before the loss is not decided after it
            if self._stop.is_set():
                break
            if self.frames > before:
                delay = 0.5
            err = self.scrub(err)
            if self.connected or self.error != err[:300]:
                self.log(f"stream {self}: lost ({err}); reconnecting every {delay:g}-{self.backoff_max:g} s")
            self.connected, self.error, self.changed = False, err[:300], True
            self.reconnects += 1
            self._stop.wait(delay)
            delay = min(delay * 2, self.backoff_max)

    def _read(self) -> None:
        if self.source.lower().startswith(("http://", "https://")):
            self._read_http()
        else:
            self._read_opencv()

    def _request(self) -> urllib.request.Request:
        u = urllib.parse.urlsplit(self.source)
        headers = {"User-Agent": "patou-guard"}
        url = self.source
        if u.username is not None:  # user:pass@ in the URL: HTTP basic authentication
            cred = f"{urllib.parse.unquote(u.username)}:{urllib.parse.unquote(u.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(cred.encode()).decode()
            url = urllib.parse.urlunsplit((u.scheme, u.hostname + (f":{u.port}" if u.port else ""), u.path, u.query, ""))
        return urllib.request.Request(url, headers=headers)

    def _read_http(self) -> None:
        resp = urllib.request.urlopen(self._request(), timeout=self.timeout)
        with resp:
            ctype = resp.headers.get("Content-Type", "")
            if ctype.lower().startswith("multipart/"):
                m = re.search(r'boundary="?([^";]+)"?', ctype)
                if not m:
                    raise ValueError(f"multipart stream without a boundary ({ctype})")
                self._connected()
                return self._read_multipart(resp, m.group(1).strip().lstrip("-").encode())
            if ctype.lower().startswith("image/"):
                self._connected()
                return self._read_snapshots(resp)
        self.log(f"stream {self}: not MJPEG (Content-Type {ctype or 'none'}); reading it with FFmpeg")
        self._read_opencv()

    def _read_multipart(self, resp, boundary: bytes) -> None:
        while not self._stop.is_set():
            line = resp.readline(65536)
            if not line:
                return  # the stream ended
            if line.strip().lstrip(b"-").rstrip(b"-") != boundary:
                continue
            length = None
            while True:  # the part's headers
                h = resp.readline(65536)
                if not h:
                    return
                if not h.strip():
                    break
                name, _, value = h.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if length is not None:
                if length > MAX_PART:
                    raise ValueError(f"a part of {length:,} bytes is not a camera frame")
                data = resp.read(length)
                if len(data) < length:
                    return
            else:  # no length: read up to the next boundary line
                chunks, size = [], 0
                while True:
                    piece = resp.readline(65536)
                    if not piece:
                        return
                    if piece.strip().lstrip(b"-").rstrip(b"-") == boundary:
                        break
                    chunks.append(piece)
                    size += len(piece)
                    if size > MAX_PART:
                        raise ValueError("a part over 32 MB is not a camera frame")
                data = b"".join(chunks).rstrip(b"\r\n")
            self._put(self._arrived(), jpeg=data)

    def _read_snapshots(self, resp) -> None:
        """A URL that answers one JPEG per request: ask again once the next frame is due."""
        while True:
            data = resp.read(MAX_PART + 1)
            resp.close()
            if len(data) > MAX_PART:
                raise ValueError("a snapshot over 32 MB is not a camera frame")
            self._put(self._arrived(), jpeg=data)
            untaken = self._pending is not None  # the guard is busy: no need for a newer one yet
            if self._stop.wait(max(self._due - time.monotonic(), self.period if untaken else 0.0)):
                return
            resp = urllib.request.urlopen(self._request(), timeout=self.timeout)

    def _read_opencv(self) -> None:
        import cv2

        if _DEVICE.match(self.source):
            index = int(re.sub(r"\D", "", self.source))
            cap = cv2.VideoCapture(index, cv2.CAP_V4L2)
        else:
            os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")  # no lost UDP packets
            ms = int(self.timeout * 1000)
            cap = cv2.VideoCapture(self.source, cv2.CAP_FFMPEG,
                                   [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
        try:
            if not cap.isOpened():
                raise ConnectionError("cannot open it")
            self._connected()
            while not self._stop.is_set():
                if not cap.grab():
                    return
                received = self._arrived()
                if self._wanted():  # convert only the frames the guard will decide
                    ok, arr = cap.retrieve()
                    if ok and arr is not None:
                        self._put(received, array=arr)
        finally:
            cap.release()
