"""The review app's routes. Pages are rendered on the server; static/review.js adds keyboard
review and posts corrections to the JSON API."""
from __future__ import annotations

import getpass
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit

from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel
from starlette.middleware.trustedhost import TrustedHostMiddleware

from patou.corrections import check_count, write_train_labels
from patou.options import DETECTION_THRESHOLD, RunOptions, Thresholds
from patou.record import Detection, ImageRecord
from patou.results import Run, RunFolder
from patou.sort import plan_sort, sort_files

from . import review
from . import reid as reid_routes
from . import report as report_routes
from .access import MAX_BODY, Folders, TokenAndBodyGuard, new_token
from .files import Refused, safe_file, thumbnail
from .runs import Registry

HERE = Path(__file__).parent
PAGE_SIZE = 120
EVENTS_SHOWN = 300  # rows of the run page's events table
SIDES = {"thumb": 400, "preview": 1280}
# Results-folder files offered as downloads on the run page.
DOWNLOADS = list(RunFolder.DOWNLOADS)
RUN = RunOptions()  # the run form's defaults


class Change(BaseModel):
    root: str
    file: str
    label: str | None = None  # None withdraws the correction
    count: int | str | None = None  # the animals a person counted in the photo (with the label)


class Corrections(BaseModel):
    items: list[Change] = []
    event: str | None = None  # with `label`: every image of this event
    label: str | None = None
    verified_by: str = ""


