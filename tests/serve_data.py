"""A few real photos copied to a temp folder and run once, for the review app's tests."""
from __future__ import annotations

import shutil
from pathlib import Path

import patou

ENA = "zamba-ena24-small/tests/assets/images/ena24_small"
HERON = "camtrapdp-mica-heron/tests/testthat/fixtures/sample_camtrap_dp_data/media"
PHOTOS = {
    "siteA": [f"{ENA}/8831.jpg", f"{ENA}/9455.jpg"],  # black bears
    "siteB": ["speciesnet-cameratrapai/test_data/blank.jpg", f"{ENA}/4383.jpg", f"{ENA}/7951.jpg",  # blank, fox, crow
              "speciesnet-cameratrapai/test_data/african_elephants_truncated_file.jpg"],  # unreadable
    "siteC": [f"{HERON}/20210531082538-RCNX0031.JPG", f"{HERON}/20210531082538-RCNX0032.JPG"],  # one burst
}


def make_photos(real: Path, dest: Path) -> Path:
    for site, files in PHOTOS.items():
        (dest / site).mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy2(real / f, dest / site)
    return dest


def make_run(real: Path, tmp: Path) -> tuple[Path, Path]:
    """(photos root, results folder) of a finished run with --target bear."""
    photos = make_photos(real, tmp / "photos")
    out = tmp / "results"
    patou.run([photos], out, target="bear", log=lambda m: None)
    return photos, out
