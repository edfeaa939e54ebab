"""Review-app pages for re-identification (a run given `--reid-gallery`): an image's top
candidates side by side, and a form to confirm one. Its own routes and template only, added to
the app by `add_routes` (one line in create_app)."""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

from fastapi import Form, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

from patou.reid import runs as reid_runs

from .files import thumbnail


def _gallery_root(run) -> Path | None:
    try:
        return Path(json.loads((run.out / reid_runs.INFO).read_text(encoding="utf-8"))["gallery"])
    except (OSError, ValueError, KeyError):
        return None


def add_routes(app, load, templates, roots, user: str) -> None:
    """`load(rid)` -> Run (HTTPException when absent), `roots(run)` -> the run's input roots."""

    def gallery_url(rid: str, gallery: Path | None, file: str) -> str | None:
        try:
            rel = Path(file).relative_to(gallery).as_posix() if gallery else None
        except ValueError:
            return None
        return f"/runs/{rid}/reid-gallery/{quote(rel, safe='/')}" if rel else None

    def links(rid: str, cards: list[dict]) -> list[dict]:
        """For a page's cards: the images that have candidates, with their top one."""
        run = load(rid)
        cands = reid_runs.load_candidates(run.out)
        done = reid_runs.load_confirmations(run.out)
        out = []
        for c in cards:
            k = (c["root"], c["file"])
            if k in cands:
                root_no = roots(run).index(Path(c["root"]))
                out.append({"file": c["file"], "top": cands[k][0], "confirmed": done.get(k),
                            "url": f"/runs/{rid}/reid/{root_no}/{quote(c['file'], safe='/')}"})
        return out

    templates.env.globals["reid_links"] = links

    @app.get("/runs/{rid}/reid/{root_no}/{rel:path}", response_class=HTMLResponse)
    def reid_page(request: Request, rid: str, root_no: int, rel: str):
        run = load(rid)
        rs = roots(run)
        if not 0 <= root_no < len(rs):
            raise HTTPException(404, "no such input folder")
        key = (str(rs[root_no]), rel)
        cands = reid_runs.load_candidates(run.out).get(key)
        if not cands:
            raise HTTPException(404, f"{rel}: no re-identification candidates in this run")
        gallery = _gallery_root(run)
        for c in cands:
            c["thumb"] = gallery_url(rid, gallery, c["gallery_file"])
        info = json.loads((run.out / reid_runs.INFO).read_text(encoding="utf-8"))
        image = f"/runs/{rid}/image/{root_no}/{quote(rel, safe='/')}"
        return templates.TemplateResponse(request, "reid.html", dict(
            rid=rid, run=run, root=key[0], file=rel, image=image, candidates=cands, info=info, user=user,
            confirmed=reid_runs.load_confirmations(run.out).get(key)))

    @app.get("/runs/{rid}/reid-gallery/{rel:path}")
    def reid_gallery_image(rid: str, rel: str):
        run = load(rid)
        gallery = _gallery_root(run)
        if gallery is None:
            raise HTTPException(404, "this run has no re-identification gallery")
        # only the gallery photos this run's candidates name are served (a gallery may be links)
        allowed = {c["gallery_file"] for rows in reid_runs.load_candidates(run.out).values() for c in rows}
        path = gallery / rel
        if str(path) not in allowed or not path.is_file():
            raise HTTPException(404, f"{rel}: not a gallery photo of this run's candidates")
        thumb = thumbnail(run.out, path, 400)
        if thumb is None:
            raise HTTPException(422, f"{rel}: cannot be decoded")
        return FileResponse(thumb, media_type="image/jpeg")

    @app.post("/runs/{rid}/reid/confirm")
    def reid_confirm(rid: str, root: str = Form(...), file: str = Form(...), individual_id: str = Form(""),
                     verified_by: str = Form("")):
        """Confirm a candidate (or any known id typed in); an empty id withdraws the confirmation."""
        run = load(rid)
        rs = roots(run)
        cands = reid_runs.load_candidates(run.out).get((str(Path(root)), file))
        if not cands:
            raise HTTPException(404, f"{file}: no re-identification candidates in this run")
        ind = individual_id.strip()[:120] or None
        gallery_file = next((c["gallery_file"] for c in cands if c["individual_id"] == ind), "")
        try:
            reid_runs.confirm(run.out, root, file, ind, verified_by.strip()[:80] or user, gallery_file)
        except OSError as e:
            raise HTTPException(409, f"cannot save the confirmation in {run.out}: {e.strerror or e}") from None
        root_no = rs.index(Path(root))
        return RedirectResponse(f"/runs/{rid}/reid/{root_no}/{quote(file, safe='/')}", status_code=303)

    @app.post("/runs/{rid}/export/reid-confirmed")
    def reid_export(rid: str):
        run = load(rid)
        path, n = reid_runs.export_confirmed(run.out)
        return dict(rows=n, path=str(path), file=f"/runs/{rid}/files/{quote(path.name)}")
