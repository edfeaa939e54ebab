"""Sort media into sort_dir/<event_label>/<rel>: never overwrite, never lose a file.

Every placement is no-clobber (hard link or symlink creation fails if the name exists; os.rename
would silently replace it on POSIX). A move removes the source only once the destination is
durable and identical, so a crash at any point leaves each file in one place or both, never none,
and a re-run finishes the job. A copy may blur people first (`plan.blur`, blur.py): such a file is
written blurred to its temp name, then placed like any copy; one that cannot be blurred is not
copied at all.
"""
from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

from patou.digest import file_sha256
from patou.atomic import atomic_output
from patou.record import UNDEFINED, ImageRecord, in_output_order

MODES = ("copy", "move", "link")
FAILED_DIR = "failed"
# os.link errors meaning "no hard link here" (other device, exFAT/FAT, some network shares).
_NO_HARDLINK = {errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS}


# the temp names _copy_tmp gives (".<name>.<8 hex>.patou-part"): a killed copy's leftovers
_PART = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{8}\.patou-part$")


class SortPlan(list):
    """A list of (src, dst) that remembers its sort_dir, so sort_files can keep writes inside it,
    and the input roots, so it only ever takes files from under them (`refused`: the others)."""

    def __init__(self, items=(), sort_dir: Path | None = None, roots=None, blur: dict | None = None):
        super().__init__(items)
        self.sort_dir = sort_dir
        self.roots = None if roots is None else [Path(os.path.abspath(r)) for r in roots]
        self.refused: list[str] = []
        # source (absolute path) -> the boxes to blur in its copy (normalised x, y, w, h)
        self.blur: dict[str, list] = {os.path.abspath(k): [list(b) for b in v] for k, v in (blur or {}).items()}


def under_root(path: str | Path, root: str | Path) -> bool:
    """`path` is `root` itself or below it, by name: '..' and absolute paths are resolved
    lexically, so a name never climbs out of the folder that was scanned."""
    p, r = os.path.normpath(os.path.abspath(path)), os.path.normpath(os.path.abspath(root))
    return p == r or p.startswith(r.rstrip(os.sep) + os.sep)


def _outside(src: Path, roots) -> str | None:
    """Why `src` may not be sorted (None: it may): only media found under a scanned input."""
    from patou.media import MEDIA_EXTENSIONS

    if roots is not None and not any(under_root(src, r) for r in roots):
        return "not under an input folder"
    if src.suffix.lower() not in MEDIA_EXTENSIONS or src.name.startswith("."):
        return "not a photo or video patou scans"
    return None


@dataclass
class SortReport:
    mode: str
    dry_run: bool = False
    planned: int = 0
    done: int = 0
    skipped: int = 0  # already in place (a re-run after an interrupted sort)
    clashes: int = 0  # a different file holds the destination name; the source stays
    errors: int = 0
    messages: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.clashes or self.errors)

    def summary(self) -> str:
        if self.dry_run:
            return f"{self.mode} (dry run): {self.planned} files planned, nothing touched"
        return (f"{self.mode}: {self.done} done, {self.skipped} already in place, "
                f"{self.clashes} clashes, {self.errors} errors")


class _Clash(Exception):
    pass


def _safe_part(name: str) -> str:
    # Labels become folder names: one harmless component, whatever a model card says.
    name = re.sub(r"[^\w.-]+", "_", name).strip(".")
    return name or UNDEFINED


def _entry(p: Path) -> Path:
    """Where the directory entry really is (parent resolved, the name itself not followed)."""
    return Path(os.path.realpath(p.parent)) / p.name


def plan_sort(records: Iterable[ImageRecord], sort_dir: str | Path, roots: Iterable[str | Path] | None = None,
              blur: dict | None = None) -> SortPlan:
    """(src, dst) per record; files already inside sort_dir (sorted by an earlier run) are left out.

    Only media files under their record's root, and under one of `roots` (the inputs that were
    scanned) when given, are planned; any other record is in `plan.refused` and never touched.
    `blur`: {source path: boxes} whose copies are blurred there (copy only)."""
    sort_dir = Path(sort_dir)
    inside = Path(os.path.realpath(sort_dir))
    plan = SortPlan(sort_dir=sort_dir, roots=roots, blur=blur)
    for r in in_output_order(records):
        src = Path(r.path)
        why = _outside(src, [r.root]) or _outside(src, plan.roots)
        if why:
            plan.refused.append(f"refused: {src}: {why}; not sorted")
            continue
        if _entry(src).is_relative_to(inside):
            continue
        folder = FAILED_DIR if r.failure else _safe_part(r.event_label or r.label or UNDEFINED)
        parts = [p for p in PurePosixPath(r.rel).parts if p not in ("/", ".", "..")] or [src.name]
        plan.append((src, sort_dir.joinpath(folder, *parts)))
    return plan


