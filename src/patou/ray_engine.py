"""`patou run --engine ray`: the per-file work (decode, detect, classify) on a Ray cluster.

Ray Data batch inference: the records to analyse become a dataset, `map_batches` sends batches to
a pool of actors (`concurrency=workers`), each holding one `Analyser` (its ONNX Runtime sessions,
created once per actor, from the run's options and box source) and running the same
`pipeline.process` as the local engine. Results stream
back to the driver, which appends them to the checkpoint as they come and then decides, groups and
writes with the same code as a local run, so the outputs are the same.

Workers open the files themselves: the paths (and a `--model DIR`) must be readable at the same
absolute paths on every node (a shared filesystem), and patou must be installed on the nodes.
"""
from __future__ import annotations

import json
import logging
import math
import os
import warnings
from typing import Callable

import numpy as np

from .boxes import BoxSource
from .options import RunOptions
from .pipeline import Analyser, Checkpoint, process
from .record import ImageRecord

# Records per actor call at most: enough for each actor's loading threads to run ahead of its
# models; small runs use smaller batches so that every worker gets some.
BATCH_SIZE = 16


class _Worker:
    """The class-based UDF: one Analyser per actor, reused for every batch it gets."""

    def __init__(self, options: RunOptions, boxes: BoxSource | None, detection_threshold: float):
        self.analyser = Analyser.for_run(options, boxes)
        self.detection_threshold = detection_threshold

    def __call__(self, batch: dict) -> dict:
        records = [ImageRecord.from_json(json.loads(s)) for s in batch["record"]]
        process(records, self.analyser, self.detection_threshold)
        return {"i": batch["i"], "record": np.array([json.dumps(r.to_json()) for r in records], dtype=object)}


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join the cluster at `address` ("auto", "ray://host:10001"), or start a local Ray.
    Returns True when this call started (and so must shut down) the connection."""
    import ray

    if ray.is_initialized():
        return False
    common = dict(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    if address:
        try:
            ray.init(address=address, **common)
        except Exception as e:  # a wrong address must read as one line, not a traceback
            raise ValueError(f"--address {address}: cannot connect to a Ray cluster ({type(e).__name__}: {e})") from None
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **common)
    return True


def process_on_ray(
    records: list[ImageRecord],
    options: RunOptions,
    boxes: BoxSource | None,
    detection_threshold: float,
    checkpoint: Checkpoint | None = None,
    on_done: Callable[[ImageRecord], None] = lambda r: None,
) -> dict:
    """Analyse `records` in place on Ray; returns what was used (workers, threads per worker).

    The run's `options` and box source go to every worker; `--threads` is per worker (default:
    the cluster's CPUs shared evenly between the workers), `--workers` and `--address` say where.
    """
    if not records:  # everything was resumed from the checkpoint: no cluster needed
        return {}
    try:
        import ray
    except ImportError:
        raise ValueError("--engine ray needs Ray: pip install 'patou[ray]'") from None

    started = connect(options.address)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        threads = options.threads
        workers = options.workers or max(1, cpus // (threads or 2))
        threads = threads or max(1, cpus // workers)
        _run(records, options.replace(threads=threads), boxes, detection_threshold, checkpoint, on_done,
             workers, min(float(threads), cpus / workers))
        return {"workers": workers, "threads_per_worker": threads, "cluster_cpus": cpus}
    finally:
        if started:
            ray.shutdown()


def _run(records, options, boxes, detection_threshold, checkpoint, on_done, workers, cpus_per_worker) -> None:
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # patou draws its own progress bar from on_done
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # Ray Data's per-run chatter
    items = [{"i": i, "record": json.dumps(r.to_json())} for i, r in enumerate(records)]
    batch = max(1, min(BATCH_SIZE, math.ceil(len(items) / (2 * workers))))
    ds = ray.data.from_items(items, override_num_blocks=math.ceil(len(items) / batch))
    ds = ds.map_batches(
        _Worker,
        fn_constructor_kwargs={"options": options, "boxes": boxes, "detection_threshold": detection_threshold},
        batch_size=batch,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=cpus_per_worker,
    )
    with warnings.catch_warnings():  # e.g. "fewer blocks than actors" on a handful of files
        warnings.filterwarnings("ignore", module="ray.data")
        for row in ds.iter_rows():
            r = records[int(row["i"])]
            done = ImageRecord.from_json(json.loads(row["record"]))
            done.root, done.site = r.root, r.site  # the driver's view of where the file was found
            r.__dict__.update(done.__dict__)  # in place: the caller's list holds these objects
            if checkpoint:
                checkpoint.append(r)
            on_done(r)
