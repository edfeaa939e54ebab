"""The `patou` command: one verb per job, every option also reachable from Python.

One module per verb group (run, train/evaluate/export, camtrap_dp, report, serve, guard, models, reid), one
console for all of them (console.py). The options of `run`, `guard` and `train` are the fields of
their records in patou/options.py (options.py here turns a record into typer options).
"""
from __future__ import annotations

import typer

from . import camtrap_dp, guard, models, reid, report, run, serve, train

# typer 0.29 prints "<bool>" after every on/off flag, which takes no value: show no type for flags.
_type_of = typer.core.TyperOption.display_type_rich
typer.core.TyperOption.display_type_rich = lambda self, ctx: None if self.is_flag else _type_of(self, ctx)

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Camera-trap AI, offline, on a CPU.")
app.add_typer(models.app, name="models")  # patou models list|install|remove
app.add_typer(reid.app, name="reid")  # patou reid train|search|evaluate


@app.callback()
def main() -> None:
    """patou: detect, classify and sort camera-trap images."""


app.command("run")(run.run_cmd)
app.command("train")(train.train_cmd)
app.command("evaluate")(train.evaluate_cmd)
app.command("export")(train.export_cmd)
app.command("export-camtrap-dp")(camtrap_dp.export_camtrap_dp_cmd)
app.command("report")(report.report_cmd)
app.command("serve")(serve.serve_cmd)
app.command("guard")(guard.guard_cmd)

