"""MegaDetector's own `validate_batch_results` (megadetector-utils, in the dev extra) on a file patou
wrote, in a child process: importing megadetector sets PIL's ImageFile.LOAD_TRUNCATED_IMAGES = True for
the whole process (visualization_utils), which would make later tests' truncated files decode."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

CODE = (
    "import json, sys\n"
    "from megadetector.postprocessing.validate_batch_results import ValidateBatchResultsOptions, validate_batch_results\n"
    "o = ValidateBatchResultsOptions()\n"
    "o.check_image_existence = True  # and every `file` resolves under the input folder\n"
    "o.relative_path_base = sys.argv[2]\n"
    "print(json.dumps(validate_batch_results(sys.argv[1], o)['validation_results']))\n"
)


def validate(md_json: Path, base: Path) -> dict:
    """MD's validation report ({'errors': [...], 'warnings': [...]}); skips without megadetector-utils."""
    if importlib.util.find_spec("megadetector") is None:
        pytest.skip("megadetector-utils not installed (it is in the dev extra)")
    p = subprocess.run([sys.executable, "-c", CODE, str(md_json), str(base)], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])
