"""The report's figures, drawn with matplotlib's object API (no pyplot: no GUI backend, safe in
the review app's threads) and returned as SVG data URIs, so the page needs no other file, prints
sharp and works offline. Each returns None when there is nothing to draw."""
from __future__ import annotations

import base64
import io
import math
from datetime import timedelta

from .activity import MIN_EVENTS, Activity
from .health import Health
from .species import Tally
from .unsure import Unsure

STYLE = {"svg.hashsalt": "patou-report", "svg.fonttype": "path", "font.size": 9, "axes.titlesize": 9,
         "axes.spines.top": False, "axes.spines.right": False}
COLOURS = {"photos": "#2b6f4e", "effort": "#e4e8e4", "gap": "#d62728", "silent-end": "#ff7f0e",
           "burst": "#9467bd", "outside-deployment": "#1f77b4", "night": "#eef0f6", "undefined": "#8c8c8c",
           "low": "#e0a030"}
MAX_ACTIVITY_PLOTS = 16


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})  # no date: the same page twice is the same file
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def short(site: str, width: int = 34) -> str:
    """A site name that fits a figure's margin: its last folders."""
    if len(site) <= width:
        return site
    parts, out = site.split("/"), ""
    for p in reversed(parts):
        if len(out) + len(p) + 2 > width - 2:
            break
        out = f"{p}/{out}" if out else p
    return "…/" + (out or site[-(width - 2):])


def draw(fn, *args):
    """fn's figure as a data URI, inside the report's style."""
    import matplotlib

    with matplotlib.rc_context(STYLE):
        fig = fn(*args)
        return None if fig is None else _uri(fig)


def timeline(health: Health):
    """One row per site: its camera-days (grey), photos per day (bars, log height), flagged spans."""
    import matplotlib.dates as mdates
    from matplotlib.patches import Patch

    sites = list(reversed(health.sites))
    if not any(s.per_day or s.camera_days for s in sites):
        return None
    fig = _figure(10, 0.9 + 0.42 * len(sites))
    ax = fig.add_subplot()
    biggest = max((n for s in sites for n in s.per_day.values()), default=1)
    one = timedelta(days=1)
    starts = [s.effort_start for s in sites if s.effort_start] + [min(s.per_day) for s in sites if s.per_day]
    ends = [s.effort_end for s in sites if s.effort_end] + [max(s.per_day) for s in sites if s.per_day]
    bar = max(1.0, (max(ends) - min(starts)).days / 500)  # a day stays visible over years
    for y, s in enumerate(sites):
        if s.camera_days:
            ax.broken_barh([(mdates.date2num(s.effort_start), s.camera_days)], (y - 0.42, 0.84),
                           color=COLOURS["effort"], zorder=0)
        for f in s.findings:
            if f.rule in ("gap", "silent-end", "outside-deployment") and f.start and f.end:
                ax.broken_barh([(mdates.date2num(f.start), (f.end - f.start).days + 1)], (y - 0.42, 0.84),
                               color=COLOURS[f.rule], alpha=0.35, zorder=1)
        days = sorted(s.per_day)
        if days:
            heights = [0.12 + 0.7 * math.log1p(s.per_day[d]) / math.log1p(biggest) for d in days]
            bursts = {d for f in s.findings if f.rule == "burst" for d in days if f.start <= d <= f.end
                      and s.per_day[d] >= health.rules.burst_photos}
            ax.bar([mdates.date2num(d) for d in days], heights, width=bar, bottom=y - 0.42, align="edge",
                   color=[COLOURS["burst"] if d in bursts else COLOURS["photos"] for d in days], zorder=2)
        if not s.clock_ok:
            bad = sum(f.photos for f in s.findings if f.rule in ("clock-early", "clock-future"))
            ax.annotate(f"clock wrong: {bad} photo(s) with impossible dates not drawn" if bad else "clock went back",
                        (1.0, y), xycoords=("axes fraction", "data"), ha="right", va="center", fontsize=7,
                        color=COLOURS["gap"])
    ax.set_yticks(range(len(sites)), [short(s.site.id) for s in sites])
    ax.set_ylim(-0.6, len(sites) - 0.4)
    locator = mdates.AutoDateLocator(maxticks=12)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlim(mdates.date2num(min(starts) - one), mdates.date2num(max(ends) + 2 * one))
    ax.set_title("Photos per day by site (bar height: log of the count); grey: camera-days")
    fig.legend(handles=[Patch(color=COLOURS[k], alpha=a, label=t) for k, a, t in (
        ("photos", 1, "photos"), ("burst", 1, "burst day"), ("gap", 0.35, "gap"), ("silent-end", 0.35, "silent at end"),
        ("outside-deployment", 0.35, "outside deployment"))], loc="outside lower center", ncol=5, frameon=False,
        fontsize=8)
    return fig


