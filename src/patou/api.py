"""`patou.run(...)`: the whole job from Python, option for option the same as `patou run`.

The options are `RunOptions` (patou/options.py); `run` reads as its steps: finish a sort a killed run
left, scan, choose the boxes, build the analyser, resume, analyse (here or on Ray), decide, write,
sort, account for it in run.json. The results folder is a `RunFolder` (results.py).
"""
from __future__ import annotations

import inspect
import os
import platform
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .blur import people_boxes
from . import __version__
from .boxes import BoxSource, choose
from .corrections import load_corrections
from .decide import decide_event, decide_image
from .events import group_events
from .formats.megadetector import write_megadetector_json
from .formats.taxa import load_table, table_of_card
from .formats.tables import write_csv, write_xlsx
from .media import MEDIA_EXTENSIONS, scan
from .options import DETECTION_THRESHOLD, RunOptions
from .pipeline import Analyser, Checkpoint, process
from .record import ImageRecord
from .results import RunFolder
from .sort import load_plan, plan_sort, save_plan, sort_files
from .timestamps import assign_times, parse_time_source

SAMPLES = Path(__file__).parent / "samples"
Log = Callable[[str], None]


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
    log: Log = print,
    progress: Callable[[int, int], None] | None = None,
    options: RunOptions | None = None,
    **changes,
) -> RunResult:
    """Detect, classify, group into events and write every output into `out`.

    The keywords are `RunOptions`' fields (`patou run --help` explains each), or `options` a whole
    record. `progress(done, total)` is called after each image (the CLI draws its bar with it).
    `detections`: a MegaDetector batch file whose boxes replace the bundled detector's for the
    files it lists; `no_detector`: every photo is one box (inputs that are crops already).
    `detection_threshold` defaults to the file's typical threshold, else 0.2.
    `images_at_once`: images analysed side by side (default one per thread: the most photos per
    second; 1 = one image at a time with every thread, the shortest wait for each photo).
    """
    t0 = time.perf_counter()
    opts = (options or RunOptions()).replace(**changes) if changes else (options or RunOptions())
    if opts.demo and inputs:
        raise ValueError("--demo runs on the bundled samples: give either --demo or input folders, not both")
    inputs = [SAMPLES] if opts.demo else [Path(p) for p in inputs or []]
    if not inputs:
        raise ValueError("no input folder given (or use demo=True / --demo)")
    opts.check()
    if Path(out).exists() and not Path(out).is_dir():
        raise ValueError(f"--out {out}: is a file, not a folder (give a folder for the results)")
    time_sources = parse_time_source(opts.time_source)
    folder = RunFolder(out)
    lock = None  # one run per results folder (released at the end, or by the kernel if this process dies)
    try:
        lock, finished = finish_interrupted_sort(folder, opts, inputs, log)
        records, problems = scan_inputs(inputs, folder, opts, finished)
        boxes, notes = choose(opts, records)  # a MegaDetector file is read and checked before any model loads
        # Ray workers bring their own analysers; here, a batch: by default one image per thread
        analyser = Analyser.for_run(opts, boxes)
        if opts.target and opts.target not in analyser.classifier.labels:
            raise ValueError(f"--target {opts.target!r} is not a label of the model "
                             f"({', '.join(analyser.classifier.labels)})")
        opts.thresholds.check(analyser.classifier.labels)
        lock = lock or folder.lock()
        folder.clean_stale_temps()
        for p in problems:
            log(f"warning: {p}")
        for n in notes:
            log(n)
        detection_threshold, threshold_from = choose_detection_threshold(opts, boxes, analyser.detector_boxes)
        t_scan = time.perf_counter()

        checkpoint = Checkpoint(folder.checkpoint, analyser.fingerprint(detection_threshold))
        todo = resume(records, checkpoint, opts.resume, log)
        ray_info = analyse(records, todo, checkpoint, analyser, opts, detection_threshold, log, progress)
        t_infer = time.perf_counter()

        decide(records, time_sources, detection_threshold, opts, boxes, analyser.classifier.event_logit_scale)
        write(records, folder, analyser, detection_threshold, opts, inputs)
        t_write = time.perf_counter()

        result = RunResult(records, folder.out, problems)
        if opts.sort:
            result.counts["sort"] = sort(records, folder, opts, inputs, detection_threshold, log)
        result.counts.update(counts(records, todo))
        n_new = len(todo)
        result.timings = {
            "scan_s": round(t_scan - t0, 3),
            "inference_s": round(t_infer - t_scan, 3),
            "write_s": round(t_write - t_infer, 3),
            "total_s": round(time.perf_counter() - t0, 3),
            "images_per_s": round(n_new / (t_infer - t_scan), 2) if n_new and t_infer > t_scan else None,
        }
        options_used = dict(inputs=[str(p) for p in inputs], out=str(folder.out), **opts.to_json())
        options_used.update(detection_threshold=detection_threshold, time_source=",".join(time_sources),
                            ray=ray_info, detection_threshold_from=threshold_from)
        write_run_info(result, folder, analyser, options_used, boxes)
    finally:  # also on an error: a Python caller may go on and run again into the folder
        if lock is not None:
            lock.release()
    return result


