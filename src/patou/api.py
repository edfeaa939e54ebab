"""`patou.run(...)`: the whole job from Python, option for option the same as `patou run`."""
from __future__ import annotations

import json
import os
import platform
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from . import __version__
from .decide import decide_event, decide_image
from .detections_in import detector_summary
from .detections_in import match as match_detections
from .detections_in import no_detector as no_detector_boxes
from .events import group_events
from .media import MEDIA_EXTENSIONS, scan
from .outputs.atomic import atomic_output
from .outputs.corrections import load_corrections
from .outputs.folder import OutLock, clean_stale_temps
from .outputs.megadetector import write_megadetector_json
from .outputs.sort import load_plan, plan_sort, save_plan, sort_files
from .outputs.tables import write_csv, write_xlsx
from .pipeline import Checkpoint, Models, process
from .record import ImageRecord
from .results import RESULTS_VERSION, write_records
from .timestamps import DEFAULT_TIME_SOURCE, assign_times, parse_time_source
from .video import VideoSampling

SAMPLES = Path(__file__).parent / "samples"
DEFAULT_DETECTION_THRESHOLD = 0.2  # MegaDetector's typical threshold
DEFAULT_THRESHOLD = 0.5  # see README "Choosing --threshold"


class NothingToDo(ValueError):
    """No image to analyse: earlier results stay as they were. exit_code 0 when the run still
    finished something (a sort a killed run left half done), else 1."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class RunResult:
    records: list[ImageRecord]
    out: Path
    problems: list[str] = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0 unless no image at all could be read, or a sort was asked for and every file of it failed."""
        sort = self.counts.get("sort")
        if sort and sort["planned"] and not (sort["done"] or sort["skipped"]) and (sort["errors"] or sort["clashes"]):
            return 1
        return 0 if any(r.failure is None for r in self.records) else 1


