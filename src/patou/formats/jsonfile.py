"""Reading a JSON file another tool wrote, as a file that may be hostile: a regular file of
bounded size, parsed once, its nesting bounded; every failure one line naming the file."""
from __future__ import annotations

import hashlib
import json
import math
import stat
from pathlib import Path

MAX_JSON_BYTES = 2 << 30  # far above any batch or label file of millions of photos


def read_json(path: str | Path, option: str, max_bytes: int | None = None) -> tuple[object, str]:
    """(the parsed file, its sha256's first 16 hex digits); a ValueError `"{option} {path}: why"`."""
    path = Path(path)
    max_bytes = MAX_JSON_BYTES if max_bytes is None else max_bytes
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # a folder, a FIFO, /dev/zero: never read
            raise ValueError(f"{option} {path}: {'a folder' if stat.S_ISDIR(st.st_mode) else 'not a regular file'}")
        if st.st_size > max_bytes:
            raise ValueError(f"{option} {path}: {st.st_size / 2**30:.1f} GB, larger than the {max_bytes / 2**30:.0f} GB "
                             "such a file can sensibly be")
        raw = path.read_bytes()
    except OSError as e:
        raise ValueError(f"{option} {path}: cannot read ({e.strerror or e})") from None
    try:
        data = json.loads(raw)
    except RecursionError:
        raise ValueError(f"{option} {path}: nested too deep to be a results or labels file") from None
    except ValueError as e:
        raise ValueError(f"{option} {path}: not JSON ({str(e)[:200]})") from None
    return data, hashlib.sha256(raw).hexdigest()[:16]


def unit(v) -> bool:
    """A finite number in [0, 1] (true/false are not numbers here)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0.0 <= v <= 1.0


def kind(v) -> str:
    """What a JSON value is, for messages ("a list", "null", ...)."""
    return {dict: "an object", list: "a list", str: "a text", bool: "true/false", type(None): "null"}.get(
        type(v), "a number" if isinstance(v, (int, float)) else type(v).__name__)


class Problems:
    """Problems of one file, counted by kind with the first few examples: one line per kind."""

    EXAMPLES = 3

    def __init__(self, source: str):
        self.source = source
        self.kinds: dict[str, list] = {}

    def add(self, kind: str, example: str) -> None:
        n_ex = self.kinds.setdefault(kind, [0, []])
        n_ex[0] += 1
        if len(n_ex[1]) < self.EXAMPLES:
            n_ex[1].append(example)

    def lines(self) -> list[str]:
        return [f"{self.source}: {kind} ({n}): {'; '.join(ex)}" + (" ..." if n > len(ex) else "")
                for kind, (n, ex) in self.kinds.items()]
