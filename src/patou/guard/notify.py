"""What the shepherd sees: the photo with its boxes drawn, a one-line text, and the senders of both.

Each trigger that runs actions gets a JPEG of the decoded image (at most 1024 px, as the models saw
it) with every kept box drawn and labelled, saved under the guard's photo folder once the
deterrents have started (an action that sends the photo waits for it; a `command:` deterrent
may start before its PATOU_PHOTO file exists) and before the notifications are dispatched (a
restart that resumes them finds it; one killed in between sends them without it). The senders:
- http(s):// actions POST multipart/form-data: a field `event` (the JSON) and a file `photo`;
  a URL ending in `#json` gets the JSON alone, as before photos existed (see actions.py);
- mqtt:// actions publish the JPEG as the payload of `<topic>/photo`, then the JSON on `<topic>`;
- `telegram:BASE_URL?chat_id=ID` (a Telegram-style bot API: BASE_URL is
  https://api.telegram.org/bot<TOKEN> or a self-hosted Bot API server) sends sendPhoto with the
  text as caption, or sendMessage when there is no photo;
- command: actions get the photo's path in PATOU_PHOTO and the text in PATOU_TEXT.
The actions themselves are in actions.py, which takes the photo, the text and the bodies from here.
"""
from __future__ import annotations

import io
import json
import re
import secrets
from datetime import datetime
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..atomic import atomic_output
from .state import FIRED, VETOED

MAX_PHOTO = 20_000_000  # bytes: a photo file read back for sending is never larger than this
COLOURS = {"target": (230, 30, 30), "person": (40, 120, 255), "other": (255, 200, 0)}


def annotate(img: Image.Image, record, detection_threshold: float, targets=(), people=(), title: str = "") -> bytes:
    """The image as JPEG, each kept box drawn: red for the rule's targets, blue for a veto label,
    yellow otherwise, with its best label and score."""
    out = img.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    size = max(12, h // 36)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # a Pillow without FreeType: the small bitmap font
        font = ImageFont.load_default()
    for d in record.detections:
        if d.conf < detection_threshold:
            continue
        scores = dict(d.scores or {})
        if d.category and d.category != "animal":
            scores[d.category] = max(scores.get(d.category, 0.0), d.conf)
        label, score = max(scores.items(), key=lambda kv: kv[1]) if scores else (d.category, d.conf)
        mine = [t for t in targets if scores.get(t, 0.0) >= 0.01]
        person = [p for p in people if scores.get(p, 0.0) >= 0.01]
        kind = "person" if person else "target" if mine else "other"
        if person:
            label, score = person[0], scores[person[0]]
        elif mine:
            label, score = max(((t, scores[t]) for t in mine), key=lambda kv: kv[1])
        x, y, bw, bh = d.bbox
        box = (x * w, y * h, (x + bw) * w, (y + bh) * h)
        draw.rectangle(box, outline=COLOURS[kind], width=max(2, h // 300))
        text = f"{label} {score:.2f}"
        tx, ty = box[0] + 2, max(0, box[1] - size - 4)
        draw.rectangle(draw.textbbox((tx, ty), text, font=font), fill=(0, 0, 0))
        draw.text((tx, ty), text, fill=COLOURS[kind], font=font)
    if title:
        draw.rectangle(draw.textbbox((4, h - size - 8), title, font=font), fill=(0, 0, 0))
        draw.text((4, h - size - 8), title, fill=(255, 255, 255), font=font)
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def photo_path(folder: Path, when: datetime, site: str, rule: str) -> Path:
    """folder/YYYY-MM-DD/HHMMSS-site-rule-xxxx.jpg, a name no photo has yet."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{site}-{rule}").strip("._") or "photo"
    day = folder / f"{when:%Y-%m-%d}"
    while True:
        path = day / f"{when:%H%M%S}-{safe[:80]}-{secrets.token_hex(3)}.jpg"
        if not path.exists():
            return path


def save_photo(path: Path, data: bytes) -> Path:
    """Written atomically (a reader never sees half a photo)."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return path


def read_photo(event: dict) -> bytes | None:
    """The trigger's photo, if it has one that can be read (size-checked first)."""
    p = event.get("photo")
    if not p:
        return None
    try:
        path = Path(p)
        if path.stat().st_size > MAX_PHOTO:
            return None
        return path.read_bytes()
    except OSError:
        return None


def summary(event: dict) -> str:
    """One line for people: what, where, when, and what the guard did."""
    site, when = event.get("site"), event.get("image_time") or event.get("at") or ""
    if event.get("kind") == "heartbeat":
        if event.get("outcome") == "camera-back":
            return f"patou: camera {site} is back (silent for {event.get('silent_h', 0):.1f} h)"
        return (f"patou: camera {site} is silent: no photo or frame for {event.get('silent_h', 0):.1f} h "
                f"(last {event.get('last_seen_time') or 'never'})")
    target, score = event.get("target"), event.get("score") or 0.0
    head = f"patou {event.get('rule') or target}: {target} {score:.2f} at {site}, {str(when).replace('T', ' ')[:19]}"
    if event.get("outcome") == VETOED:
        return f"{head}: NOT deterred, {event.get('held_by') or 'a person in frame'}"
    if event.get("outcome") == FIRED and event.get("deterrents"):
        return f"{head}: deterrent {', '.join(event['deterrents'])}"
    return f"{head}: {event.get('outcome')}"


def multipart(fields: list[tuple[str, bytes | str, str | None, str | None]]) -> tuple[bytes, str]:
    """multipart/form-data of (name, value, filename, content type) fields; (body, Content-Type)."""
    boundary = "patou-" + secrets.token_hex(12)
    parts = []
    for name, value, filename, ctype in fields:
        data = value.encode() if isinstance(value, str) else value
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        head = f"--{boundary}\r\nContent-Disposition: {disp}\r\n" + (f"Content-Type: {ctype}\r\n" if ctype else "")
        parts.append(head.encode() + b"\r\n" + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def event_parts(event: dict) -> tuple[bytes, str]:
    """The body an http action POSTs: the event JSON and, when there is one, its photo."""
    fields = [("event", json.dumps(event), None, "application/json")]
    photo = read_photo(event)
    if photo is not None:
        fields.append(("photo", photo, Path(event["photo"]).name, "image/jpeg"))
    return multipart(fields)