def run(
    inputs: list[str | Path] | None = None,
    out: str | Path = "patou-results",
    *,
    demo: bool = False,
    model: str | Path | None = None,
    detection_threshold: float | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    target: str | None = None,
    event_gap: float = 20.0,
    site_depth: int | None = None,
    sort: str | None = None,
    sort_dir: str | Path | None = None,
    dry_run: bool = False,
    resume: bool = False,
    threads: int | None = None,
    flip: bool = True,
    fast: bool = False,
    video_fps: float = VideoSampling.fps,
    video_frames: int = VideoSampling.frames,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    max_pixels: int | None = None,
    detections: str | Path | None = None,
    no_detector: bool = False,
    time_source: str | list[str] = DEFAULT_TIME_SOURCE,
    detector_size: str | int | None = None,
    images_at_once: int | None = None,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int], None] | None = None,
) -> RunResult:
    """Detect, classify, group into events and write every output into `out`.

    `progress(done, total)` is called after each image (the CLI draws its bar with it).
    `detections`: a MegaDetector batch file whose boxes replace the bundled detector's for the
    files it lists; `no_detector`: every photo is one box (inputs that are crops already).
    `detection_threshold` defaults to the file's typical threshold, else 0.2.
    `images_at_once`: images analysed side by side (default one per thread: the most photos per
    second; 1 = one image at a time with every thread, the shortest wait for each photo).
    """
    t0 = time.perf_counter()
    if demo and inputs:
        raise ValueError("--demo runs on the bundled samples: give either --demo or input folders, not both")
    inputs = [SAMPLES] if demo else [Path(p) for p in inputs or []]
    if not inputs:
        raise ValueError("no input folder given (or use demo=True / --demo)")
    for name, v in (("--threshold", threshold), ("--detection-threshold", detection_threshold)):
        if v is not None and not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, not {v:g}")
    for name, v in (("--event-gap", event_gap), ("--site-depth", site_depth), ("--max-pixels", max_pixels)):
        if v is not None and v < 0:
            raise ValueError(f"{name} must not be negative, not {v:g}")
    if Path(out).exists() and not Path(out).is_dir():
        raise ValueError(f"--out {out}: is a file, not a folder (give a folder for the results)")
    if sort and not sort_dir:
        raise ValueError("--sort needs --sort-dir")
    if sort and sort not in ("copy", "move", "link"):
        raise ValueError(f"--sort must be copy, move or link, not {sort!r}")
    if engine not in ("local", "ray"):
        raise ValueError(f"--engine must be local or ray, not {engine!r}")
    if engine == "local" and (address or workers):
        raise ValueError("--address and --workers need --engine ray")
    if detections and no_detector:
        raise ValueError("--detections and --no-detector exclude each other")
    sources = parse_time_source(time_source)
    out = Path(out)
    # One run per results folder (released at the end, or by the kernel if this process dies).
    lock, finished = None, None
    try:
        pending = out / ".patou" / "sort-plan.json"
        if pending.is_file():  # a killed run's sort: finish it as planned before looking at the inputs
            lock = OutLock(out)
            finished = _finish_interrupted_sort(pending, sort, sort_dir, dry_run, log, inputs)
        records, problems = scan(inputs, exclude=[out] + ([Path(sort_dir)] if sort_dir else []), site_depth=site_depth)
        if not records:  # never replace earlier results with empty ones
            why = "; ".join(problems) or (f"no image or video in {', '.join(map(str, inputs))} "
                                          f"({', '.join(sorted(MEDIA_EXTENSIONS))})")
            kept = f"; results in {out} left as they were" if (out / "predictions.csv").exists() else ""
            raise NothingToDo(f"nothing to analyse: {why}{kept}", exit_code=0 if finished else 1)
        given, notes = (no_detector_boxes(), []) if no_detector else (None, [])
        if detections:  # read and checked before any model loads: a file that cannot be trusted stops here
            given, notes = match_detections(detections, records)
        model_options = dict(model=model, threads=threads, flip=flip, fast=fast, video=VideoSampling(video_fps, video_frames),
                             max_pixels=max_pixels, detector_size=detector_size)
        # Ray workers bring their own Models; here, a batch: by default one image per thread
        models = Models(**model_options, images_at_once=images_at_once if engine != "ray" else 1)
        if target and target not in models.classifier.labels:
            raise ValueError(f"--target {target!r} is not a label of the model ({', '.join(models.classifier.labels)})")
        lock = lock or OutLock(out)
        clean_stale_temps(out)

        for p in problems:
            log(f"warning: {p}")
        threshold_note = None
        if given is not None:
            model_options["given"] = models.given = given
        for n in notes:
            log(n)
        if detections:
            if detection_threshold is None and given.typical_threshold is not None:
                detection_threshold = given.typical_threshold
                threshold_note = f"typical_detection_threshold of {detections}"
        if detection_threshold is None:
            detection_threshold = DEFAULT_DETECTION_THRESHOLD
        t_scan = time.perf_counter()

        checkpoint = Checkpoint(out / ".patou" / "checkpoint.jsonl", models.fingerprint(detection_threshold))
        done = checkpoint.load() if resume else {}
        checkpoint.open(fresh=not resume)
        todo = []
        for i, r in enumerate(records):
            if str(r.path) in done:
                prev = done[str(r.path)]
                prev.root, prev.site = r.root, r.site  # options of this run, not of the checkpoint
                records[i] = prev
            else:
                todo.append(r)
        if done:
            log(f"resuming: {len(records) - len(todo)} of {len(records)} images already done")
        n_done = len(records) - len(todo)

        def on_done(r: ImageRecord) -> None:
            nonlocal n_done
            n_done += 1
            if r.failure:
                log(f"failed: {r.path}: {r.failure}")
            if progress:
                progress(n_done, len(records))

        ray_info = None
        try:
            if engine == "ray":  # the same analysis on Ray workers; decide/group/write stay here
                from .ray_engine import process_on_ray

                ray_info = process_on_ray(todo, model_options, detection_threshold, checkpoint, on_done,
                                          workers=workers, address=address)
            else:
                process(todo, models, detection_threshold, checkpoint, on_done)
        finally:
            checkpoint.close()
        t_infer = time.perf_counter()

        assign_times(records, sources)
        for r in records:
            decide_image(r, detection_threshold, threshold, target)
        for event in group_events(records, event_gap):
            decide_event(event, threshold, target)

        out.mkdir(parents=True, exist_ok=True)
        corrections = load_corrections(out)  # a re-run keeps what people corrected
        write_csv(records, out / "predictions.csv", detection_threshold, target, corrections)
        write_xlsx(records, out / "predictions.xlsx", detection_threshold, target, corrections)
        write_megadetector_json(
            records,
            out / "megadetector.json",
            detector_card_summary=detector_summary(models.given, models.detector.card.summary()),
            classifier_labels=models.classifier.labels,
            classifier_name=models.classifier.card.name,
            roots=sorted({r.root for r in records}, key=str) or inputs,
            typical_detection_threshold=detection_threshold,
        )
        write_records(records, out)
        t_write = time.perf_counter()

        result = RunResult(records, out, problems)
        if sort:
            plan = plan_sort(records, Path(sort_dir), roots=inputs)  # only what the scan found under them
            if not dry_run:
                save_plan(plan, sort, pending)
            report = sort_files(plan, sort, dry_run=dry_run, log=log)
            pending.unlink(missing_ok=True)
            log(report.summary())
            result.counts["sort"] = {k: getattr(report, k) for k in ("planned", "done", "skipped", "clashes", "errors")}

        n_ok = sum(r.failure is None for r in records)
        result.counts.update(
            images=len(records),
            failures=len(records) - n_ok,
            events=len({r.event_id for r in records if r.event_id}),
            labels=dict(Counter(r.label for r in records if r.label)),
            event_labels=dict(Counter({r.event_id: r.event_label for r in records if r.event_id}.values())),
            resumed=len(records) - len(todo),
        )
        n_new = len(todo)
        result.timings = {
            "scan_s": round(t_scan - t0, 3),
            "inference_s": round(t_infer - t_scan, 3),
            "write_s": round(t_write - t_infer, 3),
            "total_s": round(time.perf_counter() - t0, 3),
            "images_per_s": round(n_new / (t_infer - t_scan), 2) if n_new and t_infer > t_scan else None,
        }
        _write_run_json(result, models, dict(
            inputs=[str(p) for p in inputs], out=str(out), demo=demo, model=str(model) if model else None,
            detection_threshold=detection_threshold, threshold=threshold, target=target, event_gap=event_gap,
            site_depth=site_depth, sort=sort, sort_dir=str(sort_dir) if sort_dir else None, dry_run=dry_run,
            resume=resume, threads=threads, flip=flip, fast=fast, video_fps=video_fps, video_frames=video_frames,
            engine=engine, address=address, workers=workers, ray=ray_info, max_pixels=max_pixels,
            detections=str(detections) if detections else None, no_detector=no_detector, time_source=",".join(sources),
            detection_threshold_from=threshold_note, detector_size=detector_size,
        ), _given_info(models.given))
    finally:  # also on an error: a Python caller may go on and run again into the folder
        if lock is not None:
            lock.release()
    return result


