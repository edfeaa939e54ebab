"""How quickly the review app answers, on the real images and on a large synthetic run.

    python benchmarks/serve_review.py [--data ../shared/data/camtrap-real] [--scale 20000]

Runs patou once on the real images, then through the app (in-process, no network): the run
page, a thumbnail made then served from cache, and one correction (which rewrites
corrections.json, predictions.csv and predictions.xlsx). Then the same correction and page on a
run of --scale records (the real records repeated under new names) to show how the spreadsheet
rewrite grows. Best of --repeat; a shared machine only ever adds time.
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
import warnings
from pathlib import Path


with warnings.catch_warnings():  # starlette suggests httpx2 over httpx; both work
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from patou.api import run  # noqa: E402
from patou.results import write_records  # noqa: E402
from patou.web import create_app, review  # noqa: E402
from patou.web.runs import run_id  # noqa: E402

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "camtrap-real"


def best(fn, repeat: int) -> float:
    t = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        t = min(t, time.perf_counter() - t0)
    return t


def measure(out: Path, label: str, repeat: int) -> None:
    client = TestClient(create_app([out], out.parent / "runs"), base_url="http://127.0.0.1")
    rid = run_id(out)
    imgs = client.get(f"/api/runs/{rid}/images").json()
    n = len(imgs)
    page = best(lambda: client.get(f"/runs/{rid}").raise_for_status(), repeat)
    first = next(i for i in imgs if not i["failure"])
    body = {"items": [{"root": first["root"], "file": first["file"], "label": "wolf"}]}
    fix = best(lambda: client.post(f"/api/runs/{rid}/corrections", json=body).raise_for_status(), repeat)
    review.wait_for_tables()
    t0 = time.perf_counter()
    client.post(f"/api/runs/{rid}/corrections", json=body).raise_for_status()
    review.wait_for_tables()
    tables = time.perf_counter() - t0
    print(f"{label}: {n} images: run page {page:.2f} s; a correction answered in {fix:.2f} s, "
          f"predictions.csv/.xlsx rewritten {tables:.2f} s after it (incl. {review.DEBOUNCE_S} s debounce)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT)
    ap.add_argument("--scale", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if not args.data.is_dir():
        print(f"skip: real images not found at {args.data}", file=sys.stderr)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "real"
        result = run([args.data], out, log=lambda m: None)
        measure(out, "real images", args.repeat)

        client = TestClient(create_app([out], Path(tmp) / "runs"), base_url="http://127.0.0.1")
        imgs = [i for i in client.get(f"/api/runs/{run_id(out)}/images").json() if not i["failure"]]
        cold, warm = [], []
        for img in imgs[:20]:
            t0 = time.perf_counter()
            client.get(img["thumb"]).raise_for_status()
            cold.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            client.get(img["thumb"]).raise_for_status()
            warm.append(time.perf_counter() - t0)
        print(f"thumbnail (400 px) of a real photo: made {1000 * sum(cold) / len(cold):.0f} ms, "
              f"from cache {1000 * sum(warm) / len(warm):.1f} ms (mean of {len(cold)})")

        big = Path(tmp) / "big"
        big.mkdir()
        (big / "run.json").write_bytes((out / "run.json").read_bytes())
        records = []
        for k in range(args.scale):
            r = copy.copy(result.records[k % len(result.records)])
            r.path = r.path.with_name(f"{k:06d}-{r.path.name}")
            r.event_id = f"{r.event_id}-{k}" if r.event_id else None
            records.append(r)
        write_records(records, big)
        measure(big, "synthetic", args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
