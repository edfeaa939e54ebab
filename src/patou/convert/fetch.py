"""The steps every model install starts with: resumable download, the licence accepted, checksums.

Shared by the classifier installer (install.py) and the detector installer (detector_install.py):
refuse to overwrite an installed model, show the licence and have it accepted, take `--from FILE`
or download the publisher's file into a `.part` that a re-run resumes (HTTP Range), check the
pinned SHA-256 (and the publisher's MD5 where it states one), and clear the temp folders of
installs that were killed.
"""
from __future__ import annotations

import os
import re
import shutil
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from patou import __version__
from patou.digest import file_sha256
from patou.models import registry

CHUNK = 1 << 20


class InstallError(ValueError):
    """A clear, one-line reason the install stopped (nothing was installed)."""


Log = Callable[[str], None]
Progress = Callable[[int, int | None], None]


# ---------------------------------------------------------------- download
def download(url: str, dest: Path, progress: Progress | None = None, timeout: float = 60.0) -> Path:
    """Fetch `url` into `dest` through `dest.part`, resuming a `.part` left by an interrupted run
    (HTTP Range). `dest` only appears once the whole file is there."""
    if dest.is_file():
        return dest
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    req = urllib.request.Request(url, headers={"User-Agent": f"patou/{__version__}"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to fetch: the .part may be whole, or wrong; restart
            part.unlink()
            return download(url, dest, progress, timeout)
        raise InstallError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise InstallError(f"{url}: cannot connect ({getattr(e, 'reason', e)}); on a machine without network, "
                           "download the file elsewhere and use --from FILE") from None
    with resp:
        if have and resp.status != 206:  # the server ignored Range: start again
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        done = have
        try:
            with open(part, "ab" if have else "wb") as f:
                while True:
                    try:
                        block = resp.read(CHUNK)
                    except (OSError, ValueError) as e:  # connection dropped mid-file
                        raise InstallError(f"{url}: download interrupted after {done} bytes ({e}); "
                                           "run the same command again to resume") from None
                    if not block:
                        break
                    f.write(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
        except OSError as e:
            raise InstallError(f"{part}: cannot write the download ({e.strerror or e})") from None
    if total is not None and done != total:
        raise InstallError(f"{url}: download interrupted at {done} of {total} bytes; "
                           "run the same command again to resume")
    part.replace(dest)
    return dest


@dataclass(frozen=True)
class Fetched:
    path: Path
    sha256: str
    downloaded: Path | None  # ours to delete after the install
    pinned: str | None
    url: str
    md5_matches_publisher: bool | None = None


def fetch(name: str, vname: str, licence: str, src_url: str, pinned: str | None, size_mb: int | None, *,
          from_file=None, accept_licence: bool = False, confirm=None, mirror: bool = False,
          progress: Progress | None = None, log: Log = print, md5: str | None = None):
    """The steps every install starts with: refuse to overwrite an installed model, show the
    licence and have it accepted, take `--from FILE` or download (resumable), check the pinned
    SHA-256 (and the publisher's MD5 when it states one: a download that does not match is
    refused, a `--from` or mirror file is installed as given and the card says so)."""
    root = registry.models_dir()
    dest = root / name
    if dest.exists():
        raise InstallError(f"{name} is already installed in {dest}; `patou models remove {name}` first")
    log(licence)
    if not accept_licence:
        if confirm is None or not confirm(f"Accept the licence of {name} {vname}?"):
            raise InstallError(f"the licence of {name} {vname} was not accepted (give --accept-licence)")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InstallError(f"{root}: cannot create the models folder ({e.strerror or e})") from None
    for gone in clean_stale_installs(root):
        log(f"removed {gone.name}, left by an install that was killed")
    downloaded = None
    if from_file is not None:
        path = Path(from_file).expanduser()
        if not path.is_file():
            raise InstallError(f"--from {path}: no such file")
        log(f"using {path} (no download)")
    else:
        downloaded = root / ".downloads" / Path(src_url.split("?")[0]).name
        log(f"downloading {src_url}" + (f" (about {size_mb} MB)" if size_mb and not mirror else ""))
        path = download(src_url, downloaded, progress)
    digest = file_sha256(path)
    if pinned and digest != pinned.lower():
        if downloaded is not None:
            downloaded.unlink(missing_ok=True)  # a corrupt download is of no use to a retry
        raise InstallError(f"{path}: SHA-256 {digest} does not match the pinned {pinned}")
    md5_ok = None
    if md5:  # the publisher's own checksum of its file
        import hashlib

        h = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                h.update(block)
        md5_ok = h.hexdigest() == md5
        if not md5_ok and downloaded is not None and not mirror:
            downloaded.unlink(missing_ok=True)
            raise InstallError(f"{path}: MD5 {h.hexdigest()} is not the publisher's {md5}")
        if not md5_ok:
            log(f"note: {path.name} is not the publisher's file (MD5 {h.hexdigest()}, published {md5}); "
                "installing it as given (the card says so)")
    return Fetched(path, digest, downloaded, pinned, src_url, md5_ok)


_INSTALLING = re.compile(r"^\.(?P<name>.+)\.installing-(?P<pid>\d+)$")


def clean_stale_installs(root: Path | None = None) -> list[Path]:
    """Remove the `.NAME.installing-PID` folders of installs whose process is gone (killed with
    -9: up to 1.2 GB each). A live process's folder, or one whose owner cannot be told, stays."""
    root = root or registry.models_dir()
    gone = []
    try:
        names = os.listdir(root)
    except OSError:
        return gone
    for n in names:
        m = _INSTALLING.match(n)
        p = root / n
        if m and p.is_dir() and not p.is_symlink() and not _alive(int(m["pid"])):
            shutil.rmtree(p, ignore_errors=True)
            if not p.exists():
                gone.append(p)
    return gone


def _alive(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":  # Windows' os.kill would end the process, not ask
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):  # someone else's process (or an odd number): keep
        return True
    return True


@contextmanager
def building(root: Path, name: str):
    """The hidden temp folders an install builds NAME (and NAME-int8) in, removed whatever happens;
    torch's export, ONNX Runtime and the disk's errors become one InstallError line. Renaming a
    temp folder into place is the only step that makes a model visible."""
    tmp = root / f".{name}.installing-{os.getpid()}"
    tmp_int8 = root / f".{name}-int8.installing-{os.getpid()}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        yield tmp, tmp_int8
    except RuntimeError as e:  # torch's export or ORT on a network it cannot run
        raise InstallError(f"conversion of {name} failed: {str(e).splitlines()[0][:300]}") from None
    except OSError as e:
        raise InstallError(f"install of {name} failed: {e.strerror or e} ({getattr(e, 'filename', '') or root})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(tmp_int8, ignore_errors=True)