def _given_info(given) -> dict | None:
    """run.json's account of boxes that did not come from the bundled detector."""
    if given is None:
        return None
    if given.whole_image:
        return {"source": "no-detector (one box per photo or frame)"}
    return {"source": given.source, "sha256_16": given.digest, "detector": given.info.get("detector"),
            "format_version": given.info.get("format_version"), "files_listed_and_found": len(given.by_path)}


def _finish_interrupted_sort(pending: Path, sort: str | None, sort_dir, dry_run: bool, log, inputs) -> bool:
    """Carry out the sort plan a killed run saved (moves are resumable), then forget it; only
    files under this run's inputs are taken."""
    mode, plan = load_plan(pending, roots=inputs)
    if sort != mode or sort_dir is None or Path(sort_dir).absolute() != plan.sort_dir.absolute():
        raise ValueError(f"{pending.parent.parent}: a killed run left its --sort {mode} into {plan.sort_dir} "
                         f"unfinished; rerun with --sort {mode} --sort-dir {plan.sort_dir} to finish it "
                         f"(or delete {pending})")
    log(f"warning: finishing the {mode} into {plan.sort_dir} that an interrupted run left ({len(plan)} files planned)")
    report = sort_files(plan, mode, dry_run=dry_run, log=log)
    log(report.summary())
    if not dry_run:
        pending.unlink()
    return not dry_run


def _write_run_json(result: RunResult, models: Models, options: dict, detections: dict | None = None) -> None:
    data = {
        "patou_version": __version__,
        "results_version": RESULTS_VERSION,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
        "options": options,
        "models": {"detector": models.detector.card.summary(), "classifier": models.classifier.card.summary(),
                   **({"detections": detections} if detections else {})},
        "counts": result.counts,
        "timings": result.timings,
        "problems": result.problems,
    }
    with atomic_output(result.out / "run.json") as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
