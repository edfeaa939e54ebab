"""`patou serve`: every endpoint of the review app on a real run of a few real photos,
including the requests it must refuse."""
from __future__ import annotations

import asyncio
import csv
import json
import threading
import time
import warnings
from pathlib import Path

import pytest
with warnings.catch_warnings():  # starlette suggests httpx2 over httpx; both work
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient
from typer.testing import CliRunner

from patou.corrections import load_corrections
from patou.web import create_app, review
from patou.web.runs import run_id
from serve_data import make_photos, make_run




TOKEN = "test-token-" + "x" * 20


@pytest.fixture(scope="module")
def served(real, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    photos, out = make_run(real, tmp)
    old = tmp / "old-results"  # a results folder from a patou before records.jsonl
    old.mkdir()
    (old / "run.json").write_text(json.dumps({"patou_version": "0.0.9", "options": {}}))
    # the test folders are the ones runs and sorts from the page may use (--allow-dir)
    app = create_app([out, old], tmp / "runs", token=TOKEN, allow_dirs=[tmp_path_factory.getbasetemp()])
    client = TestClient(app, base_url="http://127.0.0.1")
    assert client.get(f"/?token={TOKEN}").status_code == 200  # the start-up URL: token -> cookie
    return dict(tmp=tmp, photos=photos, out=out, old=old, app=app, client=client, rid=run_id(out))


def csv_rows(path: Path) -> dict[str, dict]:
    """predictions.csv by file, once the background writer has caught up with corrections."""
    assert review.wait_for_tables(timeout=60)
    with open(path, newline="", encoding="utf-8") as f:
        return {r["file"]: r for r in csv.DictReader(f)}


def images(s, **filters) -> list[dict]:
    r = s["client"].get(f"/api/runs/{s['rid']}/images", params=filters)
    assert r.status_code == 200, r.text
    return r.json()


def raw_get(app, raw_path: bytes, host: bytes = b"127.0.0.1", cookie: bytes = b"patou_token=" + TOKEN.encode()) -> int:
    """Send a path exactly as written (a client would normalise `..`); uvicorn gives the app the
    %-decoded path plus the raw bytes, and so does this."""
    from urllib.parse import unquote_to_bytes

    path, _, query = raw_path.partition(b"?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": unquote_to_bytes(path).decode("utf-8", "replace"), "raw_path": path, "query_string": query,
             "root_path": "", "headers": [(b"host", host), (b"cookie", cookie)], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    sent, asked = [], []

    async def receive():
        if asked:  # the request was read: wait, as a connected client does, until cancelled
            await asyncio.sleep(3600)
        asked.append(1)
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return next(m["status"] for m in sent if m["type"] == "http.response.start")


# ---------------------------------------------------------------- pages and listing

def test_index_lists_runs_and_old_folder_message(served):
    c = served["client"]
    page = c.get("/")
    assert page.status_code == 200
    assert served["rid"] in page.text and "Start a new run" in page.text
    runs = {r["out"]: r for r in c.get("/api/runs").json()}
    assert runs[str(served["out"])]["images"] == 8 and runs[str(served["out"])]["error"] == ""
    # an older results folder is listed with the reason it cannot be opened, and its page says so
    assert "run `patou run` again" in runs[str(served["old"])]["error"]
    old = c.get(f"/runs/{run_id(served['old'])}")
    assert old.status_code == 409 and "results format" in old.text and "patou run" in old.text
    assert c.get(f"/api/runs/{run_id(served['old'])}").status_code == 409
    assert c.get("/runs/nope-00000000").status_code == 404
    assert c.get("/static/review.js").status_code == 200 and c.get("/static/style.css").status_code == 200


def test_run_page_counts_grid_and_boxes(served):
    c, rid = served["client"], served["rid"]
    page = c.get(f"/runs/{rid}")
    assert page.status_code == 200
    assert "Counts per label" in page.text and page.text.count('class="card') == 8
    assert 'class="box"' in page.text  # detection boxes drawn over thumbnails
    data = c.get(f"/api/runs/{rid}").json()
    counts = {row["label"]: row for row in data["counts"]}
    assert counts["bear"]["images"] == 2 and counts["bear"]["events"] == 2
    assert {e["event_id"] for e in data["events"]} >= {"E00001", "E00002"}
    assert "bear" in data["labels"] and "empty" in data["labels"]


def test_filters(served):
    bears = images(served, label="bear")
    assert sorted(i["file"] for i in bears) == ["siteA/8831.jpg", "siteA/9455.jpg"]
    assert all(b["boxes"] and len(b["boxes"][0]["bbox"]) == 4 for b in bears)
    assert {i["site"] for i in images(served, site="siteC")} == {"siteC"}
    burst = images(served, site="siteC")[0]["event_id"]
    assert len(images(served, event=burst)) == 2  # the heron burst is one event
    failed = images(served, failures="true")
    assert [i["file"] for i in failed] == ["siteB/african_elephants_truncated_file.jpg"] and failed[0]["failure"]
    high = images(served, conf_min="0.8", conf_kind="score")
    assert high and all(i["score"] >= 0.8 for i in high)
    assert "siteA/9455.jpg" not in {i["file"] for i in high}  # its bear score is under 0.8
    boxed = images(served, conf_min="0.5", conf_kind="detection")
    assert boxed and all(max(b["conf"] for b in i["boxes"]) >= 0.5 for i in boxed)
    assert not any(i["label"] == "empty" for i in boxed)
    assert len(images(served, label="bear", site="siteB")) == 0
    page = served["client"].get(f"/runs/{served['rid']}", params={"label": "bear"})
    assert page.text.count('class="card') == 2


def test_event_page(served):
    c, rid = served["client"], served["rid"]
    burst = images(served, site="siteC")[0]["event_id"]
    page = c.get(f"/runs/{rid}/events/{burst}")
    assert page.status_code == 200
    assert page.text.count('class="card') == 2 and "event score" in page.text
    # in sequence: the burst's frames in time order
    assert page.text.index("RCNX0031") < page.text.index("RCNX0032")
    assert c.get(f"/runs/{rid}/events/E99999").status_code == 404


# ---------------------------------------------------------------- images

def test_thumbnails_are_cached_and_originals_served(served):
    c, out = served["client"], served["out"]
    bear = images(served, label="bear")[0]
    r = c.get(bear["thumb"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content[:2] == b"\xff\xd8"
    cached = list((out / ".patou" / "thumbs").rglob("*.jpg"))
    assert cached
    stamp = {p: p.stat().st_mtime_ns for p in cached}
    assert c.get(bear["thumb"]).content == r.content
    assert {p: p.stat().st_mtime_ns for p in cached} == stamp  # made once, not again
    assert len(c.get(bear["preview"]).content) > len(r.content)
    full = c.get(bear["full"])
    assert full.status_code == 200 and full.content == (served["photos"] / bear["file"]).read_bytes()
    assert c.get(bear["thumb"].replace("size=thumb", "size=huge")).status_code == 400
    bad = images(served, failures="true")[0]
    assert c.get(bad["thumb"]).status_code == 422
    assert c.get(f"/runs/{served['rid']}/image/7/siteA/8831.jpg").status_code == 404
    assert c.get(f"/runs/{served['rid']}/image/0/siteA/nothing.jpg").status_code == 404


def test_results_files_download(served):
    c, rid = served["client"], served["rid"]
    r = c.get(f"/runs/{rid}/files/predictions.csv")
    assert r.status_code == 200 and r.text.startswith("file,root,site")
    assert c.get(f"/runs/{rid}/files/megadetector.json").json()["info"]["format_version"] == "1.6"
    assert c.get(f"/runs/{rid}/files/nothing.csv").status_code == 404


def test_traversal_is_refused(served, tmp_path):
    app, rid = served["app"], served["rid"]
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    # a symlink inside the photo folder and one inside the results folder, both pointing outside
    (served["photos"] / "siteA" / "link.jpg").symlink_to(secret)
    (served["out"] / "link.txt").symlink_to(secret)
    try:
        assert raw_get(app, f"/runs/{rid}/files/predictions.csv".encode()) == 200  # the control
        assert raw_get(app, f"/runs/{rid}/image/0/siteA/8831.jpg?size=full".encode()) == 200
        for base in (f"/runs/{rid}/files/", f"/runs/{rid}/image/0/"):
            for attack in ["../" * 8 + "etc/passwd", "siteA/../../results/run.json", "..%2f..%2fetc%2fpasswd",
                           "%2e%2e/%2e%2e/etc/passwd", "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", "siteA%2F8831.jpg",
                           "..%5c..%5cetc%5cpasswd", "..\\..\\etc\\passwd", "/etc/passwd", "%2fetc%2fpasswd",
                           "C:/Windows/win.ini", "siteA/8831.jpg%00.png", "./siteA/8831.jpg"]:
                status = raw_get(app, (base + attack).encode())
                assert 400 <= status < 500, (base + attack, status)
        assert raw_get(app, f"/runs/{rid}/image/0/siteA/link.jpg?size=full".encode()) == 403
        assert raw_get(app, f"/runs/{rid}/image/0/siteA/link.jpg".encode()) == 403
        assert raw_get(app, f"/runs/{rid}/files/link.txt".encode()) == 403
        assert raw_get(app, f"/runs/{rid}/files/{served['photos']}/siteA/8831.jpg".encode()) == 403
    finally:
        (served["photos"] / "siteA" / "link.jpg").unlink()
        (served["out"] / "link.txt").unlink()


def test_other_sites_cannot_drive_it(served):
    app, c, rid = served["app"], served["client"], served["rid"]
    assert raw_get(app, b"/", host=b"evil.example") == 400  # DNS rebinding: wrong Host
    r = c.post("/runs/" + rid + "/export/tables", headers={"Origin": "http://evil.example"})
    assert r.status_code == 403


# ---------------------------------------------------------------- corrections

def test_correct_image_updates_tables_not_megadetector(served):
    c, rid, out = served["client"], served["rid"], served["out"]
    md_before = (out / "megadetector.json").read_bytes()
    fox = next(i for i in images(served) if i["file"] == "siteB/4383.jpg")
    r = c.post(f"/api/runs/{rid}/corrections",
               json={"items": [{"root": fox["root"], "file": fox["file"], "label": "Grey Fox"}], "verified_by": "ana <b>"})
    assert r.status_code == 200, r.text
    img = r.json()["images"][0]
    assert img["label"] == "grey_fox" and img["machine_label"] == "fox" and img["verified"]["verified_by"] == "ana <b>"
    row = csv_rows(out / "predictions.csv")["siteB/4383.jpg"]
    assert row["verified_label"] == "grey_fox" and row["verified_by"] == "ana <b>" and row["label"] == "fox"
    from openpyxl import load_workbook

    assert review.wait_for_tables(timeout=60)
    ws = load_workbook(out / "predictions.xlsx", read_only=True)["images"]
    rows = list(ws.values)
    header = list(rows[0])
    fox_row = next(r for r in rows if r[0] == "siteB/4383.jpg")
    assert fox_row[header.index("verified_label")] == "grey_fox"
    assert (out / "megadetector.json").read_bytes() == md_before  # the machine's labels stay
    # shown as human-verified on the page, and counted
    page = c.get(f"/runs/{rid}", params={"label": "grey_fox"})
    assert "checked by ana &lt;b&gt;" in page.text and "machine said: fox" in page.text  # escaped
    assert images(served, verified="yes", label="grey_fox")
    # withdrawn: the CSV cell empties again
    assert c.post(f"/api/runs/{rid}/corrections",
                  json={"items": [{"root": fox["root"], "file": fox["file"], "label": None}]}).status_code == 200
    assert csv_rows(out / "predictions.csv")["siteB/4383.jpg"]["verified_label"] == ""


def test_a_count_is_corrected_with_the_label(served):
    """The number of animals is editable with the label: corrections.json, predictions.csv's
    verified_count and the card keep it; a bad count is refused and changes nothing."""
    c, rid, out = served["client"], served["rid"], served["out"]
    bear = next(i for i in images(served) if i["file"] == "siteA/9455.jpg")  # a sow and two cubs
    assert bear["count"] is not None and bear["event_count"] is not None  # the machine's count, shown
    before = (out / "corrections.json").read_bytes() if (out / "corrections.json").exists() else None
    for bad in (-1, "two", 1.5, 10**6):
        r = c.post(f"/api/runs/{rid}/corrections",
                   json={"items": [{"root": bear["root"], "file": bear["file"], "label": "bear", "count": bad}]})
        assert r.status_code == 422 and "count" in r.text, (bad, r.text)
    assert ((out / "corrections.json").read_bytes() if (out / "corrections.json").exists() else None) == before
    r = c.post(f"/api/runs/{rid}/corrections",
               json={"items": [{"root": bear["root"], "file": bear["file"], "label": "bear", "count": 3}]})
    assert r.status_code == 200, r.text
    assert r.json()["images"][0]["count"] == 3
    saved = json.loads((out / "corrections.json").read_text())["images"]
    assert saved[f"{bear['root']}|{bear['file']}"]["count"] == 3
    row = csv_rows(out / "predictions.csv")["siteA/9455.jpg"]
    assert (row["verified_label"], row["verified_count"]) == ("bear", "3") and row["count"] == str(bear["count"])
    assert "×3" in c.get(f"/runs/{rid}", params={"label": "bear"}).text
    # a label without a count: the person's count is gone, the machine's shows while the label is its own
    r = c.post(f"/api/runs/{rid}/corrections",
               json={"items": [{"root": bear["root"], "file": bear["file"], "label": "bear"}]})
    assert r.json()["images"][0]["count"] == (bear["count"] if bear["machine_label"] == "bear" else None)
    c.post(f"/api/runs/{rid}/corrections", json={"items": [{"root": bear["root"], "file": bear["file"], "label": None}]})


def test_correct_whole_event(served):
    c, rid, out = served["client"], served["rid"], served["out"]
    burst = images(served, site="siteC")
    r = c.post(f"/api/runs/{rid}/corrections", json={"event": burst[0]["event_id"], "label": "bird"})
    assert r.status_code == 200 and r.json()["saved"] == 2
    rows = csv_rows(out / "predictions.csv")
    assert all(rows[i["file"]]["verified_label"] == "bird" for i in burst)
    assert c.post(f"/api/runs/{rid}/corrections", json={"event": "E99999", "label": "bird"}).status_code == 404


def test_bad_corrections_are_refused(served):
    c, rid = served["client"], served["rid"]
    bear = images(served, label="bear")[0]
    before = (served["out"] / "predictions.csv").read_bytes()
    for body, status in [
        ({"items": [{"root": bear["root"], "file": "siteA/other.jpg", "label": "bear"}]}, 404),
        ({"items": [{"root": "/", "file": "etc/passwd", "label": "bear"}]}, 404),
        ({"items": [{"root": bear["root"], "file": bear["file"], "label": "undefined"}]}, 422),
        ({"items": [{"root": bear["root"], "file": bear["file"], "label": "!!"}]}, 422),
        ({"items": []}, 422),
        ({"event": bear["event_id"]}, 422),
    ]:
        assert c.post(f"/api/runs/{rid}/corrections", json=body).status_code == status, body
    assert (served["out"] / "predictions.csv").read_bytes() == before


def test_two_tabs_correcting_at_once(served):
    """Threads posting different corrections at the same time: all are kept, both files whole."""
    out, rid, app = served["out"], served["rid"], served["app"]
    ok = [i for i in images(served) if not i["failure"]]
    labels = ["wolf", "deer", "badger", "horse"]
    errors = []

    def tab(n: int) -> None:
        client = TestClient(app, base_url="http://127.0.0.1", cookies={"patou_token": TOKEN})
        for k, img in enumerate(ok):
            if k % 2 == n % 2:
                r = client.post(f"/api/runs/{rid}/corrections", json={
                    "items": [{"root": img["root"], "file": img["file"], "label": labels[n]}], "verified_by": f"tab{n}"})
                if r.status_code != 200:
                    errors.append(r.text)

    threads = [threading.Thread(target=tab, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    corrections = load_corrections(out)  # parses: the file was never torn
    assert all((img["root"], img["file"]) in corrections for img in ok)
    rows = csv_rows(out / "predictions.csv")
    for img in ok:  # the spreadsheet holds what corrections.json holds, whoever wrote last
        assert rows[img["file"]]["verified_label"] == corrections[(img["root"], img["file"])]["label"]
    assert not list(out.glob(".*.tmp"))
    # leave the run as the other tests expect it
    served["client"].post(f"/api/runs/{rid}/corrections",
                          json={"items": [{"root": i["root"], "file": i["file"], "label": None} for i in ok]})


# ---------------------------------------------------------------- exports

def test_export_tables_and_train_labels(served, tmp_path):
    c, rid, out = served["client"], served["rid"], served["out"]
    bear = next(i for i in images(served) if i["file"] == "siteA/9455.jpg")
    c.post(f"/api/runs/{rid}/corrections", json={"items": [{"root": bear["root"], "file": bear["file"], "label": "bear"}]})
    r = c.post(f"/runs/{rid}/export/tables")
    assert r.status_code == 200 and c.get(r.json()["files"][0]).status_code == 200
    assert csv_rows(out / "predictions.csv")["siteA/9455.jpg"]["verified_label"] == "bear"
    r = c.post(f"/runs/{rid}/export/train-labels")
    assert r.status_code == 200 and r.json()["rows"] == 1
    text = c.get(r.json()["file"]).text
    assert text.splitlines()[0] == "path,label,site,root,file"
    # the CSV is what `patou train --labels` reads
    from patou.train.labels import collect

    found, problems = collect(served["photos"], Path(r.json()["path"]))
    assert [(i.path.name, i.label, i.site) for i in found] == [("9455.jpg", "bear", "siteA")] and not problems
    c.post(f"/api/runs/{rid}/corrections", json={"items": [{"root": bear["root"], "file": bear["file"], "label": None}]})


def test_export_sort_uses_reviewed_labels(served, tmp_path):
    c, rid = served["client"], served["rid"]
    fox = next(i for i in images(served) if i["file"] == "siteB/4383.jpg")
    c.post(f"/api/runs/{rid}/corrections", json={"items": [{"root": fox["root"], "file": fox["file"], "label": "dog"}]})
    dest = tmp_path / "sorted"
    dry = c.post(f"/runs/{rid}/export/sort", data={"sort_dir": str(dest), "mode": "copy", "dry_run": "true"})
    assert dry.status_code == 200 and dry.json()["planned"] == 8 and not dest.exists()
    r = c.post(f"/runs/{rid}/export/sort", data={"sort_dir": str(dest), "mode": "copy"})
    assert r.status_code == 200 and r.json()["done"] == 8, r.json()
    assert (dest / "dog" / "siteB" / "4383.jpg").is_file()  # the person's label, not the machine's fox
    assert (dest / "bear" / "siteA" / "8831.jpg").is_file() and (dest / "failed").is_dir()
    assert (served["photos"] / "siteB" / "4383.jpg").is_file()  # copied, not moved
    assert c.post(f"/runs/{rid}/export/sort", data={"sort_dir": str(dest), "mode": "move"}).status_code == 422
    c.post(f"/api/runs/{rid}/corrections", json={"items": [{"root": fox["root"], "file": fox["file"], "label": None}]})


# ---------------------------------------------------------------- runs started from the page

@pytest.mark.slow
def test_start_run_from_page_and_rerun_keeps_corrections(real, served, tmp_path):
    c = served["client"]
    photos = make_photos(real, tmp_path / "p")
    bad = c.post("/runs/start", data={"folder": str(tmp_path / "missing")}, follow_redirects=False)
    assert bad.status_code == 303 and "no+such+folder" in bad.headers["location"].replace("%20", "+")
    r = c.post("/runs/start", data={"folder": str(photos / "siteA"), "target": "bear", "fast": "true"},
               follow_redirects=False)
    assert r.status_code == 303
    job_id = r.headers["location"].split("job=")[1]
    deadline = time.monotonic() + 120
    while (job := c.get(f"/api/jobs/{job_id}").json())["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    assert job["state"] == "done", job
    assert job["done"] == job["total"] == 2
    out = Path(job["out"])
    assert out.parent == served["tmp"] / "runs"  # page-started runs go to --runs-dir
    assert job["run_id"] in {r["id"] for r in c.get("/api/runs").json()}
    assert c.get("/api/jobs").json() and c.get("/api/jobs/job999").status_code == 404
    info = json.loads((out / "run.json").read_text())
    assert info["options"]["fast"] is True and info["options"]["target"] == "bear"
    # a correction survives `patou run` again on the same folder
    img = c.get(f"/api/runs/{job['run_id']}/images").json()[0]
    c.post(f"/api/runs/{job['run_id']}/corrections", json={"items": [{"root": img["root"], "file": img["file"], "label": "wolf"}]})
    import patou

    assert review.wait_for_tables(timeout=60)
    patou.run([photos / "siteA"], out, target="bear", fast=True, log=lambda m: None)
    assert csv_rows(out / "predictions.csv")[img["file"]]["verified_label"] == "wolf"


def test_cli_serve_binds_localhost_by_default(monkeypatch, tmp_path):
    import uvicorn

    from patou.cli import app

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    result = CliRunner().invoke(app, ["serve", str(tmp_path), "--port", "8123", "--runs-dir", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert calls == [{"host": "127.0.0.1", "port": 8123, "log_level": "warning"}]
    # issue 10 item 7: the URL printed at start-up carries a fresh random token
    url = next(w for w in result.output.split() if w.startswith("http://127.0.0.1:8123/?token="))
    again = CliRunner().invoke(app, ["serve", str(tmp_path), "--port", "8123", "--runs-dir", str(tmp_path / "r")])
    assert len(url.split("token=")[1]) >= 40 and url not in again.output


# ---------------------------------------------------------------- issue 10 item 7: who and what

def test_requests_without_the_token_are_refused(served):
    """Any local process could read ~/.ssh through the app: now nothing passes without the token."""
    app, rid = served["app"], served["rid"]
    anon = TestClient(app, base_url="http://127.0.0.1")
    for path in ["/", "/api/runs", f"/runs/{rid}", f"/runs/{rid}/image/0/siteA/8831.jpg?size=full",
                 f"/runs/{rid}/files/predictions.csv", "/static/review.js"]:
        assert anon.get(path).status_code == 401, path
        assert raw_get(app, path.encode(), cookie=b"patou_token=guess") == 403, path
    assert anon.post("/runs/start", data={"folder": str(served["photos"])}).status_code == 401
    assert anon.post(f"/runs/{rid}/export/sort", data={"sort_dir": str(served["tmp"] / "x")}).status_code == 401
    assert anon.get("/?token=guess").status_code == 403
    r = anon.get(f"/runs/{rid}?token={TOKEN}&label=bear", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/runs/{rid}?label=bear"  # token out of the URL
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert anon.get(r.headers["location"]).status_code == 200  # the cookie now opens every page
    script = TestClient(app, base_url="http://127.0.0.1", headers={"Authorization": f"token {TOKEN}"})
    assert script.get("/api/runs").status_code == 200
    assert not (served["tmp"] / "x").exists()


def test_runs_and_sorts_stay_inside_the_allowed_folders(served, tmp_path):
    c, rid = served["client"], served["rid"]
    jobs_before = len(c.get("/api/jobs").json())
    for form in ({"folder": "/etc"}, {"folder": str(served["photos"]), "out": "/var/patou-not-allowed"},
                 {"folder": str(served["photos"]), "model": "/usr"}):
        r = c.post("/runs/start", data=form, follow_redirects=False)
        assert r.status_code == 303 and "outside" in r.headers["location"], form
    assert len(c.get("/api/jobs").json()) == jobs_before and not Path("/var/patou-not-allowed").exists()
    outside = Path("/dev/shm" if Path("/dev/shm").is_dir() else "/var/tmp") / f"patou-not-allowed-{tmp_path.name}"
    r = c.post(f"/runs/{rid}/export/sort", data={"sort_dir": str(outside), "mode": "copy"})
    assert r.status_code == 403 and "--allow-dir" in r.json()["detail"]
    assert not outside.exists()
    link = tmp_path / "escape"  # a symlink inside an allowed folder that points out of it
    link.symlink_to(outside.parent)
    r = c.post(f"/runs/{rid}/export/sort", data={"sort_dir": str(link / outside.name), "mode": "copy"})
    assert r.status_code == 403 and not outside.exists()


def test_request_bodies_are_capped(served):
    c, rid = served["client"], served["rid"]
    big = b'{"items": [], "label": "' + b"x" * (11 * 1024 * 1024) + b'"}'
    r = c.post(f"/api/runs/{rid}/corrections", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413

    def chunks():  # no Content-Length: a streamed body is counted as it comes
        for _ in range(12):
            yield b"x" * (1024 * 1024)
    r = c.post(f"/api/runs/{rid}/corrections", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 413)
    assert c.get("/api/runs").status_code == 200  # and the server goes on


def test_a_box_and_its_card_round_a_score_the_same_way(served):
    """Issue 10 item 13: the box said 0.93 (rounded to 0.925, then to 2 places), the card 0.92."""
    from patou.record import Detection
    from patou.web.app import _box

    box = _box(Detection(bbox=(0.1, 0.0, 0.3, 0.4), conf=0.8449, scores={"bear": 0.92496, "fox": 0.07504}))
    assert "%.2f" % box["score"] == "%.2f" % 0.92496 == "0.92"
    assert "%.2f" % box["conf"] == "%.2f" % 0.8449 == "0.84"
