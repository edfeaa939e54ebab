"""SHA-256 of a file's bytes: the key of every cache, checkpoint fingerprint and copy check."""
from __future__ import annotations

import hashlib
from pathlib import Path

BLOCK = 1 << 20  # read 1 MiB at a time: flat memory on multi-GB model files and videos


def update_with_file(h: "hashlib._Hash", path: str | Path) -> "hashlib._Hash":
    """Feed `path`'s bytes into the hasher `h` (for keys that add settings after the bytes)."""
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            h.update(block)
    return h


def file_sha256(path: str | Path) -> str:
    return update_with_file(hashlib.sha256(), path).hexdigest()
