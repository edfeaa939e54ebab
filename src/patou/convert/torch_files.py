"""Reading torch files (checkpoints, published weights) without letting them run code.

Every torch.load in patou goes through `load`: `weights_only=True` (torch's restricted unpickler:
tensors, dicts, lists, numbers, text; any other object is refused, so a crafted `__reduce__`
never runs), and any failure becomes one ValueError line naming the file. `mmap=True` maps the
tensors from the file instead of reading them into memory, so a file's declared sizes cost
nothing until the tensors are used (their shapes can be checked first).
"""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import IO


class RefusedPickle(ValueError):
    """The file holds objects besides tensors and plain data (torch's safe loader refused it)."""


def load(path: str | Path | IO[bytes], what: str = "", *, mmap: bool = False):
    """The file's contents (plain containers of tensors), or ValueError '<what> <path>: reason'."""
    import torch

    name = f"{what} {path}".strip() if not hasattr(path, "read") else what or "torch file"
    if not hasattr(path, "read"):
        p = Path(path)
        try:
            size = p.stat().st_size
        except OSError as e:
            raise ValueError(f"{name}: cannot read ({e.strerror or e})") from None
        if size == 0:
            raise ValueError(f"{name}: empty file (0 bytes), not a torch checkpoint")
        if mmap and not zipfile.is_zipfile(p):  # torch's format since 1.6; a cut-off one has no directory
            raise ValueError(f"{name}: not a readable torch checkpoint (no zip directory: truncated, or not torch's format)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # UnpicklingError for a forbidden object, RuntimeError/EOFError for a cut-off file...
        text = str(e)
        if isinstance(e, pickle.UnpicklingError) or "Weights only load failed" in text:
            # torch's own text goes on to suggest weights_only=False: the one thing never to do here
            obj = re.search(r"GLOBAL ([\w.]+)", text)
            raise RefusedPickle(f"{name}: refused, it holds {obj.group(1)[:80] if obj else 'objects'} besides tensors "
                                "and plain data (loading that could run code)") from None
        first = (text.strip().splitlines() or [""])[0]
        raise ValueError(f"{name}: not a readable torch checkpoint ({type(e).__name__}: {first[:200]})") from None


def need(value, kind: type | tuple[type, ...], where: str):
    """`value` if it is of `kind`, else ValueError naming `where` (checkpoint fields are data from a file)."""
    if not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise ValueError(f"{where} is {type(value).__name__}, expected {names}")
    return value
