"""Which scanned input a path in another tool's file means (MD, SpeciesNet, label files).

Tools write paths relative to the folder they ran on, to a parent of it, or absolute, on another
computer, with either slash. An entry matches an input by its path under the input root (as
patou writes them), its path under the inputs' common folder, or its absolute path; then by a
path that ends with the input's path under its root; then by a file name found once. With a
`base` (the folder a label file's relative paths start from), an entry is also its own path
under `base`. Anything that could be either of two inputs (or two entries) is an error naming
both. Only scanned inputs are ever matched: an entry is a name to look up, never a path to open.
"""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Iterable

from patou.record import ImageRecord


def norm(p: str) -> str:
    """Forward slashes, no empty or `.` parts (`.\\a\\\\b.jpg` -> `a/b.jpg`); absolute stays absolute."""
    p = p.replace("\\", "/")
    parts = [x for x in p.split("/") if x not in ("", ".")]
    return ("/" if p.startswith("/") else "") + "/".join(parts)


def climbs(entry: str) -> bool:
    """`..` anywhere: such an entry could point outside every input and is never matched."""
    return ".." in norm(entry).split("/")


class Ambiguous(ValueError):
    pass


def match_entries(entries: Iterable[str], records: list[ImageRecord], *, base: Path | None = None,
                  what: str = "entry") -> dict[str, ImageRecord]:
    """{entry (normalised): the record it names} for every entry that names a scanned input.

    Raises Ambiguous (a ValueError) naming both sides when an input fits two entries or an entry
    two inputs; the message says `what` an entry is (e.g. "row", "entry").
    """
    known = {norm(e) for e in entries if isinstance(e, str) and e and not climbs(e)}
    by_name: dict[str, list[str]] = defaultdict(list)
    for f in known:
        by_name[f.rsplit("/", 1)[-1]].append(f)
    roots = sorted({r.root for r in records}, key=str)
    common = Path(os.path.commonpath([str(r) for r in roots])) if roots else None
    under_base = {}
    if base is not None:  # relative entries as paths under the label file's folder
        base = Path(os.path.abspath(base))
        under_base = {Path(os.path.normpath(base / f)).as_posix(): f for f in known if not f.startswith("/")}

    def candidates(r: ImageRecord) -> list[str]:
        keys = [r.rel, Path(os.path.relpath(r.path, common)).as_posix() if common else r.rel,
                Path(os.path.abspath(r.path)).as_posix()]
        exact = [k for k in dict.fromkeys(keys) if k in known]
        if exact:
            return exact[:1]
        if keys[2] in under_base:
            return [under_base[keys[2]]]
        same_name = by_name.get(r.path.name, [])
        tail = [f for f in same_name if f.endswith("/" + r.rel)]
        return tail or same_name

    used: dict[str, ImageRecord] = {}
    for r in records:
        found = candidates(r)
        if len(found) > 1:
            raise Ambiguous(f"{r.path} matches both {found[0]!r} and {found[1]!r}; give the folder the paths "
                            "are relative to, so that they match exactly")
        if not found:
            continue
        if found[0] in used:
            raise Ambiguous(f"{what} {found[0]!r} matches both {used[found[0]].path} and {r.path}; give the folder "
                            "the paths are relative to, so that they match exactly")
        used[found[0]] = r
    return used
