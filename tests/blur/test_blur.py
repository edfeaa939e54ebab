"""--blur-humans: people blurred beyond recognition in copies; everything else the original's."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from patou.blur import BlurError, MARGIN, high_frequency_energy, human_boxes, write_blurred
from patou.models.detector import Detector
from patou.record import Detection, ImageRecord

pytest.importorskip("jpeglib")

# the real photos of people in camtrap-real (LABELS.csv `human` rows)
PEOPLE = [
    "speciesnet-cameratrapai/test_data/human.jpg",  # a man walking, far off (JPEG, EXIF preview)
    "animl-py-southwest/examples/Southwest/B012_2021-05-27_human.jpg",  # a shoulder at the lens (MPO: 2 pictures)
    "animl-py-southwest/examples/Southwest/Asian Plains_S012_2022-08-25_human_vehicle.jpg",  # people in a cart
]
HF_BOUND = 10.0  # mean squared Laplacian; the boxes hold 170-730 before blurring
GROWN = 32  # pixels around a box that may change: the box grown to the MCU grid, then chroma upsampling


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _upright(p: Path) -> np.ndarray:
    with Image.open(p) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB")).astype(np.int16)


def _pixels(box, w, h, grow=0):
    x, y, bw, bh = box
    return (max(0, int((x - MARGIN * bw) * w) - grow), max(0, int((y - MARGIN * bh) * h) - grow),
            min(w, int(np.ceil((x + bw + MARGIN * bw) * w)) + grow), min(h, int(np.ceil((y + bh + MARGIN * bh) * h)) + grow))


@pytest.fixture(scope="module")
def people_boxes(real):
    """The bundled detector's boxes (>= 0.2) on the photos of people."""
    det = Detector(threads=2)
    out = {}
    for rel in PEOPLE:
        with Image.open(real / rel) as im:
            img = ImageOps.exif_transpose(im).convert("RGB")
        out[rel] = [d.bbox for d in det.detect(img) if d.conf >= 0.2]
        assert out[rel], f"the detector found nobody in {rel}"
    return out


@pytest.mark.slow
@pytest.mark.parametrize("rel", PEOPLE)
def test_people_are_blurred_and_the_rest_is_the_original(real, people_boxes, tmp_path, rel):
    src, dst = real / rel, tmp_path / Path(rel).name
    before_sha = _sha(src)
    how = write_blurred(src, dst, people_boxes[rel])
    assert how == "jpeg-dct"
    assert _sha(src) == before_sha, "the original is only read"
    a, b = _upright(src), _upright(dst)
    assert a.shape == b.shape
    h, w = a.shape[:2]
    with Image.open(src) as im_a, Image.open(dst) as im_b:
        up_a, up_b = ImageOps.exif_transpose(im_a), ImageOps.exif_transpose(im_b)
        outside = np.ones((h, w), bool)
        for box in people_boxes[rel]:
            px = _pixels(box, w, h)
            hf_a, hf_b = high_frequency_energy(up_a, px), high_frequency_energy(up_b, px)
            # no edges left, so no face, outline or text: the energy falls by far more than 95 %
            assert hf_b < HF_BOUND and hf_b < 0.05 * hf_a, (rel, box, hf_a, hf_b)
            g = _pixels(box, w, h, GROWN)
            outside[g[1]:g[3], g[0]:g[2]] = False
        # lossless outside the grown boxes: the original's blocks, bit for bit
        assert np.array_equal(a[outside], b[outside])
        # and inside, the picture did change
        assert not np.array_equal(a[~outside], b[~outside])
        # EXIF kept: the capture time (patou reads it back for events and Camtrap DP)
        ex_a, ex_b = im_a.getexif().get_ifd(0x8769), im_b.getexif().get_ifd(0x8769)
        assert ex_b.get(36867) == ex_a.get(36867) and ex_a.get(36867)
        assert im_b.getexif().get(0x0112, 1) == im_a.getexif().get(0x0112, 1)
    # one picture in the copy: the EXIF thumbnail and the MPO's second picture (previews of the
    # whole scene, people included) are not carried over; the originals hold 2 or 3
    assert src.read_bytes().count(b"\xff\xd8\xff") >= 2
    assert dst.read_bytes().count(b"\xff\xd8\xff") == 1


