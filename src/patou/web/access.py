"""Who may use the review app, which folders it may touch, and how much a request may send.

The Origin/Host checks in app.py stop other web sites; this stops other local processes and users:
- a random token made at start-up is printed in the URL (`/?token=...`, as Jupyter does); the first
  visit trades it for an HttpOnly, SameSite=Strict cookie. Scripts may send `Authorization: token ...`.
  No token: 401; a wrong one: 403.
- runs started from the page read and write only under the folders named on the command line
  (`--allow-dir`, by default the RESULTS_DIRs, the runs folder and the current directory).
- request bodies are capped (Content-Length checked first, streamed bodies counted).
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

COOKIE = "patou_token"
MAX_BODY = 10 * 1024 * 1024  # the largest honest request is a correction list: far below this


def new_token() -> str:
    return secrets.token_urlsafe(32)


class Folders:
    """The allowed roots; `check(path)` gives the real path inside one or raises ValueError."""

    def __init__(self, roots: list[str | Path]):
        self.roots = [Path(os.path.realpath(p)) for p in roots]

    def check(self, path: str | Path, what: str) -> Path:
        real = Path(os.path.realpath(Path(path).expanduser()))
        if not any(real == r or r in real.parents for r in self.roots):
            raise ValueError(f"{what} {path}: outside the folders this server may use "
                             f"({', '.join(map(str, self.roots))}); start patou serve with --allow-dir to add one")
        return real


async def _send_json(send, status: int, detail: str, headers: list | None = None) -> None:
    body = ('{"detail": "%s"}' % detail).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class TokenAndBodyGuard:
    """ASGI middleware: the token check, then the body cap, before the app sees a request."""

    def __init__(self, app, token: str, max_body: int = MAX_BODY):
        self.app, self.token, self.max_body = app, token, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = dict(query).get("token")
        if given is not None:  # the start-up URL: trade the token for a cookie, drop it from the URL
            if not secrets.compare_digest(given, self.token):
                return await _send_json(send, 403, "refused: wrong token")
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            where = scope.get("root_path", "") + scope["path"] + (f"?{rest}" if rest else "")
            cookie = f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
            await send({"type": "http.response.start", "status": 303,
                        "headers": [(b"location", where.encode("latin-1")), (b"set-cookie", cookie.encode()),
                                    (b"content-length", b"0")]})
            return await send({"type": "http.response.body", "body": b""})
        sent = _cookie(headers.get("cookie", ""))
        auth = headers.get("authorization", "")
        if auth.lower().startswith("token "):
            sent = auth[6:].strip()
        if sent is None:
            return await _send_json(send, 401, "open the URL with ?token= that patou serve printed at start-up")
        if not secrets.compare_digest(sent, self.token):
            return await _send_json(send, 403, "refused: wrong token")

        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await _send_json(send, 413, f"refused: request body over {self.max_body} bytes")
        seen = 0

        async def capped_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:  # a streamed (chunked) body: stop reading it
                    raise BodyTooLarge()
            return message

        try:
            return await self.app(scope, capped_receive, send)
        except BodyTooLarge:
            return await _send_json(send, 413, f"refused: request body over {self.max_body} bytes")


class BodyTooLarge(Exception):
    pass


def _cookie(header: str) -> str | None:
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value
    return None
