"""Training data: labels, cached detector crops, event-safe splits, balanced sampling."""
import json
import shutil
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from patou.record import Detection
from patou.train.crops import CropCache
from patou.train.labels import collect, normalise_label, parse_merge, relabel
from patou.train.records import CROP_SIZE, Crop, LabelledImage
from patou.train.sampler import balanced_indices, fixed_balanced
from patou.train.splits import assign_events, crops_by_side, split

BEAR = "zamba-ena24-small/tests/assets/images/ena24_small/8831.jpg"
HERON = "camtrapdp-mica-heron/tests/testthat/fixtures/sample_camtrap_dp_data/media"
BORNEO = "camtrapR-borneo-thumbs/inst/pictures/sample_images_species_dir"


@pytest.fixture
def thumbs(real) -> list[Path]:
    return sorted((real / BORNEO).rglob("*.JPG"))


# ---- labels -----------------------------------------------------------------------------------


def test_normalise_label():
    assert normalise_label("Cerf élaphe") == "cerf_elaphe"
    assert normalise_label("Wild Boar") == "wild_boar"
    assert normalise_label("  ISARD / Chamois ") == "isard_chamois"
    assert normalise_label("Renard-roux (Vulpes)") == "renard_roux_vulpes"


def test_parse_merge_text_and_csv(tmp_path):
    assert parse_merge("red_deer,Roe Deer=deer; Humain=") == {"red_deer": "deer", "roe_deer": "deer", "humain": None}
    mapping = tmp_path / "map.csv"
    mapping.write_text("from,to\nChevreuil,cervidé\nvehicle,\n", encoding="utf-8")
    assert parse_merge(mapping) == {"chevreuil": "cervide", "vehicle": None}
    assert parse_merge(str(mapping)) == parse_merge(mapping)
    with pytest.raises(ValueError, match="expected"):
        parse_merge("bear")
    with pytest.raises(ValueError, match="twice"):
        parse_merge("a=b;a=c")


def test_relabel_merge_then_classes():
    merge = parse_merge("red_deer,roe_deer=deer;vehicle=")
    classes = ["bear", "Deer"]
    assert relabel("Roe Deer", merge, classes) == "deer"
    assert relabel("Ours", merge, classes) == "other"
    assert relabel("BEAR", merge, classes) == "bear"
    assert relabel("vehicle", merge, classes) is None
    for blank in ("Empty", "", " none ", "BLANK"):
        assert relabel(blank, merge, classes) == "empty"  # never folded into `other`


def _tree(tmp_path, thumbs) -> Path:
    data = tmp_path / "DATA"
    layout = {
        "siteA/2023/Bear": thumbs[:2],
        "siteA/2023/Cerf élaphe": thumbs[2:4],
        "siteA/2024/red deer": thumbs[4:5],
        "siteB/Empty": thumbs[5:6],
        "siteB/vehicle": thumbs[6:7],
        "fox": thumbs[7:8],
    }
    for folder, files in layout.items():
        (data / folder).mkdir(parents=True)
        for f in files:
            shutil.copy(f, data / folder / f.name)
    shutil.copy(thumbs[8], data / "stray.jpg")  # no label folder
    shutil.copy(thumbs[9], data / "siteB" / "loose.jpg")  # beside label folders: labelled "siteb", warned
    return data


def test_collect_folders_nested_sites(real, tmp_path, thumbs):
    data = _tree(tmp_path, thumbs)
    images, problems = collect(data)
    got = Counter((i.site, i.label) for i in images)
    assert got == {
        ("siteA/2023", "bear"): 2,
        ("siteA/2023", "cerf_elaphe"): 2,
        ("siteA/2024", "red_deer"): 1,
        ("siteB", "empty"): 1,
        ("siteB", "vehicle"): 1,
        (".", "fox"): 1,
        (".", "siteb"): 1,
    }
    assert all(i.root == data.absolute() and i.path.is_file() for i in images)
    assert any("no label folder" in p for p in problems)
    assert any(p.startswith(str(data / "siteB")) and "sub-folders" in p for p in problems)

    images, problems = collect(data, merge=parse_merge("red_deer,cerf_elaphe=deer;vehicle="), classes=["bear", "deer"])
    assert Counter(i.label for i in images) == {"bear": 2, "deer": 3, "empty": 1, "other": 2}
    assert any("vehicle (1)" in p for p in problems)


