"""Shared fixtures: the real images live beside the repo in ../shared/data/camtrap-real."""
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
