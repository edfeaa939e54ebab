"""The runs the app knows (folders named on the command line, runs started from the page) and
the background jobs that start new ones."""
from __future__ import annotations

import hashlib
import os
import re
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from patou.results import Run, RunFolder, load_run, read_run_info


def run_id(out: Path) -> str:
    """Stable across restarts: the folder's name (for people) + a hash of its absolute path."""
    out = Path(os.path.abspath(out))
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", out.name).strip("-")[:40] or "run"
    return f"{slug}-{hashlib.sha1(str(out).encode()).hexdigest()[:8]}"


@dataclass
class Job:
    """A `patou.run` in a background thread; the page polls its progress."""

    id: str
    inputs: list[str]
    out: Path
    options: dict
    state: str = "queued"  # queued, running, done, failed
    done: int = 0
    total: int = 0
    error: str = ""
    log: list[str] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0

    def as_json(self) -> dict:
        elapsed = (self.finished or time.time()) - self.started if self.started else 0.0
        return dict(id=self.id, inputs=self.inputs, out=str(self.out), run_id=run_id(self.out), state=self.state,
                    done=self.done, total=self.total, error=self.error, log=self.log[-20:],
                    elapsed_s=round(elapsed, 1))


class Registry:
    def __init__(self, results_dirs: list[Path], runs_dir: Path):
        self.results_dirs = [Path(os.path.abspath(p)) for p in results_dirs]
        self.runs_dir = Path(os.path.abspath(runs_dir))
        self.jobs: dict[str, Job] = {}
        self._cache: dict[Path, tuple[tuple, Run]] = {}
        self._lock = threading.Lock()
        # one run at a time: the models already use every core
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="patou-run")

    # ------------------------------------------------------------------ runs
    def folders(self) -> list[Path]:
        found = list(self.results_dirs)
        if self.runs_dir.is_dir():
            found += sorted(p for p in self.runs_dir.iterdir() if RunFolder(p).run_info.is_file())
        found += [j.out for j in self.jobs.values()]
        seen, out = set(), []
        for p in found:
            if p not in seen:
                seen.add(p)
                out.append(p)
        return out

    def folder(self, rid: str) -> Path:
        for p in self.folders():
            if run_id(p) == rid:
                return p
        raise KeyError(rid)

    def load(self, rid: str) -> Run:
        """The run, re-read only when records.jsonl or run.json changed (runs can be large)."""
        out = self.folder(rid)
        stamp = tuple(_mtime(p) for p in (RunFolder(out).run_info, RunFolder(out).records))
        with self._lock:
            hit = self._cache.get(out)
            if hit and hit[0] == stamp:
                return hit[1]
        run = load_run(out)  # ValueError with a clear message for old or foreign folders
        with self._lock:
            self._cache[out] = (stamp, run)
        return run

    def summary(self, out: Path) -> dict:
        rid = run_id(out)
        job = next((j for j in self.jobs.values() if j.out == out and j.state in ("queued", "running")), None)
        d = dict(id=rid, out=str(out), name=out.name, error="", images=None, finished="", inputs=[],
                 job=job.as_json() if job else None)
        if job:
            return d
        try:
            info = read_run_info(out)
        except (ValueError, OSError) as e:
            d["error"] = str(e)
            return d
        counts = info.get("counts", {})
        d.update(images=counts.get("images"), finished=info.get("finished", ""),
                 inputs=info.get("options", {}).get("inputs", []), events=counts.get("events"),
                 failures=counts.get("failures"))
        return d

    # ------------------------------------------------------------------ jobs
    def start(self, inputs: list[str], out: Path | None, options: dict) -> Job:
        """Queue `patou.run(inputs, out, **options)`; `out` defaults to RUNS_DIR/<date>-<folder>."""
        if not inputs:
            raise ValueError("name a folder of photos")
        for p in inputs:
            if not Path(p).exists():
                raise ValueError(f"{p}: no such folder or file")
        if out is None:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            name = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(inputs[0]).name).strip("-") or "photos"
            out = self.runs_dir / f"{stamp}-{name}"
        out = Path(os.path.abspath(out))
        with self._lock:
            job = Job(id=f"job{len(self.jobs) + 1}", inputs=[str(p) for p in inputs], out=out, options=options)
            self.jobs[job.id] = job
        self._pool.submit(self._run, job)
        return job

    def _run(self, job: Job) -> None:
        from patou.api import run

        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total

        job.state, job.started = "running", time.time()
        try:
            result = run(job.inputs, job.out, log=job.log.append, progress=progress, **job.options)
            job.total = job.total or len(result.records)
            job.done = job.total
            job.state = "done"
        except Exception as e:  # shown on the page; the server goes on
            job.state, job.error = "failed", f"{type(e).__name__}: {e}"
            job.log.append(traceback.format_exc(limit=3))
        finally:
            job.finished = time.time()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _mtime(p: Path) -> int:
    try:
        return p.stat().st_mtime_ns
    except OSError:
        return 0