def test_collect_csv(real, tmp_path, thumbs):
    (tmp_path / "imgs").mkdir()
    shutil.copy(thumbs[0], tmp_path / "imgs" / "a.jpg")
    b = shutil.copy(thumbs[1], tmp_path / "b.jpg")
    csv = tmp_path / "labels.csv"
    csv.write_text(f"path,label\nimgs/a.jpg,Ours brun\n{Path(b).absolute()},\nimgs/missing.jpg,bear\n")
    images, problems = collect(tmp_path, labels_csv=csv)
    assert [(i.path.name, i.label, i.site) for i in images] == [("b.jpg", "empty", "."), ("a.jpg", "ours_brun", "imgs")]
    # one line per kind of problem: the row naming no photo, and the name the taxon table lacks
    assert len(problems) == 2 and "missing.jpg" in problems[0] and "line 4" in problems[0]
    assert "not in the taxon table" in problems[1] and "Ours brun (1)" in problems[1]

    csv.write_text("imgs/a.jpg,bear\n")
    with pytest.raises(ValueError, match="header"):
        collect(tmp_path, labels_csv=csv)


# ---- crops ------------------------------------------------------------------------------------


class FakeDetector:
    card = SimpleNamespace(name="fake", version="1")

    def __init__(self, detections=None):
        self.calls = 0
        self.detections = detections if detections is not None else [
            Detection((0.1, 0.1, 0.5, 0.5), 0.9),
            Detection((0.6, 0.6, 0.2, 0.2), 0.1),  # below the 0.2 threshold
        ]

    def detect(self, img):
        self.calls += 1
        return self.detections


class ExplodingDetector:
    card = SimpleNamespace(name="megadetectorlite_yolox_tiny", version="1")

    def detect(self, img):
        raise AssertionError("the detector ran on a cached image")


def _img(path, label="bear", site="s1"):
    return LabelledImage(path=Path(path), root=Path(path).parent, label=label, site=site)


def test_real_bear_detected_then_cached(real, tmp_path):
    images = [_img(real / BEAR)]
    first = CropCache(tmp_path / "cache")
    crops, problems = first.crops_for(images)
    assert problems == [] and len(crops) >= 1
    assert all(c.conf >= 0.2 and c.label == "bear" and c.bbox for c in crops)
    with Image.open(crops[0].path) as im:
        assert im.size == (CROP_SIZE, CROP_SIZE) and im.format == "JPEG"
    data = [c.path.read_bytes() for c in crops]

    again, problems = CropCache(tmp_path / "cache", detector=ExplodingDetector()).crops_for(images)
    assert again == crops and problems == []
    assert [c.path.read_bytes() for c in again] == data  # not rewritten

    lazy = CropCache(tmp_path / "cache")
    assert lazy.crops_for(images)[0] == crops
    assert lazy._detector is None and lazy.counts["cached"] == 1  # no ONNX session was built


def test_cache_keys_on_content_and_settings(real, tmp_path, thumbs):
    cache = CropCache(tmp_path / "cache", detector=FakeDetector())
    a = Path(shutil.copy(thumbs[0], tmp_path / "a.jpg"))
    b = Path(shutil.copy(thumbs[0], tmp_path / "renamed.jpg"))
    assert cache.key(a) == cache.key(b)  # the bytes matter, not the name
    before = cache.key(a)
    with open(a, "ab") as f:
        f.write(b"\0")
    assert cache.key(a) != before
    assert cache.key(b) != cache.key(b, no_crop=True)
    assert CropCache(tmp_path / "cache", FakeDetector(), detection_threshold=0.5).key(b) != cache.key(b)
    other = FakeDetector()
    other.card = SimpleNamespace(name="fake", version="2")
    assert CropCache(tmp_path / "cache", other).key(b) != cache.key(b)


