"""The report itself: everything computed once (`build`), the tables as CSV (`tables`), and one
self-contained HTML page (`render`) showing those same tables and the figures drawn from them;
`write_report` puts the page and a folder of CSV beside it."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

from .. import __version__
from ..atomic import atomic_output
from ..record import EMPTY
from ..results import Run, RunFolder
from . import figures
from .activity import MIN_EVENTS, Activity, activity
from .health import Health, Rules, check
from .season import Season, load_season
from .species import Tally, occupancy, tabulate
from .unsure import Unsure, low_bar, unsure

GENERATOR = "patou report"  # in the page's <meta name="generator">: what may be overwritten
TEMPLATES = Path(__file__).with_name("templates")
CSV_MARK = ".patou-report"  # in the CSV folder: what may be rewritten


@dataclass
class Report:
    season: Season
    health: Health
    species: list[Tally]
    by_site: list[Tally]
    activity: list[Activity]
    unsure: list[Unsure]
    generated: str

    @property
    def n_sites(self) -> int:
        return len(self.season.sites)


def build(results_dir: str | Path | Run, deployments: str | Path | None = None, rules: Rules = Rules()) -> Report:
    """Everything the page shows, from RESULTS_DIR (or a Run already loaded)."""
    season = load_season(results_dir, deployments)
    health = check(season, rules)
    overall, by_site = tabulate(season, health)
    return Report(season, health, overall, by_site, activity(season, health), unsure(season),
                  datetime.now().astimezone().isoformat(timespec="seconds"))


def _model(info: dict, kind: str) -> str:
    m = info.get("models", {}).get(kind) or {}
    return f"{m.get('name', '?')} v{m.get('version', '?')}" if m else "?"


def _r(x: float | None, nd: int = 2):
    return None if x is None else round(x, nd)


def headline(rep: Report) -> list[tuple[str, object, str]]:
    """(measure, value, how it is counted)."""
    s, h = rep.season, rep.health
    readable = len(s.photos)
    empty_photos = sum(p.label == EMPTY for p in s.photos)
    empty_events = len({o.event_id for o in s.observations}) - len({o.event_id for o in s.observations
                                                                    if o.label != EMPTY})
    effort = "deployments CSV" if s.deployments_csv else "first to last photo per site"
    gap = float(s.run.options.get("event_gap") or 20)
    return [
        ("photos", readable + s.failures, f"{readable} readable, {s.failures} unreadable"),
        ("events", s.events, f"shots of one site at most {gap:g} s apart"),
        ("sites", rep.n_sites, "site folders (deployments)"),
        ("camera-days", h.camera_days, f"calendar days per site, both ends counted: {effort}"),
        ("share of photos empty", _r(empty_photos / readable if readable else None, 3),
         f"{empty_photos} of {readable} readable photos"),
        ("share of events empty", _r(empty_events / s.events if s.events else None, 3),
         f"{empty_events} of {s.events} events"),
        ("share of photos reviewed", _r(s.human_photos / readable if readable else None, 3),
         f"{s.human_photos} photos ({s.human_events} events) carry a person's label"),
        ("detector", _model(s.run.info, "detector"), f"detection threshold {s.detection_threshold}"),
        ("classifier", _model(s.run.info, "classifier"), f"label threshold {s.threshold} (below: undefined)"),
        ("patou", s.run.info.get("patou_version", "?"), f"run finished {s.run.info.get('finished', '?')}"),
    ]


def tables(rep: Report) -> dict[str, tuple[list[str], list[list]]]:
    """Every table of the page, as the CSV files beside it hold them."""
    s, h = rep.season, rep.health
    site_rows = [[x.site.id, x.site.root, x.site.folder, len(x.site.photos), sum(p.time is not None for p in x.site.photos),
                  len(x.plausible), x.plausible[0].time.isoformat() if x.plausible else None,
                  x.plausible[-1].time.isoformat() if x.plausible else None, x.effort_start, x.effort_end,
                  x.camera_days, x.effort_from, ";".join(dict.fromkeys(f.rule for f in x.findings)),
                  ";".join(x.skipped)] for x in h.sites]
    activity_rows = [[a.species, a.events, a.night, _r(a.night_share, 3), a.events >= MIN_EVENTS, *a.hours]
                     for a in rep.activity]
    observation_rows, site_health = [], {x.site.id: x for x in h.sites}
    for o in s.observations:
        start, end = o.start, o.end
        observation_rows.append([o.event_id, o.site, start.isoformat() if start else None,
                                 end.isoformat() if end else None, o.label, "human" if o.human else "machine",
                                 o.max_n, _r(o.score, 4), o.guess, len(o.photos), site_health[o.site].in_effort(start)])
    return {
        "headline": (["measure", "value", "note"], [list(r) for r in headline(rep)]),
        "sites": (["site", "root", "folder", "photos", "timed_photos", "plausible_photos", "first_photo", "last_photo",
                   "effort_start", "effort_end", "camera_days", "effort_from", "findings", "not_judged"], site_rows),
        "health": (["site", "rule", "summary", "start", "end", "photos"],
                   [[f.site, f.rule, f.summary, f.start, f.end, f.photos] for f in h.findings]),
        "rules": (["rule", "flags"], [list(r) for r in h.rules.describe()]),
        "photos_per_day": (["site", "date", "photos"],
                           [[x.site.id, d, n] for x in h.sites for d, n in sorted(x.per_day.items())]),
        "species": (["species", "events", "max_n", "events_in_effort", "camera_days", "rai", "sites", "occupancy",
                     "site_list"],
                    [[t.species, t.events, t.max_n, t.events_in_effort, t.camera_days, _r(t.rai),
                      len(t.sites), _r(occupancy(t, rep.n_sites), 3), "; ".join(t.sites)] for t in rep.species]),
        "species_by_site": (["species", "site", "events", "max_n", "events_in_effort", "camera_days", "rai"],
                            [[c.species, c.site, c.events, c.max_n, c.events_in_effort, c.camera_days, _r(c.rai)]
                             for c in rep.by_site]),
        "activity": (["species", "events", "night_events", "night_share", "plotted"] + [f"h{i:02d}" for i in range(24)],
                     activity_rows),
        "unsure": (["species", "undefined_events", "low_score_events", "threshold", "low_score_below"],
                   [[u.species, u.undefined, u.low_score, s.threshold, low_bar(s.threshold)] for u in rep.unsure]),
        "observations": (["event_id", "site", "start", "end", "label", "label_source", "max_n", "event_score",
                          "undefined_guess", "photos", "in_effort"], observation_rows),
    }


def csv_text(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows([["" if v is None else v for v in row] for row in rows])
    return buf.getvalue()


def render(rep: Report, csv_href: Callable[[str], str], review: str | None = None, back: str | None = None) -> str:
    """The page. `csv_href(name)` links each table's CSV; `review` is the run's URL in the review
    app (patou serve) when the page is served there, else the page says how to open it."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    s, h = rep.season, rep.health
    species = [t.species for t in rep.species]
    figs = {
        "timeline": figures.draw(figures.timeline, h),
        "species": figures.draw(figures.species_bars, rep.species, rep.n_sites),
        "rai": figures.draw(figures.rai_heatmap, rep.by_site, species, [x.site.id for x in h.sites]),
        "activity": figures.draw(figures.activity_grid, rep.activity, h.rules.night),
        "unsure": figures.draw(figures.unsure_bars, rep.unsure),
    }
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    return env.get_template("report.html").render(
        rep=rep, s=s, h=h, t=tables(rep), figs=figs, csv_href=csv_href, generator=GENERATOR, version=__version__,
        review=review, low_bar=low_bar(s.threshold), min_events=MIN_EVENTS, back=back,
        folder=s.run.out.resolve(), flagged=sum(1 for x in h.sites if x.findings),
        human_labels=sorted({p.label for p in s.photos if p.human}))


