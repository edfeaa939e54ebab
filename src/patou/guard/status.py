"""`patou guard --status`: what the guard's log says (readable while the guard runs: WAL)."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

from .journal import Journal


def _when(t: float | None) -> str:
    return datetime.fromtimestamp(t).isoformat(sep=" ", timespec="seconds") if t else "-"


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def status(db: str | Path, last: int = 10) -> str:
    if not Path(db).is_file():
        raise ValueError(f"{db}: no guard log here (give the --db the guard writes)")
    j = Journal(db)
    try:
        q = j.query
        (n_files, n_failed, first, latest), = q("SELECT COUNT(*), SUM(status='failed'), MIN(processed), MAX(processed) FROM files")
        (n_events,), = q("SELECT COUNT(*) FROM events")
        outcomes = dict(q("SELECT outcome, COUNT(*) FROM triggers GROUP BY outcome"))
        (n_att, n_ok), = q("SELECT COUNT(*), SUM(ok=1) FROM attempts")
        lines = [f"guard log {db}",
                 f"{n_files} images processed ({n_failed or 0} unreadable) from {_when(first)} to {_when(latest)}; "
                 f"{n_events} events; triggers: " + (", ".join(f"{v} {k}" for k, v in sorted(outcomes.items())) or "none")
                 + f"; action attempts: {n_ok or 0} ok of {n_att}"]
        lat = [x for (x,) in q("SELECT latency_s FROM attempts WHERE latency_s IS NOT NULL")]
        if lat:
            lines.append(f"latency from file written to action start: p50 {_pct(lat, .5):.2f} s, "
                         f"p95 {_pct(lat, .95):.2f} s, max {max(lat):.2f} s over {len(lat)} attempts")
        lines.append(f"\nlast {last} events:")
        for eid, site, first_t, last_t, n, mx, fires in q(
                "SELECT id, site, first, last, n, max_target, fires FROM events ORDER BY id DESC LIMIT ?", (last,)):
            lines.append(f"  event {eid} site {site}: {n} image(s) {first_t} .. {last_t}, max score {mx:.2f}, fired {fires}x")
        lines.append(f"\nlast {last} triggers:")
        for tid, at, site, path, score, reason, outcome in q(
                "SELECT id, at, site, path, target_score, reason, outcome FROM triggers ORDER BY id DESC LIMIT ?", (last,)):
            lines.append(f"  #{tid} {_when(at)} {outcome} site {site} {Path(path).name} score {score:.2f} ({reason})")
            for action, ok, lat_s, dur, detail in q(
                    "SELECT action, ok, latency_s, duration_s, detail FROM attempts WHERE trigger_id=? ORDER BY id", (tid,)):
                state = "running" if ok is None else "ok" if ok else "FAILED"
                lat_txt = f"{lat_s:.2f}" if lat_s is not None else "-"
                dur_txt = f", took {dur:.2f} s" if dur is not None else ""
                lines.append(f"      {state}: {action} (started {lat_txt} s after the file{dur_txt}) {detail or ''}")
        lines.append(f"\nlast {last} failures:")
        rows = q("SELECT at, path, stage, message FROM failures ORDER BY id DESC LIMIT ?", (last,))
        lines += [f"  {_when(at)} {stage}: {path}: {msg}" for at, path, stage, msg in rows] or ["  none"]
        return "\n".join(lines)
    finally:
        j.close()