def test_crops_threshold_empty_nobox_failure(real, tmp_path, thumbs):
    det = FakeDetector()
    cache = CropCache(tmp_path / "cache", detector=det)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    images = [_img(thumbs[0]), _img(thumbs[1], label="empty"), _img(broken)]
    crops, problems = cache.crops_for(images)
    assert len(crops) == 1 and crops[0].bbox == (0.1, 0.1, 0.5, 0.5) and crops[0].source == thumbs[0]
    assert det.calls == 1  # the empty image was not even decoded, the broken one failed first
    assert len(problems) == 1 and "broken.jpg" in problems[0] and "\n" not in problems[0]
    assert cache.counts["empty"] == 1 and cache.counts["failed"] == 1

    nobox = FakeDetector(detections=[Detection((0.1, 0.1, 0.2, 0.2), 0.05)])
    cache = CropCache(tmp_path / "cache2", detector=nobox)
    for _ in range(2):  # "nothing found" is cached too
        crops, problems = cache.crops_for([_img(thumbs[2])])
        assert crops == [] and cache.counts["no_box"] == 1
        assert len(problems) == 1 and thumbs[2].name in problems[0]
    assert nobox.calls == 1


def test_killed_run_entry_is_recomputed(real, tmp_path, thumbs):
    det = FakeDetector()
    cache = CropCache(tmp_path / "cache", detector=det)
    crops, _ = cache.crops_for([_img(thumbs[0])])
    meta = crops[0].path.parent / "meta.json"
    assert json.loads(meta.read_text())["boxes"] == [[0.1, 0.1, 0.5, 0.5]]
    meta.unlink()  # as if killed between the crops and meta.json
    again, _ = cache.crops_for([_img(thumbs[0])])
    assert again == crops and det.calls == 2


