"""`patou train | evaluate | export`: a classifier of your own, scored and made small for the edge."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..options import DETECTION_THRESHOLD, THRESHOLD, Thresholds, TrainOptions
from .console import fail, log_to, needs_extras, say
from .options import options_after


LABELS_HELP = ("The truth as a label file, the format read from its content: a Timelapse CSV, COCO Camera Traps "
               "JSON, a Wildlife Insights images.csv, a Camtrap DP package, or any CSV with path and label columns "
               "(names mapped to the model's labels through its taxon table).")


@options_after("out", TrainOptions)
def train_cmd(
    data: Path = typer.Argument(..., metavar="DATA", help="Folder tree whose leaf folder names are labels (or any folder with --labels)."),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder to write (model.onnx + model.json, history.csv, metrics.json)."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    **options,
) -> None:
    """Train a species classifier on your own labelled photos (transfer learning, on the CPU)."""
    opts = TrainOptions.from_cli(options)
    try:
        from ..train.job import train

        result = train(data, out, log=log_to(quiet), **opts.kwargs_for(train))
    except ModuleNotFoundError as e:
        needs_extras("training", e)
    except (ValueError, OSError) as e:
        fail(e)
    raise typer.Exit(0 if result.get("card") else 1)


def evaluate_cmd(
    data: Path = typer.Argument(..., metavar="DATA", help="Labelled folder tree (leaf folder = label), or any folder with --labels."),
    out: Path = typer.Option(..., "--out", "-o", help="Report folder (metrics.json, report.md, confusion_matrix.png, pr_curve.png)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Classifier folder or installed model name; default: the bundled ImageNet roll-up."),
    labels: Optional[Path] = typer.Option(None, "--labels", "--truth", help=LABELS_HELP),
    merge: Optional[str] = typer.Option(None, help="Merge or drop truth labels, as in patou train."),
    level: str = typer.Option("both", help="image | event | both."),
    target: Optional[str] = typer.Option(None, help="Class whose recall/threshold is reported (default: bear when the model has it)."),
    threshold: str = typer.Option(str(THRESHOLD), help="Operating threshold for the target and for 'undefined'; per class: bear=0.3,wolf=0.6,0.5."),
    want_recall: float = typer.Option(0.95, help="Report the highest target threshold that keeps this recall."),
    detection_threshold: float = typer.Option(DETECTION_THRESHOLD),
    fast: bool = typer.Option(False, "--fast", help="Use the int8 detector."),
    groups: bool = typer.Option(False, "--groups", help="Score at the model's coarse groups (an installed model's roe_deer -> deer)."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Score a classifier on labelled photos, image and event level, with figures and a report."""
    try:
        from ..evaluate import evaluate_model

        rep = evaluate_model(data, out, model, labels_csv=labels, merge=merge, level=level, target=target,
                             threshold=threshold, want_recall=want_recall, detection_threshold=detection_threshold,
                             fast=fast, groups=groups, log=log_to(quiet))
    except ModuleNotFoundError as e:
        needs_extras("evaluation", e)
    except (ValueError, OSError) as e:
        fail(e)
    if not quiet:
        for name in ("image", "event"):
            m = rep.get(name)
            if m:
                say(f"{name}s: n={m['n']} accuracy {m['accuracy']:.3f} balanced {m['balanced_accuracy']:.3f} "
                    f"macro F1 {m['macro_f1']:.3f} log-loss {m['log_loss']:.3f}"
                    + (f"; {m['target']['label']} recall {m['target']['recall']}" if m.get("target") else ""))
        say(f"report: {rep['report']}")


def export_cmd(
    model: Path = typer.Option(..., "--model", help="Model folder made by patou train."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the exported model."),
    int8: bool = typer.Option(False, "--int8", help="Static int8 quantisation (ONNX Runtime, per-channel weights)."),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="Folder of real photos to calibrate on."),
    target: Optional[str] = typer.Option(None, help="Class whose recall fp32 vs int8 is reported (default: bear)."),
    threshold: str = typer.Option(str(THRESHOLD), help="The target's threshold for its recall; per class: bear=0.3,0.5 (the target's own)."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Export a trained model for the edge: int8, checked against fp32 on the validation split."""
    if not int8:
        fail("the model from patou train is already ONNX (model.onnx); give --int8 for the int8 export")
    if calibration is None:
        fail("--int8 needs --calibration DATA: a folder of real photos like the ones the model will see")
    try:
        from ..train.job import export_int8

        thr = Thresholds.of_value(threshold)
        export_int8(model, calibration, out, target=target, threshold=thr.of(target or "bear"), log=log_to(quiet))
    except ModuleNotFoundError as e:
        needs_extras("int8 export", e)
    except (ValueError, OSError) as e:
        fail(e)