def species_bars(overall: list[Tally], n_sites: int):
    """Events per species, and the share of sites where each was seen."""
    if not overall:
        return None
    rows = list(reversed(overall))
    fig = _figure(10, 0.8 + 0.28 * len(rows))
    ax1, ax2 = fig.subplots(1, 2, sharey=True)
    y = range(len(rows))
    ax1.barh(y, [t.events for t in rows], color=COLOURS["photos"])
    for i, t in enumerate(rows):
        ax1.annotate(str(t.events), (t.events, i), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
    ax1.set_yticks(list(y), [t.species for t in rows])
    ax1.set_title("Events per species")
    ax2.barh(y, [len(t.sites) / n_sites for t in rows], color="#4a7fb0")
    ax2.set_xlim(0, 1)
    ax2.set_title(f"Naive occupancy (share of {n_sites} sites)")
    return fig


def rai_heatmap(by_site: list[Tally], species: list[str], sites: list[str]):
    """Events per 100 camera-days, species by site (blank: not seen, or no camera-days)."""
    import numpy as np

    if not by_site:
        return None
    cols = [s for s in sites if any(c.site == s for c in by_site)]
    grid = np.full((len(species), len(cols)), np.nan)
    for c in by_site:
        if c.rai is not None:
            grid[species.index(c.species), cols.index(c.site)] = c.rai
    fig = _figure(min(2.5 + 0.55 * len(cols), 14), 1.6 + 0.3 * len(species))
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(grid), cmap="YlGn", aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.0f}" if v >= 10 else f"{v:.1f}" if v >= 1 else f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if v > np.nanmax(grid) * 0.6 else "black")
    ax.set_yticks(range(len(species)), species)
    ax.set_xticks(range(len(cols)), [short(s, 24) for s in cols], rotation=40, ha="right")
    ax.set_title("Events per 100 camera-days (RAI)")
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def activity_grid(rows: list[Activity], night: tuple[int, int]):
    """Events per hour of the camera clock, one panel per species with enough events."""
    shown = [a for a in rows if a.events >= MIN_EVENTS][:MAX_ACTIVITY_PLOTS]
    if not shown:
        return None
    cols = min(4, len(shown))
    n_rows = -(-len(shown) // cols)
    fig = _figure(10, 0.4 + 1.9 * n_rows)
    axes = fig.subplots(n_rows, cols, squeeze=False)
    start, end = night
    for ax, a in zip(axes.flat, shown):
        ax.axvspan(-0.5, end - 0.5, color=COLOURS["night"], zorder=0)
        ax.axvspan(start - 0.5, 23.5, color=COLOURS["night"], zorder=0)
        ax.bar(range(24), a.hours, width=0.85, color=COLOURS["photos"], zorder=1)
        ax.set_xlim(-0.5, 23.5)
        ax.set_xticks([0, 6, 12, 18, 23])
        ax.set_title(f"{a.species}\n{a.events} events, {a.night_share:.0%} at night")
    for ax in list(axes.flat)[len(shown):]:
        ax.set_visible(False)
    fig.suptitle(f"Events per hour of the day (shaded: night, {start:02d}:00-{end:02d}:00)", fontsize=9)
    return fig


def unsure_bars(rows: list[Unsure]):
    if not rows:
        return None
    rows = list(reversed(rows))
    fig = _figure(10, 0.8 + 0.28 * len(rows))
    ax = fig.add_subplot()
    y = range(len(rows))
    ax.barh(y, [u.undefined for u in rows], color=COLOURS["undefined"], label="undefined (model's best guess)")
    ax.barh(y, [u.low_score for u in rows], left=[u.undefined for u in rows], color=COLOURS["low"],
            label="labelled, low score")
    ax.set_yticks(list(y), [u.species for u in rows])
    ax.set_title("Events to check first, not yet reviewed")
    fig.legend(frameon=False, fontsize=8, loc="outside lower center", ncol=2)
    return fig