def test_no_crop_whole_image(real, tmp_path, thumbs):
    cache = CropCache(tmp_path / "cache", detector=ExplodingDetector())
    crops, problems = cache.crops_for([_img(thumbs[0]), _img(thumbs[1], label="empty")], no_crop=True)
    assert problems == [] and len(crops) == 1
    assert crops[0].bbox is None and crops[0].conf is None
    with Image.open(crops[0].path) as im:
        a = np.asarray(im.convert("L"), dtype=float)
    assert a.shape == (CROP_SIZE, CROP_SIZE)
    # a 4:3 thumbnail padded to a square: black bands above and below, picture in the middle
    assert a[:20].mean() < 5 and a[-20:].mean() < 5 and a[CROP_SIZE // 2].mean() > 20


# ---- splits -----------------------------------------------------------------------------------


@pytest.fixture
def heron_and_borneo(real):
    heron_dir = real / HERON
    heron = [LabelledImage(path=p, root=heron_dir, label="heron", site="mica") for p in sorted(heron_dir.glob("*.JPG"))]
    borneo, problems = collect(real / BORNEO)
    assert len(heron) == 10 and len(borneo) > 50 and problems == []
    images = heron + borneo
    assign_events(images)
    return images


def test_events_heron_burst_is_one(heron_and_borneo):
    heron = [i for i in heron_and_borneo if i.label == "heron"]
    assert len({i.event_id for i in heron}) == 1 and heron[0].timestamp is not None
    assert len({i.event_id for i in heron_and_borneo}) > 20


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_split_by_event_keeps_events_whole(heron_and_borneo, seed):
    train, val = split(heron_and_borneo, val_fraction=0.2, seed=seed)
    assert len(train) + len(val) == len(heron_and_borneo) and val
    assert not {i.event_id for i in train} & {i.event_id for i in val}
    labels = {i.label for i in heron_and_borneo}
    events_per_class = {c: len({i.event_id for i in heron_and_borneo if i.label == c}) for c in labels}
    val_classes, train_classes = {i.label for i in val}, {i.label for i in train}
    assert train_classes == set(events_per_class)  # no class loses all its training events
    assert {c for c, n in events_per_class.items() if n >= 2} <= val_classes
    assert "heron" not in val_classes  # its one event must stay in training
    assert 0.1 <= len(val) / len(heron_and_borneo) <= 0.3
    again = split(heron_and_borneo, val_fraction=0.2, seed=seed)
    assert [i.path for i in again[1]] == [i.path for i in val]


def test_split_seeds_differ_and_site_mode(heron_and_borneo):
    vals = {tuple(i.path for i in split(heron_and_borneo, 0.2, seed=s)[1]) for s in range(4)}
    assert len(vals) > 1
    for seed in range(3):
        train, val = split(heron_and_borneo, val_fraction=0.2, by="site", seed=seed)
        assert val and train and not {i.site for i in train} & {i.site for i in val}
    with pytest.raises(ValueError, match="assign_events"):
        split([LabelledImage(Path("x.jpg"), Path("."), "bear")])


def test_crops_follow_their_image(heron_and_borneo):
    train, val = split(heron_and_borneo, 0.2, seed=0)
    crops = [Crop(path=Path(f"{n}.jpg"), label=i.label, source=i.path) for n, i in enumerate(heron_and_borneo * 2)]
    tc, vc = crops_by_side(crops, train, val)
    assert len(tc) == 2 * len(train) and len(vc) == 2 * len(val)
    assert {c.source for c in vc} == {i.path for i in val}


# ---- sampler ----------------------------------------------------------------------------------


def test_balanced_indices_respect_ratio_and_redraw():
    labels = ["deer"] * 100 + ["bear"] * 7 + ["fox"] * 3 + ["boar"] * 5
    rng = np.random.default_rng(0)
    draws = [balanced_indices(labels, 2.0, rng) for _ in range(3)]
    for idx in draws:
        counts = Counter(labels[i] for i in idx)
        assert counts == {"deer": 6, "bear": 6, "fox": 3, "boar": 5}
        assert max(counts.values()) <= 2.0 * min(counts.values())
        assert len(set(idx.tolist())) == len(idx)
    assert not np.array_equal(draws[0], draws[1])  # a fresh draw every epoch
    assert set(draws[0][draws[0] < 100].tolist()) != set(draws[1][draws[1] < 100].tolist())
    assert sorted(draws[0].tolist()) != draws[0].tolist()  # shuffled, not grouped by class
    counts = Counter(labels[i] for i in balanced_indices(labels, 1.5, rng))
    assert max(counts.values()) <= 1.5 * min(counts.values()) and counts["deer"] == 4
    with pytest.raises(ValueError):
        balanced_indices(labels, 0.5, rng)
    assert balanced_indices([], 2.0, rng).size == 0


def test_fixed_balanced_is_deterministic():
    labels = ["deer"] * 50 + ["bear"] * 4
    a, b = fixed_balanced(labels, 3.0, seed=7), fixed_balanced(labels, 3.0, seed=7)
    assert np.array_equal(a, b)
    assert Counter(labels[i] for i in a) == {"deer": 12, "bear": 4}
    assert not np.array_equal(a, fixed_balanced(labels, 3.0, seed=8))


def test_videos_in_a_training_tree_are_skipped_with_one_line(real, tmp_path):
    (tmp_path / "bear").mkdir()
    (tmp_path / "bear" / "a.jpg").symlink_to(real / "zamba-ena24-small/tests/assets/images/ena24_small/8831.jpg")
    (tmp_path / "bear" / "clip.MP4").write_bytes(b"\x00" * 100)
    images, problems = collect(tmp_path)
    assert [i.path.name for i in images] == ["a.jpg"]
    assert any("1 videos skipped" in p for p in problems)
