"""Real peers for the guard's stream and notification tests (and benchmarks/guard_latency.py), all on 127.0.0.1.

- `MjpegServer`: an HTTP MJPEG camera (multipart/x-mixed-replace) sending the frame it is shown
  (real photos) at a set rate; it can be cut off (a dead camera) and come back.
- `rtsp_server`: Debian's GStreamer RTSP server run by the system Python (python3-gi), encoding
  H.264 live from a JPEG file the test swaps; None when those packages are absent.
- `mosquitto`: a real MQTT broker on a free port, with a password; None when absent.
- `Receiver`: an HTTP endpoint that keeps every POST (multipart parsed: the event JSON and the
  photo), also answering as a Telegram-style bot API (sendPhoto / sendMessage).
"""
from __future__ import annotations

import email.parser
import getpass
import email.policy
import io
import json
import shutil
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image, ImageOps

HERE = Path(__file__).resolve().parent
SYSTEM_PYTHON = "/usr/bin/python3"
MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


def jpeg(path_or_img, size: tuple[int, int] | None = None, quality: int = 90) -> bytes:
    """A real photo as the JPEG a camera would send (letterboxed to `size` when given)."""
    img = path_or_img if isinstance(path_or_img, Image.Image) else Image.open(path_or_img)
    img = img.convert("RGB")
    if size:
        img = ImageOps.pad(img, size, color=(0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def side_by_side(left: Path, right: Path, size: tuple[int, int] = (2048, 768)) -> Image.Image:
    """Two real photos in one frame (a person beside a bear), each letterboxed to half the width."""
    w, h = size
    out = Image.new("RGB", size)
    out.paste(ImageOps.pad(Image.open(left).convert("RGB"), (w // 2, h)), (0, 0))
    out.paste(ImageOps.pad(Image.open(right).convert("RGB"), (w // 2, h)), (w // 2, 0))
    return out


RED, BLUE = (230, 30, 30), (40, 120, 255)  # the guard's box colours: a rule's target, a person


def drawn(photo, colour: tuple[int, int, int], tol: int = 40) -> int:
    """How many pixels of the photo (path, bytes or image) are about that colour: a drawn box."""
    import numpy as np

    img = photo if isinstance(photo, Image.Image) else Image.open(io.BytesIO(photo) if isinstance(photo, bytes) else photo)
    a = np.asarray(img.convert("RGB"), dtype=np.int16)
    return int(np.all(np.abs(a - np.array(colour)) < tol, axis=-1).sum())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MjpegServer:
    """multipart/x-mixed-replace on http://127.0.0.1:PORT/video, `fps` frames a second."""

    def __init__(self, fps: float = 10.0, boundary: str = "patouframe", lengths: bool = True):
        self.fps, self.boundary, self.lengths = fps, boundary, lengths
        self._frame: tuple[str, bytes] | None = None
        self._lock = threading.Lock()
        self.first_sent: dict[str, float] = {}  # tag -> when its first copy was fully written
        self.live = threading.Event()
        self.live.set()
        self.connections = self.snapshots = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/snapshot" and server.live.is_set() and server._frame:  # one JPEG per request
                    data = server._frame[1]
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    server.snapshots += 1
                    return
                if not server.live.is_set() or self.path != "/video":
                    self.send_error(503 if self.path == "/video" else 404)
                    return
                server.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={server.boundary}")
                self.end_headers()
                try:
                    while server.live.is_set() and not server.closed:
                        with server._lock:
                            frame = server._frame
                        if frame is not None:
                            tag, data = frame
                            length = f"Content-Length: {len(data)}\r\n" if server.lengths else ""
                            self.wfile.write(f"--{server.boundary}\r\nContent-Type: image/jpeg\r\n"
                                             f"{length}\r\n".encode() + data + b"\r\n")
                            self.wfile.flush()
                            server.first_sent.setdefault(tag, time.time())
                        time.sleep(1.0 / server.fps)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *a):
                pass

        self.closed = False
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/video"
        self.snapshot_url = f"http://127.0.0.1:{self.httpd.server_port}/snapshot"

    def show(self, data: bytes, tag: str) -> None:
        with self._lock:
            self._frame = (tag, data)

    def cut(self) -> None:
        """The camera dies: open streams end, new connections are refused (503)."""
        self.live.clear()

    def resume(self) -> None:
        self.live.set()

    def close(self) -> None:
        self.closed = True
        self.live.clear()
        self.httpd.shutdown()
        self.httpd.server_close()


def rtsp_available() -> str | None:
    """None when the RTSP server can run here, else why not."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    probe = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
             "missing = [e for e in ('multifilesrc', 'jpegdec', 'videoconvert', 'x264enc', 'rtph264pay') "
             "if Gst.ElementFactory.find(e) is None]; print(' '.join(missing))")
    try:
        p = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot run {SYSTEM_PYTHON}: {e}"
    if p.returncode != 0:
        return "python3-gi with GstRtspServer is not installed (apt: gir1.2-gst-rtsp-server-1.0 python3-gi)"
    if p.stdout.strip():
        return f"GStreamer elements missing: {p.stdout.strip()} (apt: gstreamer1.0-plugins-base/-good/-ugly)"
    return None


@contextmanager
def rtsp_server(frame_file: Path, fps: int = 5):
    """rtsp://127.0.0.1:PORT/cam, H.264 encoded live from `frame_file` (swap it with os.replace)."""
    port = free_port()
    p = subprocess.Popen([SYSTEM_PYTHON, str(HERE / "rtsp_server.py"), str(port), str(frame_file), str(fps)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError(f"the RTSP server did not start: {line} {p.stderr.read()[:2000]}")
        yield f"rtsp://127.0.0.1:{port}/cam"
    finally:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@contextmanager
def mosquitto(tmp: Path, user: str = "patou", password: str = "s3cret-pw"):
    """A real broker on 127.0.0.1:PORT requiring user/password; yields the port."""
    port = free_port()
    pw = tmp / "mosquitto.passwd"
    passwd_tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    subprocess.run([passwd_tool, "-c", "-b", str(pw), user, password], check=True, capture_output=True)
    pw.chmod(0o600)
    conf = tmp / "mosquitto.conf"
    # user: run as the test's own user (as root it would switch to 'mosquitto', who cannot read tmp)
    conf.write_text(f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\nallow_anonymous false\n"
                    f"password_file {pw}\npersistence false\n")
    p = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=open(tmp / "mosquitto.log", "w"))
    try:
        end = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if p.poll() is not None or time.monotonic() > end:
                    raise RuntimeError(f"mosquitto did not start: {(tmp / 'mosquitto.log').read_text()}")
                time.sleep(0.1)
        yield port
    finally:
        p.terminate()
        p.wait(timeout=10)


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[bytes, str | None]]:
    """{field name: (bytes, filename)} of a multipart/form-data body (stdlib email parser)."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    out = {}
    for part in msg.iter_parts():
        out[part.get_param("name", header="content-disposition")] = (part.get_payload(decode=True), part.get_filename())
    return out


class Receiver:
    """Keeps every POST: (path, content type, fields) with multipart parsed; a bot API reply for /bot*."""

    def __init__(self):
        self.got: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(n) if n <= 50_000_000 else b""
                ctype = self.headers.get("Content-Type", "")
                item = {"path": self.path, "ctype": ctype, "at": time.time()}
                if ctype.startswith("multipart/form-data"):
                    item["fields"] = parse_multipart(ctype, body)
                elif ctype.startswith("application/json"):
                    item["json"] = json.loads(body)
                else:
                    item["body"] = body
                server.got.append(item)
                reply = json.dumps({"ok": True, "result": {}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.httpd.server_port}"

    def events(self, path_prefix: str = "/hook") -> list[tuple[dict, bytes | None]]:
        """(event JSON, photo bytes or None) of each POST to the hook."""
        out = []
        for g in self.got:
            if not g["path"].startswith(path_prefix):
                continue
            if "fields" in g:
                ev = json.loads(g["fields"]["event"][0])
                out.append((ev, g["fields"].get("photo", (None,))[0]))
            elif "json" in g:
                out.append((g["json"], None))
        return out

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