@dataclass
class Written:
    html: Path
    csv_dir: Path
    report: Report


def write_report(results_dir: str | Path, out: str | Path | None = None, deployments: str | Path | None = None,
                 rules: Rules = Rules(), log: Callable[[str], None] = print) -> Written:
    """RESULTS_DIR's report: `out` (default RESULTS_DIR/report.html) and the CSV in `<out stem>-data/`.

    Only a page patou wrote is replaced (atomically); any other file at `out` is a ValueError."""
    results_dir = Path(results_dir)
    out = Path(out) if out else results_dir / RunFolder.REPORT
    if out.is_dir():
        raise ValueError(f"--out {out}: is a folder; name the HTML file to write, e.g. {out / 'report.html'}")
    if out.exists() and f'name="generator" content="{GENERATOR}' not in out.read_text("utf-8", "replace")[:4000]:
        raise ValueError(f"--out {out}: exists and is not a page patou report wrote; not overwritten")
    csv_dir = out.with_name(out.stem + "-data")
    if csv_dir.exists() and not (csv_dir / CSV_MARK).is_file() and (not csv_dir.is_dir() or any(csv_dir.iterdir())):
        raise ValueError(f"{csv_dir}: exists and is not a folder patou report made; its CSV go there: "
                         "give another --out")
    rep = build(results_dir, deployments, rules)
    for w in rep.season.warnings:
        log(f"warning: {w}")
    html = render(rep, lambda name: f"{csv_dir.name}/{name}.csv")
    csv_dir.mkdir(parents=True, exist_ok=True)
    (csv_dir / CSV_MARK).write_text(f"Tables of {out.name}, written by patou report; rewritten with it.\n")
    for name, (header, rows) in tables(rep).items():
        with atomic_output(csv_dir / f"{name}.csv") as tmp:
            tmp.write_text(csv_text(header, rows), encoding="utf-8")
    with atomic_output(out) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return Written(out, csv_dir, rep)