# patou.run's signature, for help() and editors: RunOptions' fields as keywords
run.__signature__ = inspect.signature(run).replace(parameters=[
    *(p for p in inspect.signature(run).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD),
    *(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default) for f in RunOptions.fields()),
])


# ------------------------------------------------------------------------------ the steps
def finish_interrupted_sort(folder: RunFolder, opts: RunOptions, inputs: list[Path], log: Log):
    """A killed run's sort: finished as planned before the inputs are looked at (moves are
    resumable), then forgotten; only files under this run's inputs are taken. Returns (the run
    lock, if taken, and whether a sort was finished)."""
    pending = folder.sort_plan
    if not pending.is_file():
        return None, None
    lock = folder.lock()
    mode, plan = load_plan(pending, roots=inputs)
    if opts.sort != mode or opts.sort_dir is None or Path(opts.sort_dir).absolute() != plan.sort_dir.absolute():
        raise ValueError(f"{folder.out}: a killed run left its --sort {mode} into {plan.sort_dir} "
                         f"unfinished; rerun with --sort {mode} --sort-dir {plan.sort_dir} to finish it "
                         f"(or delete {pending})")
    log(f"warning: finishing the {mode} into {plan.sort_dir} that an interrupted run left ({len(plan)} files planned)")
    report = sort_files(plan, mode, dry_run=opts.dry_run, log=log)
    log(report.summary())
    if not opts.dry_run:
        pending.unlink()
    return lock, not opts.dry_run


def scan_inputs(inputs: list[Path], folder: RunFolder, opts: RunOptions, finished) -> tuple[list[ImageRecord], list[str]]:
    """Every image and video under the inputs (never the results or the sort folder); none at all
    is NothingToDo, so earlier results are never replaced by empty ones."""
    exclude = [folder.out] + ([Path(opts.sort_dir)] if opts.sort_dir else [])
    records, problems = scan(inputs, exclude=exclude, site_depth=opts.site_depth)
    if not records:
        why = "; ".join(problems) or (f"no image or video in {', '.join(map(str, inputs))} "
                                      f"({', '.join(sorted(MEDIA_EXTENSIONS))})")
        kept = f"; results in {folder.out} left as they were" if folder.predictions_csv.exists() else ""
        raise NothingToDo(f"nothing to analyse: {why}{kept}", exit_code=0 if finished else 1)
    return records, problems


def choose_detection_threshold(opts: RunOptions, boxes: BoxSource | None,
                               detector: BoxSource | None = None) -> tuple[float, str | None]:
    """--detection-threshold, else the MegaDetector file's typical threshold, else the installed
    detector's (`--detector`: its publisher's), else 0.2; and where it came from when not from the user."""
    if opts.detection_threshold is not None:
        return opts.detection_threshold, None
    typical = getattr(boxes, "typical_threshold", None)
    if typical is not None:
        return typical, f"typical_detection_threshold of {opts.detections}"
    typical = getattr(detector, "typical_threshold", None)
    if typical is not None:
        return typical, f"typical_detection_threshold of --detector {opts.detector}"
    return DETECTION_THRESHOLD, None


def resume(records: list[ImageRecord], checkpoint: Checkpoint, resuming: bool, log: Log) -> list[ImageRecord]:
    """The records still to analyse; with --resume, the checkpoint's finished ones replace theirs
    (the checkpoint is then appended to, else started afresh)."""
    done = checkpoint.load() if resuming else {}
    checkpoint.open(fresh=not resuming)
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
    return todo


def analyse(records: list[ImageRecord], todo: list[ImageRecord], checkpoint: Checkpoint, analyser: Analyser,
            opts: RunOptions, detection_threshold: float, log: Log, progress) -> dict | None:
    """Boxes and class scores for `todo`, each appended to the checkpoint as it finishes; here, or
    on Ray workers (decide, group and write stay here either way). Returns what Ray used."""
    n_done = len(records) - len(todo)

    def on_done(r: ImageRecord) -> None:
        nonlocal n_done
        n_done += 1
        if r.failure:
            log(f"failed: {r.path}: {r.failure}")
        if progress:
            progress(n_done, len(records))

    try:
        if opts.engine == "ray":
            from .ray_engine import process_on_ray

            return process_on_ray(todo, opts, analyser.boxes, detection_threshold, checkpoint, on_done)
        process(todo, analyser, detection_threshold, checkpoint, on_done)
        return None
    finally:
        checkpoint.close()


