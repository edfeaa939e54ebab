"""`patou report`: one page a field team reads instead of a spreadsheet.

From a results folder (read through `results.load_run`, with the review app's corrections over
the model's labels): headline numbers, camera health per site (each flag with the rule that
found it), species (events, MaxN, events per 100 camera-days, naive occupancy), activity by hour,
and where the AI is unsure. One self-contained HTML file (figures embedded as SVG, no network,
prints well) and the same tables as CSV beside it. `patou serve` shows the same page for a run.

    season.py   the run read back: photos with the label that stands, sites, observations
    count.py    animals in one photo (from its boxes)
    health.py   the camera-health rules and camera-days
    species.py  events, MaxN, RAI, occupancy
    activity.py events per hour of the day, night share
    unsure.py   undefined and low-score events
    figures.py  matplotlib drawings
    page.py     the tables, the HTML page, writing both
"""
from .health import Rules
from .page import build, render, tables, write_report

__all__ = ["Rules", "build", "render", "tables", "write_report"]
