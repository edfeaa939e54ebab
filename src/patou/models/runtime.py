"""One place that opens ONNX Runtime sessions, so every model runs with the same CPU settings."""
from __future__ import annotations

import os
from pathlib import Path


def cpu_session(path: str | Path | bytes, threads: int | None = None, name: str | Path | None = None):
    """A CPU inference session with `threads` intra-op threads (default: all cores); `path` may
    also be the model's bytes (`name`: the file they came from, for messages). A file ORT cannot
    load (empty, truncated, not ONNX) is a one-line ValueError naming it.

    Spinning is off: ORT's idle threads otherwise busy-wait between calls and starve the
    decoding threads that feed them; measured here on 2 cores, end-to-end throughput went
    from 0.74 to 0.87-0.96 of detector-only speed (benchmarks/throughput.py).
    """
    import onnxruntime as ort  # imported here so the pure-NumPy helpers work without it

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    opts.inter_op_num_threads = 1  # the graphs are single chains: parallelism is inside ops
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(path if isinstance(path, bytes) else str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT's InvalidProtobuf, Fail, NoSuchFile... derive from Exception only
        what = name or ("the model's bytes" if isinstance(path, bytes) else path)
        reason = " ".join(str(e).split())
        raise ValueError(f"{what}: not a usable ONNX model ({type(e).__name__}: {reason[:200]})") from None

