"""Shared fixtures: the real images live beside the repo in ../shared/data/camtrap-real.

Tests are laid out by room (tests/<room>/, as src/patou/); helpers they share sit here in tests/
(pipeline_snapshot, cli_reference, serve_data, videos, heron). Markers: pyproject.toml.
"""
import os
from pathlib import Path

import pytest

REAL = Path(os.environ.get("PATOU_REAL_DATA", Path(__file__).resolve().parents[1].parent / "shared/data/camtrap-real"))


@pytest.fixture(scope="session")
def real() -> Path:
    """Root of the real labelled images; tests that need them skip when it is absent."""
    if not (REAL / "LABELS.csv").is_file():
        pytest.skip(f"real images not found at {REAL} (set PATOU_REAL_DATA or put shared/ beside the repo)")
    return REAL


@pytest.fixture(scope="session")
def real_run(real, tmp_path_factory):
    """`patou run` on every real image (target bear), once a session: the run tests
    (run/test_run.py) and the pipeline reference (pipeline/, float32) read the same records."""
    import patou

    out = tmp_path_factory.mktemp("real-run")
    result = patou.run([real], out=out, target="bear", log=lambda m: None)
    return result, {r.rel: r for r in result.records}, out