def sort_files(plan: Iterable[tuple[Path, Path]], mode: str, dry_run: bool = False,
               log: Callable[[str], None] = print, sort_dir: str | Path | None = None) -> SortReport:
    """Carry out a plan; one problem never stops the run, each is logged with file and reason."""
    if mode not in MODES:
        raise ValueError(f"sort mode must be one of {', '.join(MODES)}, not {mode!r}")
    sort_dir = sort_dir if sort_dir is not None else getattr(plan, "sort_dir", None)
    blur = getattr(plan, "blur", None) or {}
    if blur and mode != "copy":  # a moved or linked file is the original: nobody in it can be hidden
        raise ValueError(f"blurring people needs a copy, not a {mode}")
    rep = SortReport(mode, dry_run)
    roots = getattr(plan, "roots", None)
    for msg in getattr(plan, "refused", ()):
        rep.errors += 1
        _problem(rep, log, msg)
    used: dict[Path, Path] = {}
    listed: dict[Path, list[str]] = {}
    for src, dst in plan:
        src, dst = Path(src), Path(dst)
        if roots is not None and not any(under_root(src, r) for r in roots):  # the second wall
            rep.errors += 1
            _problem(rep, log, f"refused: {src}: not under an input folder; not sorted")
            continue
        rep.planned += 1
        if dry_run:
            log(f"{mode.upper()} {src} -> {dst}")
            continue
        try:
            # Two inputs with the same rel and label (several roots) must not meet in one name.
            if used.setdefault(_entry(dst), _entry(src)) != _entry(src):
                raise _Clash("another file of this run is already sorted to this name")
            if _entry(src) == _entry(dst):
                rep.skipped += 1
                continue
            if sort_dir is not None:
                _check_confined(dst, Path(sort_dir))
            dst.parent.mkdir(parents=True, exist_ok=True)
            _clean_partials(dst, listed)
            boxes = blur.get(os.path.abspath(src))
            outcome = _copy_blurred(src, dst, boxes) if boxes else {"copy": _copy, "move": _move, "link": _link}[mode](src, dst)
            setattr(rep, outcome, getattr(rep, outcome) + 1)
        except _Clash as e:
            rep.clashes += 1
            _problem(rep, log, f"clash: {src} -> {dst}: {e}; source left in place")
        except OSError as e:
            rep.errors += 1
            _problem(rep, log, f"error: {src} -> {dst}: {e.strerror or e}; source left in place")
    return rep


def _clean_partials(dst: Path, listed: dict[Path, list[str]]) -> None:
    """Remove this destination's temp copies left by a killed sort (only names _copy_tmp makes)."""
    if dst.parent not in listed:
        try:
            listed[dst.parent] = [n for n in os.listdir(dst.parent) if n.endswith(".patou-part")]
        except OSError:
            listed[dst.parent] = []
    for name in listed[dst.parent]:
        m = _PART.match(name)
        if m and m["name"] == dst.name:
            (dst.parent / name).unlink(missing_ok=True)


def save_plan(plan: SortPlan, mode: str, path: Path) -> None:
    """Write the plan before carrying it out, so a rerun after a kill can finish it unchanged."""
    absolute = os.path.abspath  # a rerun may start from another working folder
    data = {"mode": mode, "sort_dir": absolute(plan.sort_dir),
            "items": [[absolute(s), absolute(d)] for s, d in plan], "blur": getattr(plan, "blur", None) or {}}
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")


