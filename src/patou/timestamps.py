"""Capture times when EXIF has none: from the file name, or (opt-in) the file's mtime.

`--time-source` is an ordered list of `exif` (EXIF DateTimeOriginal/DateTime, or a video's
creation time, read while decoding), `filename` and `mtime`; the first that gives a time wins and
`timestamp_source` records which. `mtime` is opt-in because copying files often resets it.
"""
from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from .options import TIME_SOURCE as DEFAULT_TIME_SOURCE
from .record import ImageRecord

SOURCES = ("exif", "filename", "mtime")

# Date then time, each with optional separators, not inside a longer run of digits:
# 20210531082538-RCNX0031.JPG, 2024-06-01 12-00-00.jpg, IMG_20240601_120000.jpg, 2024_06_01T12.00.00
_STAMP = re.compile(
    r"(?<!\d)(?P<Y>(?:19|20)\d\d)(?P<s1>[-_.]?)(?P<m>[01]\d)(?P=s1)(?P<d>[0-3]\d)"
    r"(?:[ _T\-.]?)(?P<H>[0-2]\d)(?P<s2>[-_.:h]?)(?P<M>[0-5]\d)(?P=s2)(?P<S>[0-5]\d)(?!\d)"
)


def parse_time_source(value: str | list[str]) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    items = [s.strip().lower() for s in items if s.strip()]
    bad = [s for s in items if s not in SOURCES]
    if bad or not items or len(set(items)) != len(items):
        raise ValueError(f"--time-source {','.join(items) or value!r}: give an ordered list of "
                         f"{', '.join(SOURCES)} without repeats, e.g. exif,filename")
    return items


def filename_time(name: str) -> datetime | None:
    """The capture time a camera or renaming tool wrote into a file name, or None."""
    for m in _STAMP.finditer(Path(name).stem):
        try:
            return datetime(*(int(m.group(k)) for k in "YmdHMS"))
        except ValueError:  # 20211399... is no date: try a later match
            continue
    return None


def mtime_time(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime).replace(microsecond=0)
    except (OSError, ValueError, OverflowError):
        return None


def assign_times(records: list[ImageRecord], sources: list[str]) -> None:
    """Set each record's timestamp and timestamp_source from the first source that has one.

    The decoder's time (EXIF) is what `timestamp` holds when `timestamp_source` is unset or exif.
    """
    for r in records:
        embedded = r.timestamp if r.timestamp_source in (None, "exif") else None
        r.timestamp, r.timestamp_source = None, None
        for s in sources:
            t = embedded if s == "exif" else filename_time(r.path.name) if s == "filename" else mtime_time(r.path)
            if t is not None:
                r.timestamp, r.timestamp_source = t, s
                break


def suggest_time_source(records: list[ImageRecord]) -> str:
    """What would give these untimed photos a time (for the Camtrap DP export's error)."""
    n = sum(filename_time(r.path.name) is not None for r in records)
    if n:
        return (f"{n} of {len(records)} file names hold a date and time: run again with "
                "`patou run --time-source exif,filename`")
    return ("no EXIF time and no date in the file names: if the files kept their original modification "
            "times, run again with `patou run --time-source exif,filename,mtime`")