def test_a_rotated_photo_is_blurred_where_it_is_seen(real, tmp_path):
    """EXIF orientation 6: boxes are in the upright picture; the file keeps its stored orientation."""
    src = real / "speciesnet-cameratrapai/test_data/african_elephants_with_exif_orientation.jpg"
    with Image.open(src) as im:
        assert im.getexif().get(0x0112) == 6
    box = (0.1, 0.1, 0.3, 0.2)
    write_blurred(src, tmp_path / "x.jpg", [box])
    a, b = _upright(src), _upright(tmp_path / "x.jpg")
    h, w = a.shape[:2]
    g = _pixels(box, w, h, GROWN)
    outside = np.ones((h, w), bool)
    outside[g[1]:g[3], g[0]:g[2]] = False
    assert np.array_equal(a[outside], b[outside])
    px = _pixels(box, w, h)
    with Image.open(src) as im_a, Image.open(tmp_path / "x.jpg") as im_b:
        assert high_frequency_energy(ImageOps.exif_transpose(im_b), px) < 0.05 * high_frequency_energy(
            ImageOps.exif_transpose(im_a), px)
        assert im_b.getexif().get(0x0112) == 6


def test_greyscale_jpeg_and_png_are_lossless(real, tmp_path):
    grey = real / "speciesnet-cameratrapai/test_data/african_elephants_bw.jpg"
    assert write_blurred(grey, tmp_path / "g.jpg", [(0.5, 0.5, 0.3, 0.2)]) == "jpeg-dct"
    with Image.open(tmp_path / "g.jpg") as im:
        assert im.mode == "L"
    png = tmp_path / "p.png"
    with Image.open(real / PEOPLE[0]) as im:
        im.convert("RGB").resize((768, 432)).save(png)
    box = (0.7, 0.5, 0.06, 0.24)
    assert write_blurred(png, tmp_path / "q.png", [box]) == "lossless"
    a, b = _upright(png), _upright(tmp_path / "q.png")
    px = _pixels(box, 768, 432)
    outside = np.ones(a.shape[:2], bool)
    outside[px[1]:px[3], px[0]:px[2]] = False
    assert np.array_equal(a[outside], b[outside])  # PNG: every pixel outside the box, exactly
    assert not np.array_equal(a[~outside], b[~outside])


def test_what_cannot_be_blurred_safely_is_refused(real, tmp_path):
    cmyk = real / "speciesnet-cameratrapai/test_data/african_elephants_cmyk.jpg"
    with pytest.raises(BlurError, match="CMYK"):
        write_blurred(cmyk, tmp_path / "c.jpg", [(0.1, 0.1, 0.2, 0.2)])
    gif = tmp_path / "a.gif"
    Image.new("P", (64, 64)).save(gif)
    with pytest.raises(BlurError, match="GIF"):
        write_blurred(gif, tmp_path / "b.gif", [(0.1, 0.1, 0.2, 0.2)])
    truncated = real / "speciesnet-cameratrapai/test_data/african_elephants_truncated_file.jpg"
    with pytest.raises(BlurError):
        write_blurred(truncated, tmp_path / "t.jpg", [(0.1, 0.1, 0.2, 0.2)])
    assert not (tmp_path / "c.jpg").exists() and not (tmp_path / "b.gif").exists()
    existing = tmp_path / "taken.jpg"
    shutil.copy(real / PEOPLE[0], existing)
    with pytest.raises(FileExistsError):  # a copy never replaces a file
        write_blurred(real / PEOPLE[0], existing, [(0.1, 0.1, 0.2, 0.2)])


def test_which_boxes_are_people():
    human = Detection((0.1, 0.1, 0.2, 0.2), 0.6, scores={"human": 0.3, "other": 0.25, "dog": 0.2})
    fox = Detection((0.5, 0.5, 0.2, 0.2), 0.9, scores={"fox": 0.9, "human": 0.05})
    person = Detection((0.3, 0.3, 0.1, 0.3), 0.8, category="person")  # an MD file's person box
    faint = Detection((0.7, 0.1, 0.1, 0.1), 0.1, scores={"human": 0.9})  # below the detection threshold
    r = ImageRecord(path=Path("x.jpg"), root=Path("."), detections=[human, fox, person, faint])
    # a human box counts whatever its score: a person stays hidden when the label is `undefined`
    assert human_boxes(r, 0.2) == [human.bbox, person.bbox]
    # a reviewer who says the photo shows a person: every box is blurred
    assert human_boxes(r, 0.2, verified_label="human") == [human.bbox, fox.bbox, person.bbox]