def load_plan(path: Path, roots: Iterable[str | Path]) -> tuple[str, SortPlan]:
    """(mode, plan) of a plan saved by save_plan, limited to files under `roots` (this run's
    inputs: the file itself is not trusted to say where sources may be)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        blur = data.get("blur") or {}
        if not all(isinstance(k, str) and isinstance(v, list) and all(_is_box(b) for b in v) for k, v in blur.items()):
            raise ValueError("'blur' is not {file: [[x, y, w, h], ...]}")
        plan = SortPlan([(Path(s), Path(d)) for s, d in data["items"]], sort_dir=Path(data["sort_dir"]), roots=roots,
                        blur=blur)
        mode = data["mode"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
        raise ValueError(f"{path}: unreadable sort plan of a killed run ({type(e).__name__}: {str(e)[:100]}); "
                         "delete it to start afresh") from None
    if mode not in MODES:
        raise ValueError(f"{path}: sort plan with mode {str(mode)[:20]!r}; delete it to start afresh")
    return mode, plan


def _is_box(b) -> bool:
    return isinstance(b, list) and len(b) == 4 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0 for v in b)


def _problem(rep: SortReport, log: Callable[[str], None], msg: str) -> None:
    rep.messages.append(msg)
    log(msg)


def _check_confined(dst: Path, sort_dir: Path) -> None:
    """Refuse names that leave sort_dir or pass through a symlinked folder inside it."""
    base = Path(os.path.abspath(sort_dir))
    rel = Path(os.path.relpath(os.path.abspath(dst), base))
    if not rel.parts or rel.parts[0] == os.pardir or rel.is_absolute():
        raise OSError(errno.EACCES, "destination is outside the sort folder")
    cur = base
    for part in rel.parts[:-1]:
        cur = cur / part
        if cur.is_symlink():
            raise OSError(errno.EACCES, f"{cur} is a symlink; the sort does not follow it")


def _same_content(a: Path, b: Path) -> bool:
    return os.path.samefile(a, b) or (os.path.getsize(a) == os.path.getsize(b) and file_sha256(a) == file_sha256(b))


def _fsync_dir(d: Path) -> None:
    # Make the new name durable before a source disappears (a no-op where dirs can't be opened).
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _copy_tmp(src: Path, dst: Path) -> Path:
    """Full copy (data, mtime) to a hidden temp name beside dst, flushed to disk."""
    tmp = dst.parent / f".{dst.name}.{secrets.token_hex(4)}.patou-part"
    try:
        shutil.copy2(src, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _place(tmp: Path, dst: Path) -> None:
    """Give the finished temp file its real name without ever replacing an existing one.

    The caller removes tmp afterwards (missing_ok): after a link it is a spare name.
    """
    try:
        os.link(tmp, dst)  # FileExistsError if dst exists: no clobber
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in _NO_HARDLINK:
            raise
        # No hard links on this filesystem: check, then rename. The gap between the two only
        # matters against a concurrent writer of the same name, which a sort does not have.
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, "destination exists", str(dst)) from None
        os.rename(tmp, dst)


def _existing(src: Path, dst: Path, mode: str) -> str:
    """dst is taken: 'skipped' when it already holds this file (finishing a move), else a clash."""
    if mode == "link":
        if src.is_file() and dst.is_file() and _same_content(src, dst):
            return "skipped"
        raise _Clash("a different file is already there")
    if dst.is_symlink() or not dst.is_file():
        raise _Clash("something other than a regular file is already there")
    if mode == "move" and not os.path.lexists(src):
        return "skipped"  # moved by an earlier run
    if not src.is_file():
        raise OSError(errno.ENOENT, "source is missing")
    if not _same_content(src, dst):
        raise _Clash("a different file is already there")
    if mode == "move":
        os.unlink(src)  # an interrupted move: dst holds the same bytes (or is the same inode)
    return "skipped"


def _copy(src: Path, dst: Path) -> str:
    if os.path.lexists(dst):
        return _existing(src, dst, "copy")
    tmp = _copy_tmp(src, dst)
    try:
        _place(tmp, dst)
    except FileExistsError:
        return _existing(src, dst, "copy")
    finally:
        tmp.unlink(missing_ok=True)
    return "done"


def _copy_blurred(src: Path, dst: Path, boxes: list) -> str:
    """A copy with people blurred (blur.py), or no copy at all: a file that cannot be blurred
    safely is an error, never a plain copy. Blurring is deterministic, so a re-run finds its own
    earlier copy identical and skips it."""
    from patou.blur import BlurError, write_blurred

    tmp = dst.parent / f".{dst.name}.{secrets.token_hex(4)}.patou-part"
    try:
        try:
            write_blurred(src, tmp, boxes)
        except BlurError as e:
            raise OSError(errno.EINVAL, f"not copied: the people in it cannot be blurred ({e})") from None
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        shutil.copystat(src, tmp)
        if os.path.lexists(dst):
            return _existing_blurred(tmp, dst)
        try:
            _place(tmp, dst)
        except FileExistsError:
            return _existing_blurred(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return "done"


def _existing_blurred(tmp: Path, dst: Path) -> str:
    if dst.is_symlink() or not dst.is_file() or not _same_content(tmp, dst):
        raise _Clash("a different file is already there")
    return "skipped"


def _move(src: Path, dst: Path) -> str:
    if os.path.lexists(dst):
        return _existing(src, dst, "move")
    if not src.is_file():
        raise OSError(errno.ENOENT, "source is missing or not a file")
    try:
        os.link(src, dst)
    except FileExistsError:
        return _existing(src, dst, "move")
    except OSError as e:
        if e.errno not in _NO_HARDLINK:
            raise
        return _move_by_copy(src, dst)
    _fsync_dir(dst.parent)
    os.unlink(src)
    return "done"


def _move_by_copy(src: Path, dst: Path) -> str:
    tmp = _copy_tmp(src, dst)
    try:
        if file_sha256(tmp) != file_sha256(src):
            raise OSError(errno.EIO, "copy differs from the source (checksum mismatch)")
        _place(tmp, dst)
    except FileExistsError:
        return _existing(src, dst, "move")
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(dst.parent)
    os.unlink(src)
    return "done"


def _link(src: Path, dst: Path) -> str:
    target = src.resolve()
    if not target.is_file():
        raise OSError(errno.ENOENT, "source is missing or not a file")
    if os.path.lexists(dst):
        return _existing(src, dst, "link")
    try:
        os.symlink(target, dst)
    except FileExistsError:
        return _existing(src, dst, "link")
    return "done"
