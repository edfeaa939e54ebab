"""MegaDetector's own `validate_batch_results` (megadetector-utils, dev extra) on a file patou wrote.

Run in a child process: importing megadetector sets PIL's ImageFile.LOAD_TRUNCATED_IMAGES = True
for the whole process (visualization_utils), which would make later tests' truncated files decode.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

_CHECK = ("import json, sys\nfrom megadetector.postprocessing.validate_batch_results import "
          "ValidateBatchResultsOptions as O, validate_batch_results as v\no = O()\n"
          "o.check_image_existence = True  # and every `file` resolves under the input folder\n"
          "o.relative_path_base = sys.argv[2]\n"
          "print(json.dumps(v(sys.argv[1], o)['validation_results'], default=str))\n")


def megadetector_report(md_json: Path, base: Path, skip: bool = True) -> dict | None:
    """{"errors": [...], "warnings": [...]} of MegaDetector's validator; None (or a skip) without it."""
    if importlib.util.find_spec("megadetector") is None:
        if skip:
            pytest.skip("megadetector-utils not installed (it is in the dev extra)")
        return None
    p = subprocess.run([sys.executable, "-c", _CHECK, str(md_json), str(base)], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])