def decide(records: list[ImageRecord], time_sources: list[str], detection_threshold: float, opts: RunOptions,
           boxes: BoxSource | None = None, logit_scale: float | None = None) -> None:
    """Capture times, image verdicts and counts, events and their verdicts and MaxN (averaged as the
    classifier's card says: `logit_scale`, see decide.py); the labels the boxes came with (a
    SpeciesNet file's), beside patou's."""
    assign_times(records, time_sources)
    given = getattr(boxes, "labels", None) or {}
    for r in records:
        r.source_label, r.source_score = given.get(str(r.path), (None, None))
    thresholds = opts.thresholds
    for r in records:
        decide_image(r, detection_threshold, thresholds, opts.target, logit_scale)
    for event in group_events(records, opts.event_gap):
        decide_event(event, thresholds, opts.target, detection_threshold, logit_scale)


def write(records: list[ImageRecord], folder: RunFolder, analyser: Analyser, detection_threshold: float,
          opts: RunOptions, inputs: list[Path]) -> None:
    """predictions.csv/.xlsx (with the corrections people made, which a re-run keeps),
    megadetector.json and records.jsonl."""
    folder.out.mkdir(parents=True, exist_ok=True)
    corrections = load_corrections(folder.out)
    write_csv(records, folder.predictions_csv, detection_threshold, opts.target, corrections)
    write_xlsx(records, folder.predictions_xlsx, detection_threshold, opts.target, corrections)
    card = analyser.classifier.card
    write_megadetector_json(
        records,
        folder.megadetector,
        detector_card_summary=analyser.detector_summary(),
        classifier_labels=analyser.classifier.labels,
        classifier_name=f"{card.name} v{card.version} (patou {__version__})",
        roots=sorted({r.root for r in records}, key=str) or inputs,
        typical_detection_threshold=detection_threshold,
        classifier_metadata={"classifier": card.name, "classifier_version": str(card.version),
                             "software": f"patou {__version__}",
                             "typical_classification_threshold": opts.thresholds.default,
                             **({"class_thresholds": opts.thresholds.per_class} if opts.thresholds.per_class else {})},
        taxa=load_table(table_of_card(card)),  # the same taxa the Camtrap DP export gives
    )
    folder.write_records(records)


def sort(records: list[ImageRecord], folder: RunFolder, opts: RunOptions, inputs: list[Path],
         detection_threshold: float, log: Log) -> dict:
    """Copy, move or link each file into SORT_DIR/<event label>/, from a plan saved first (a
    killed sort is finished by the next run); only what the scan found under the inputs. With
    --blur-humans, the copies of photos with people have them blurred."""
    blur = people_boxes(records, load_corrections(folder.out), detection_threshold) if opts.blur_humans else None
    plan = plan_sort(records, Path(opts.sort_dir), roots=inputs, blur=blur)
    if not opts.dry_run:
        save_plan(plan, opts.sort, folder.sort_plan)
    report = sort_files(plan, opts.sort, dry_run=opts.dry_run, log=log)
    folder.sort_plan.unlink(missing_ok=True)
    log(report.summary())
    return {k: getattr(report, k) for k in ("planned", "done", "skipped", "clashes", "errors")}


def counts(records: list[ImageRecord], todo: list[ImageRecord]) -> dict:
    n_ok = sum(r.failure is None for r in records)
    return dict(
        images=len(records),
        failures=len(records) - n_ok,
        events=len({r.event_id for r in records if r.event_id}),
        labels=dict(Counter(r.label for r in records if r.label)),
        event_labels=dict(Counter({r.event_id: r.event_label for r in records if r.event_id}.values())),
        resumed=len(records) - len(todo),
    )


def write_run_info(result: RunResult, folder: RunFolder, analyser: Analyser, options: dict,
                   boxes: BoxSource | None) -> None:
    detections = boxes.run_info() if boxes is not None else None
    folder.write_run_info({
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
        "options": options,
        "models": {"detector": analyser.detector.card.summary(), "classifier": analyser.classifier.card.summary(),
                   **({"detections": detections} if detections else {})},
        "counts": result.counts,
        "timings": result.timings,
        "problems": result.problems,
    })