def create_app(results_dirs: list[str | Path] = (), runs_dir: str | Path = "patou-runs",
               allowed_hosts: list[str] | None = None, token: str | None = None,
               allow_dirs: list[str | Path] | None = None, max_body: int = MAX_BODY) -> FastAPI:
    """`token`: what every request must carry (app.state.token; made here when None). `allow_dirs`:
    where runs and sorts from the page may read and write (default: results_dirs, runs_dir, cwd)."""
    reg = Registry([Path(p) for p in results_dirs], Path(runs_dir))
    folders = Folders(allow_dirs if allow_dirs is not None else [*results_dirs, runs_dir, Path.cwd()])

    @asynccontextmanager
    async def lifespan(app):
        yield
        reg.close()
        review.wait_for_tables(timeout=60)  # let the spreadsheets catch up before exit

    app = FastAPI(title="patou", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.registry = reg
    app.state.token = token or new_token()
    app.state.folders = folders
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.globals["quote"] = lambda s: quote(str(s), safe="/")
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    user = _user()

    # A page on another site must not drive this one: only local Host names (DNS rebinding)...
    app.add_middleware(TrustedHostMiddleware,
                       allowed_hosts=allowed_hosts or ["127.0.0.1", "localhost", "[::1]", "::1"])
    # ...and no other local process or user without the start-up token (access.py)
    app.add_middleware(TokenAndBodyGuard, token=app.state.token, max_body=max_body)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        raw = request.scope.get("raw_path", b"").lower()
        path = request.scope.get("path", "")
        # ...and no encoded separators or dots, backslashes or dot segments anywhere in a URL.
        if any(s in raw for s in (b"%2f", b"%5c", b"%2e", b"%00")) or "\\" in path or "\x00" in path \
                or any(p in (".", "..") for p in path.split("/")):
            return JSONResponse({"detail": "refused: path not allowed"}, status_code=400)
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("origin")
            if origin and urlsplit(origin).netloc != request.headers.get("host"):
                return JSONResponse({"detail": "refused: request from another site"}, status_code=403)
        return await call_next(request)

    def load(rid: str) -> Run:
        try:
            return reg.load(rid)
        except KeyError:
            raise HTTPException(404, f"no run {rid!r}") from None
        except (ValueError, OSError) as e:
            raise HTTPException(409, str(e)) from None

    def render(request: Request, name: str, status: int = 200, **ctx):
        return templates.TemplateResponse(request, name, ctx, status_code=status)

    # ------------------------------------------------------------------ pages
    @app.get("/", response_class=HTMLResponse)
    def index(request: Request, error: str = ""):
        runs = [reg.summary(p) for p in reg.folders()]
        jobs = [j.as_json() for j in reversed(list(reg.jobs.values()))]
        return render(request, "index.html", runs=runs, jobs=jobs, error=error, runs_dir=str(reg.runs_dir),
                      defaults=RUN, detection_threshold=DETECTION_THRESHOLD)

    @app.get("/runs/{rid}", response_class=HTMLResponse)
    def run_page(request: Request, rid: str, label: str = "", event: str = "", site: str = "",
                 conf_min: str = "", conf_max: str = "", conf_kind: str = "score", failures: bool = False,
                 verified: str = "", page: int = 1):
        try:
            run = reg.load(rid)
        except KeyError:
            raise HTTPException(404, f"no run {rid!r}") from None
        except (ValueError, OSError) as e:  # e.g. a folder from an older patou: say so on the page
            return render(request, "error.html", 409, title="This results folder cannot be opened", message=str(e))
        its = review.items(run)
        filters = dict(label=label, event=event, site=site, conf_min=_num(conf_min), conf_max=_num(conf_max),
                       conf_kind=conf_kind, failures=failures, verified=verified)
        shown = review.filter_items(its, **filters)
        pages = max(1, -(-len(shown) // PAGE_SIZE))
        page = min(max(page, 1), pages)
        query = {k: v for k, v in request.query_params.items() if k != "page"}
        roots = _roots(run)
        return render(request, "run.html", rid=rid, run=run, counts=review.counts(its),
                      events=review.events(run, its), events_shown=EVENTS_SHOWN, cards=[_card(run, rid, it, roots) for it in
                                                             shown[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]],
                      n_shown=len(shown), n_total=len(its), page=page, pages=pages, query=query,
                      f=dict(filters, conf_min=conf_min, conf_max=conf_max),
                      sites=sorted({r.site for r in run.records}), labels=review.labels_of(run, its),
                      all_labels=sorted({it.label for it in its if it.label}),
                      downloads=[n for n in DOWNLOADS if (run.out / n).is_file()], user=user)

    @app.get("/runs/{rid}/events/{event_id}", response_class=HTMLResponse)
    def event_page(request: Request, rid: str, event_id: str):
        run = load(rid)
        its = review.items(run)
        seq = review.event_items(its, event_id)
        if not seq:
            raise HTTPException(404, f"no event {event_id!r} in this run")
        ids = [e["event_id"] for e in review.events(run, its)]
        i = ids.index(event_id)
        first, roots = seq[0].record, _roots(run)
        return render(request, "event.html", rid=rid, run=run, event_id=event_id, first=first,
                      cards=[_card(run, rid, it, roots) for it in seq], labels=review.labels_of(run, its), user=user,
                      prev_id=ids[i - 1] if i > 0 else None, next_id=ids[i + 1] if i + 1 < len(ids) else None)

    # ------------------------------------------------------------------ files
    @app.get("/runs/{rid}/image/{root_no}/{rel:path}")
    def image(rid: str, root_no: int, rel: str, size: str = "thumb"):
        """An image of the run's input root number `root_no`: a cached thumbnail/preview, or the
        original with size=full."""
        run = load(rid)
        roots = _roots(run)
        if not 0 <= root_no < len(roots):
            raise HTTPException(404, "no such input folder")
        path = _safe(roots[root_no], rel)
        if size == "full":
            return FileResponse(path)
        if size not in SIDES:
            raise HTTPException(400, f"size must be one of {', '.join(SIDES)} or full")
        try:
            thumb = thumbnail(run.out, path, SIDES[size])
        except OSError as e:
            raise HTTPException(500, f"cannot make a thumbnail: {e}") from None
        if thumb is None:
            raise HTTPException(422, f"{rel}: cannot be decoded")
        return FileResponse(thumb, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/runs/{rid}/files/{name:path}")
    def results_file(rid: str, name: str):
        """A file of the results folder (spreadsheets, JSON, exports)."""
        out = reg_folder(rid)
        path = _safe(out, name)
        return FileResponse(path, filename=path.name)

    def reg_folder(rid: str) -> Path:
        try:
            return reg.folder(rid)
        except KeyError:
            raise HTTPException(404, f"no run {rid!r}") from None

    # ------------------------------------------------------------------ JSON API
    @app.get("/api/runs")
    def api_runs():
        return [reg.summary(p) for p in reg.folders()]

    @app.get("/api/runs/{rid}")
    def api_run(rid: str):
        run = load(rid)
        its = review.items(run)
        return dict(id=rid, out=str(run.out), options=run.options, counts=review.counts(its),
                    events=review.events(run, its), labels=review.labels_of(run, its))

    @app.get("/api/runs/{rid}/images")
    def api_images(rid: str, label: str = "", event: str = "", site: str = "", conf_min: str = "",
                   conf_max: str = "", conf_kind: str = "score", failures: bool = False, verified: str = ""):
        run = load(rid)
        shown = review.filter_items(review.items(run), label, event, site, _num(conf_min), _num(conf_max),
                                    conf_kind, failures, verified)
        roots = _roots(run)
        return [_card(run, rid, it, roots) for it in shown]

    @app.post("/api/runs/{rid}/corrections")
    def api_correct(rid: str, body: Corrections):
        run = load(rid)
        its = review.items(run)
        known = {it.key: it for it in its}
        changes = []
        try:
            if body.event is not None:
                if body.items or not body.label:
                    raise ValueError("an event correction gives `event` and `label`, no `items`")
                seq = review.event_items(its, body.event)
                if not seq:
                    raise HTTPException(404, f"no event {body.event!r} in this run")
                label = review.clean_label(body.label)
                changes = [(*it.key, label) for it in seq if not it.record.failure]
            for c in body.items:
                key = (str(Path(c.root)), c.file)
                if key not in known:
                    raise HTTPException(404, f"{c.file}: not an image of this run")
                changes.append((*key, review.clean_label(c.label) if c.label is not None else None,
                                check_count(c.count)))
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        if not changes:
            raise HTTPException(422, "nothing to correct")
        try:
            corrections = review.save(run, changes, body.verified_by.strip()[:80] or user)
        except OSError as e:  # e.g. a read-only results folder: say so, change nothing
            raise HTTPException(409, f"cannot save corrections in {run.out}: {e.strerror or e}") from None
        roots = _roots(run)
        return dict(saved=len(changes), images=[_card(run, rid, review.Item(known[k].index, known[k].record,
                                                                            corrections.get(k), k), roots)
                                                for k in dict.fromkeys((r, f) for r, f, *_ in changes)])

    @app.get("/api/jobs")
    def api_jobs():
        return [j.as_json() for j in reg.jobs.values()]

    @app.get("/api/jobs/{job_id}")
    def api_job(job_id: str):
        job = reg.jobs.get(job_id)
        if not job:
            raise HTTPException(404, f"no job {job_id!r}")
        return job.as_json()

    # ------------------------------------------------------------------ actions (forms)
    @app.post("/runs/start")
    def start(folder: str = Form(...), out: str = Form(""), detection_threshold: float = Form(DETECTION_THRESHOLD),
              threshold: str = Form(str(RUN.threshold)), target: str = Form(""), event_gap: float = Form(RUN.event_gap),
              site_depth: str = Form(""), model: str = Form(""), threads: str = Form(""),
              fast: bool = Form(False), no_flip: bool = Form(False), resume: bool = Form(False)):
        """The options of `patou run` (sorting is done afterwards, from the run page)."""
        inputs = [p.strip() for p in folder.splitlines() if p.strip()]
        try:
            for p in inputs:
                folders.check(p, "folder")
            if out.strip():
                folders.check(out.strip(), "results folder")
            if model.strip():
                folders.check(model.strip(), "model folder")
            threshold = Thresholds.of_value(threshold.strip() or RUN.threshold).value()  # per class too
            options = dict(detection_threshold=detection_threshold, threshold=threshold, target=target.strip() or None,
                           event_gap=event_gap, site_depth=_int(site_depth), model=model.strip() or None,
                           threads=_int(threads), fast=fast, flip=not no_flip, resume=resume)
            job = reg.start(inputs, Path(out.strip()) if out.strip() else None, options)
        except ValueError as e:
            return RedirectResponse(f"/?error={quote(str(e))}", status_code=303)
        return RedirectResponse(f"/?job={job.id}", status_code=303)

    @app.post("/runs/{rid}/export/tables")
    def export_tables(rid: str):
        run = load(rid)
        review.rewrite_tables(run)
        return dict(files=[f"/runs/{rid}/files/{RunFolder.PREDICTIONS_CSV}", f"/runs/{rid}/files/{RunFolder.PREDICTIONS_XLSX}"])

    @app.post("/runs/{rid}/export/train-labels")
    def export_train_labels(rid: str):
        run = load(rid)
        path, n = write_train_labels(run.out, run.records)
        return dict(rows=n, path=str(path), file=f"/runs/{rid}/files/{quote(path.name)}")

    @app.post("/runs/{rid}/export/sort")
    def export_sort(rid: str, sort_dir: str = Form(...), mode: str = Form("copy"), dry_run: bool = Form(False)):
        """The CLI's plan_sort/sort_files with the reviewed labels. No `move` here: moving the
        photos would take them away from this run's review pages."""
        run = load(rid)
        if mode not in ("copy", "link"):
            raise HTTPException(422, "from the page, sort by copy or link (move with `patou run --sort move`)")
        if not sort_dir.strip():
            raise HTTPException(422, "name the folder to sort into")
        try:
            folders.check(sort_dir.strip(), "sort folder")
        except ValueError as e:
            raise HTTPException(403, f"refused: {e}") from None
        messages: list[str] = []
        plan = plan_sort(review.corrected_records(review.items(run)), Path(sort_dir.strip()).expanduser(),
                         roots=run.input_roots)
        report = sort_files(plan, mode, dry_run=dry_run, log=messages.append)
        return dict(summary=report.summary(), planned=report.planned, done=report.done, skipped=report.skipped,
                    clashes=report.clashes, errors=report.errors, messages=messages[:200])

    reid_routes.add_routes(app, load, templates, _roots, user)  # re-identification pages
    report_routes.add_routes(app, load)  # the season report (patou report)
    return app


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (some containers)
        return ""


def _roots(run: Run) -> list[Path]:
    return sorted({r.root for r in run.records}, key=str)


def _safe(base: Path, rel: str) -> Path:
    try:
        return safe_file(base, rel)
    except Refused as e:
        raise HTTPException(403, f"refused: {e}") from None
    except (FileNotFoundError, NotADirectoryError):
        raise HTTPException(404, f"{rel}: no such file") from None


def _num(text: str) -> float | None:
    try:
        return float(text) if str(text).strip() else None
    except ValueError:
        return None


def _int(text: str) -> int | None:
    text = str(text).strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None


def _card(run: Run, rid: str, it: review.Item, roots: list[Path]) -> dict:
    """What a thumbnail card needs: URLs, verdicts, boxes (normalised [x, y, w, h])."""
    r: ImageRecord = it.record
    root_no = roots.index(r.root)
    det_t = run.options.get("detection_threshold", DETECTION_THRESHOLD)
    url = f"/runs/{rid}/image/{root_no}/{quote(r.rel, safe='/')}"
    return dict(
        index=it.index, root=str(r.root), file=r.rel, site=r.site, event_id=r.event_id,
        timestamp=r.timestamp.isoformat(sep=" ") if r.timestamp else "", failure=r.failure,
        label=it.label, machine_label=r.label, score=r.score, event_label=r.event_label, event_score=r.event_score,
        count=it.count, event_count=r.event_count,
        target=run.options.get("target"), target_score=r.target_score, verified=it.verified,
        boxes=[_box(d) for d in r.detections if d.conf >= det_t],
        thumb=f"{url}?size=thumb", preview=f"{url}?size=preview", full=f"{url}?size=full",
        event_url=f"/runs/{rid}/events/{quote(r.event_id, safe='')}" if r.event_id else None,
    )


def _box(d: Detection) -> dict:
    top = d.top()
    # scores unrounded: the page rounds once, so a box and its card never read 0.93 and 0.92
    return dict(bbox=[round(float(v), 4) for v in d.bbox], conf=float(d.conf),
                label=top[0] if top else d.category, score=float(top[1]) if top else None)
