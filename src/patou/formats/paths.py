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


def match_entries(known, records: list[ImageRecord], *, base: Path | None = None, what: str = "entry",
                  hint: str = "give the folder the paths are relative to, so that they match exactly"
                  ) -> dict[str, ImageRecord]:
    """{entry: the record it names} for every entry of `known` (a dict or set of `norm`ed paths,
    none climbing) that names a scanned input.

    Raises Ambiguous (a ValueError) naming both sides when an input fits two entries or an entry
    two inputs (`what` an entry is, e.g. "row"; `hint` says how to fix it). The file-name index is
    only built when some input's path does not match as it is: a huge file costs one pass."""
    by_name: dict[str, list[str]] = {}
    under_base: dict[str, str] = {}

    def same_name(name: str) -> list[str]:
        if not by_name and known:
            index = defaultdict(list)
            for f in known:
                index[f.rsplit("/", 1)[-1]].append(f)
            by_name.update(index)
        return by_name.get(name, [])

    def in_base(path: str) -> str | None:
        if base is None:
            return None
        if not under_base:  # relative entries as paths under the label file's folder
            b = Path(os.path.abspath(base))
            under_base.update({Path(os.path.normpath(b / f)).as_posix(): f for f in known if not f.startswith("/")})
        return under_base.get(path)

    roots = sorted({r.root for r in records}, key=str)
    common = Path(os.path.commonpath([str(r) for r in roots])) if roots else None

    def candidates(r: ImageRecord) -> list[str]:
        absolute = Path(os.path.abspath(r.path)).as_posix()
        keys = [r.rel, Path(os.path.relpath(r.path, common)).as_posix() if common else r.rel, absolute]
        exact = [k for k in dict.fromkeys(keys) if k in known]
        if exact:
            return exact[:1]
        if (f := in_base(absolute)) is not None:
            return [f]
        named = same_name(r.path.name)
        tail = [f for f in named if f.endswith("/" + r.rel)]
        return tail or named

    used: dict[str, ImageRecord] = {}
    for r in records:
        found = candidates(r)
        if len(found) > 1:
            raise Ambiguous(f"{r.path} matches both {found[0]!r} and {found[1]!r}; {hint}")
        if not found:
            continue
        if found[0] in used:
            raise Ambiguous(f"{what} {found[0]!r} matches both {used[found[0]].path} and {r.path}; {hint}")
        used[found[0]] = r
    return used
