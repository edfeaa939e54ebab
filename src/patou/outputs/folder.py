"""One run at a time per results folder, and no leftovers of killed ones.

The lock is an flock on RESULTS_DIR/.patou/lock: the kernel drops it when its process dies, so a run
killed with -9 never leaves the folder stuck, and a live run's folder is never written by another.
"""
from __future__ import annotations

import os
import re
import weakref
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are then not guarded against each other
    fcntl = None

# the temp names patou.outputs.atomic gives (".<name>.<8 hex>.tmp"): nobody else's files
_ATOMIC_TMP = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")


class OutFolderBusy(ValueError):
    pass


class OutLock:
    """Held from construction until release() (or until this object is collected, e.g. after an error)."""

    def __init__(self, out: Path):
        self.out = Path(out)
        path = self.out / ".patou" / "lock"
        try:  # the first write of a run: a read-only or full --out stops it here, before any analysis
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise ValueError(f"--out {self.out}: cannot write the results there ({e.strerror or e})") from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
                os.close(fd)
                raise OutFolderBusy(f"--out {self.out}: in use by another patou run (pid {holder}); "
                                    "wait for it to finish or choose another folder") from None
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        self._finalizer = weakref.finalize(self, os.close, fd)

    def release(self) -> None:
        self._finalizer()  # closing the descriptor drops the flock


def clean_stale_temps(out: Path) -> list[Path]:
    """Remove the atomic-write temp files a killed run left in `out` and `out/.patou`.

    Only called with the lock held, so no live run of ours is writing them."""
    gone = []
    for folder in (Path(out), Path(out) / ".patou"):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            p = folder / name
            if _ATOMIC_TMP.match(name) and p.is_file() and not p.is_symlink():
                p.unlink(missing_ok=True)
                gone.append(p)
    return gone
