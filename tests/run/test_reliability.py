"""Issue 10, "nothing lost, nothing leaked": each test reproduces one thing an outside probe or a
first-time user found (item number in the test's docstring), on real photos from camtrap-real."""
import csv
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image

import patou
from patou.media import scan
from patou.record import ImageRecord

ENA = "zamba-ena24-small/tests/assets/images/ena24_small"
SN = "speciesnet-cameratrapai/test_data"
BEAR, BEAR2, FOX = f"{ENA}/8831.jpg", f"{ENA}/9455.jpg", f"{ENA}/4383.jpg"
BLANKS = [f"{SN}/blank.jpg", f"{SN}/blank2.jpg"]
HERON = "camtrapdp-mica-heron/tests/testthat/fixtures/sample_camtrap_dp_data/media"
QUIET = lambda m: None  # noqa: E731


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _photos(real: Path, dst: Path, rels=(BEAR, BEAR2, FOX, *BLANKS)) -> list[Path]:
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for rel in rels:
        shutil.copy2(real / rel, dst / Path(rel).name)
        out.append(dst / Path(rel).name)
    return out


def _cli(*args, cwd=None, env_extra=None, timeout=300, pre=""):
    """`patou ARGS` in a subprocess; `pre` is Python run first (e.g. to hide a module)."""
    code = f"{pre}\nfrom patou.cli import app\napp(prog_name='patou')"
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)


def _one_line_error(proc) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


# -- data loss and wrong results ----------------------------------------------------------------

@pytest.mark.slow
def test_rerun_after_sort_move_keeps_the_earlier_results(tmp_path, real):
    """Item 2: the second run finds nothing (moved) and must not replace the results with 0 rows."""
    src, out = tmp_path / "in", tmp_path / "out"
    _photos(real, src)
    patou.run([src], out=out, sort="move", sort_dir=src / "sorted", log=QUIET)
    before = {n: (out / n).read_bytes() for n in ("predictions.csv", "megadetector.json", "predictions.xlsx")}
    assert len(_rows(out / "predictions.csv")) == 5
    proc = _cli("run", src, "--out", out, "--sort", "move", "--sort-dir", src / "sorted")
    assert proc.returncode == 1
    line = _one_line_error(proc)
    assert "no image" in line and str(src) in line
    assert {n: (out / n).read_bytes() for n in before} == before


def _cross_fs_dir(tmp_path: Path) -> Path:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem (/dev/shm) to move across")
    d = shm / f"patou-test-{os.getpid()}-{tmp_path.name}"
    d.mkdir()
    return d


@pytest.mark.slow
def test_kill_9_during_cross_filesystem_move_then_rerun_finishes_the_plan(tmp_path, real):
    """Item 3: killed mid-move across filesystems, a rerun files every photo as first planned
    (the bear's event stays whole) and leaves no .patou-part behind."""
    src, out = tmp_path / "in", tmp_path / "out"
    heron = sorted(os.listdir(real / HERON))[:4]
    files = _photos(real, src, [f"{HERON}/{n}" for n in heron] + [BEAR, *BLANKS])
    shas = sorted(_sha(p) for p in files)
    sort_dir = _cross_fs_dir(tmp_path)
    try:
        # the 3rd copy writes half its temp file, then the process dies as by kill -9
        pre = ("import os, signal, shutil, patou.sort as s\n"
               "n = [0]\n"
               "def copy2(a, b):\n"
               "    n[0] += 1\n"
               "    if n[0] == 3:\n"
               "        open(b, 'wb').write(open(a, 'rb').read()[:1000]); os.kill(os.getpid(), signal.SIGKILL)\n"
               "    return shutil.copyfile(a, b)\n"
               "s.shutil = type('m', (), {'copy2': staticmethod(copy2)})\n")
        args = ("run", src, "--out", out, "--sort", "move", "--sort-dir", sort_dir, "--quiet")
        killed = _cli(*args, pre=pre)
        assert killed.returncode == -9, killed.stderr
        assert list(sort_dir.rglob("*.patou-part")), "the kill did not leave a partial file to clean"
        planned = {r["file"]: r["event_label"] for r in _rows(out / "predictions.csv")}
        csv_before = (out / "predictions.csv").read_bytes()

        again = _cli(*args)
        assert again.returncode == 0, again.stderr
        assert "interrupted" in again.stderr
        assert (out / "predictions.csv").read_bytes() == csv_before  # the heron event is not split
        assert not list(sort_dir.rglob("*.patou-part"))
        assert [p for p in src.rglob("*") if p.is_file()] == []
        for name, label in planned.items():
            assert (sort_dir / label / name).is_file(), (name, label)
        assert sorted(_sha(p) for p in sort_dir.rglob("*") if p.is_file()) == shas
    finally:
        shutil.rmtree(sort_dir, ignore_errors=True)


@pytest.mark.slow
def test_a_second_run_into_a_busy_out_is_refused_and_a_killed_run_leaves_no_lock(tmp_path, real):
    """Item 4: two runs into one --out: the second is refused; kill -9 of the first frees the folder."""
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    heron = [f"{HERON}/{n}" for n in sorted(os.listdir(real / HERON))]
    _photos(real, a, heron + [BEAR, BEAR2, FOX, *BLANKS])
    _photos(real, b, [FOX])
    code = "from patou.cli import app\napp(prog_name='patou')"
    first = subprocess.Popen([sys.executable, "-c", code, "run", str(a), "--out", str(out), "--quiet"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ckpt = out / ".patou" / "checkpoint.jsonl"
        end = time.time() + 120
        while time.time() < end and not (ckpt.is_file() and ckpt.read_text().count("\n") >= 2):
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before the second could start"
        second = _cli("run", b, "--out", out, "--quiet")
        assert second.returncode == 2
        line = _one_line_error(second)
        assert str(out) in line and "in use" in line
    finally:
        first.kill()
        first.wait()
    third = _cli("run", b, "--out", out, "--quiet")  # the kernel dropped the killed run's lock
    assert third.returncode == 0, third.stderr
    assert [r["file"] for r in _rows(out / "predictions.csv")] == ["4383.jpg"]


def test_a_file_symlink_loop_is_a_reported_skipped_entry(tmp_path, real):
    """Item 5: `ln -s self.jpg DIR/self.jpg` must not crash the run."""
    src = tmp_path / "in"
    _photos(real, src, [BEAR])
    os.symlink("self.jpg", src / "self.jpg")
    os.symlink("loop-b.jpg", src / "loop-a.jpg")
    os.symlink("loop-a.jpg", src / "loop-b.jpg")
    result = patou.run([src], out=tmp_path / "out", log=QUIET)
    assert [r.rel for r in result.records] == ["8831.jpg"] and result.records[0].label == "bear"
    assert sum("symlink loop" in p for p in result.problems) == 3, result.problems
    assert any(p.startswith(str(src / "self.jpg")) for p in result.problems)


def _png_claiming(path: Path, width: int, height: int, color_type: int = 6) -> None:
    """A small PNG whose header claims a huge RGBA image: a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
                     + chunk(b"IEND", b""))


@pytest.mark.slow
def test_decompression_bombs_are_refused_before_decoding_and_big_jpegs_still_work(tmp_path, real):
    """Item 6: a PNG declaring 24000x24000 RGBA is a failure row (nothing decoded); a large JPEG goes
    through draft decoding; the cap is an option."""
    src = tmp_path / "in"
    _photos(real, src, [BEAR])
    _png_claiming(src / "bomb.png", 24000, 24000)
    with Image.open(real / FOX) as im:  # a real photo blown up to 72 MP, as a JPEG
        im.convert("RGB").resize((9800, 7350)).save(src / "big.jpg", quality=70)
    Image.open(real / BEAR2).save(src / "bear2.png")  # 2048 x 1536
    result = patou.run([src], out=tmp_path / "out", log=QUIET)
    by = {r.rel: r for r in result.records}
    assert "576,000,000 pixels" in by["bomb.png"].failure and "--max-pixels" in by["bomb.png"].failure
    assert by["bomb.png"].width == 24000
    assert by["big.jpg"].failure is None and by["big.jpg"].width == 9800
    assert by["bear2.png"].failure is None and by["8831.jpg"].label == "bear"
    rows = {r["file"]: r for r in _rows(tmp_path / "out" / "predictions.csv")}
    assert "pixels" in rows["bomb.png"]["failure"]
    small = patou.run([src], out=tmp_path / "out2", max_pixels=2_000_000, log=QUIET)
    by = {r.rel: r for r in small.records}
    assert "3,145,728 pixels" in by["bear2.png"].failure  # 2048 x 1536 > 2 MP: refused
    assert by["big.jpg"].failure is None  # draft decodes it at 1/8 scale: 1225 x 919


# -- first-time user friction ------------------------------------------------------------------

def test_out_that_is_a_file_is_one_line_not_a_traceback(tmp_path, real):
    """Item 8."""
    src = tmp_path / "in"
    _photos(real, src, [BEAR])
    (tmp_path / "results.csv").write_text("mine\n")
    proc = _cli("run", src, "--out", tmp_path / "results.csv")
    assert proc.returncode == 2
    line = _one_line_error(proc)
    assert "--out" in line and "results.csv" in line and "not a folder" in line
    assert (tmp_path / "results.csv").read_text() == "mine\n"


@pytest.mark.slow
def test_missing_or_empty_input_is_one_clear_line_and_no_outputs(tmp_path):
    """Item 9: a missing folder, an empty folder: one line naming it, exit 1, no empty outputs."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no photos here")
    for given, reason in ((tmp_path / "nope", "no such file or folder"), (tmp_path / "empty", "no image")):
        proc = _cli("run", given, "--out", tmp_path / "out")
        assert proc.returncode == 1, proc.stderr
        line = _one_line_error(proc)
        assert str(given) in line and reason in line
        assert not (tmp_path / "out").exists()


def test_out_a_parent_of_the_inputs_still_finds_them(tmp_path, real):
    """Item 9: `--out` above the photo folder used to exclude every photo."""
    _photos(real, tmp_path / "project" / "photos", [BEAR, BLANKS[0]])
    result = patou.run([tmp_path / "project" / "photos"], out=tmp_path / "project", log=QUIET)
    assert sorted(r.rel for r in result.records) == ["8831.jpg", "blank.jpg"]


@pytest.mark.parametrize("args, option", [
    (["--threshold", "2"], "--threshold"),
    (["--detection-threshold", "-1"], "--detection-threshold"),
    (["--demo", "IN"], "--demo"),
    (["--event-gap", "-5"], "--event-gap"),
])
def test_out_of_range_options_are_refused(tmp_path, real, args, option):
    """Item 10."""
    src = tmp_path / "in"
    _photos(real, src, [BEAR])
    args = [str(src) if a == "IN" else a for a in args]
    if "--demo" not in args:
        args = [str(src)] + args
    proc = _cli("run", *args, "--out", tmp_path / "out")
    assert proc.returncode == 2
    assert option in _one_line_error(proc)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("verb, hidden", [("train", "torch"), ("evaluate", "sklearn")])
def test_train_and_evaluate_without_their_extras_give_the_install_hint(tmp_path, real, verb, hidden):
    """Item 11: in a plain `pip install .` (torch / scikit-learn absent), a hint, not a traceback."""
    data = tmp_path / "data"
    _photos(real, data / "bear", [BEAR])
    _photos(real, data / "fox", [FOX])
    pre = f"import sys\nsys.modules['{hidden}'] = None"  # what an absent package looks like to import
    proc = _cli(verb, data, "--out", tmp_path / "o", pre=pre)
    assert proc.returncode == 2
    line = _one_line_error(proc)
    assert "pip install 'patou[train]'" in line and hidden in line


@pytest.mark.slow
def test_evaluate_takes_a_relative_data_path(tmp_path, real, monkeypatch):
    """Item 12: `patou evaluate ../relative/data` failed on relative_to with mixed paths."""
    from patou.evaluate import evaluate_model

    _photos(real, tmp_path / "data" / "bear", [BEAR, BEAR2])
    _photos(real, tmp_path / "data" / "fox", [FOX])
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    rep = evaluate_model(Path("../data"), Path("report"), level="image", log=QUIET)
    assert rep["image"]["n"] == 3
    assert (tmp_path / "work" / "report" / "metrics.json").is_file()


@pytest.mark.slow
def test_exit_code_is_1_when_every_sort_operation_failed(tmp_path, real):
    """Item 13."""
    src, sort_dir = tmp_path / "in", tmp_path / "sorted"
    _photos(real, src, BLANKS)
    sort_dir.mkdir()
    (sort_dir / "empty").write_text("a file where the label folder should go")
    proc = _cli("run", src, "--out", tmp_path / "out", "--sort", "copy", "--sort-dir", sort_dir, "--quiet")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("error: ") == 2


def test_stale_temp_files_of_killed_runs_are_cleaned(tmp_path, real):
    """Item 13: `.tmp` (atomic writes) and `.patou-part` (sort copies) of a killed run go away."""
    src, out, sort_dir = tmp_path / "in", tmp_path / "out", tmp_path / "sorted"
    _photos(real, src, [BLANKS[0]])
    (out / ".patou").mkdir(parents=True)
    stale = [out / ".predictions.csv.0badc0de.tmp", out / ".patou" / ".checkpoint.jsonl.12345678.tmp",
             sort_dir / "empty" / ".blank.jpg.abcdef01.patou-part"]
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half")
    keep = out / "my-notes.tmp"  # not a name patou makes: left alone
    keep.write_text("mine")
    patou.run([src], out=out, sort="copy", sort_dir=sort_dir, log=QUIET)
    assert [p for p in stale if p.exists()] == []
    assert keep.read_text() == "mine" and (sort_dir / "empty" / "blank.jpg").is_file()


@pytest.mark.slow
def test_gif_is_analysed_and_hidden_folders_are_skipped_like_hidden_files(tmp_path, real):
    """Item 13: `.gif` was skipped without a word; hidden folders were scanned, hidden files not."""
    src = tmp_path / "in"
    _photos(real, src, [BEAR])
    Image.open(real / BEAR2).save(src / "bear2.gif")
    _photos(real, src / ".thumbnails", [FOX])
    records, problems = scan([src])
    assert sorted(r.path.name for r in records) == ["8831.jpg", "bear2.gif"]
    result = patou.run([src], out=tmp_path / "out", log=QUIET)
    gif = next(r for r in result.records if r.path.name == "bear2.gif")
    assert gif.failure is None and gif.width == 2048 and gif.detections


@pytest.mark.slow
def test_help_is_clean(tmp_path):
    """Item 13: no `<bool>` after flags, one argument naming style, guard --threshold shows its default."""
    run_help = _cli("run", "--help", env_extra={"COLUMNS": "200"}).stdout
    assert "<bool>" not in run_help and "--demo " in run_help
    usages = {verb: next(x for x in _cli(verb, "--help", env_extra={"COLUMNS": "200"}).stdout.splitlines()
                         if "Usage:" in x).split("[OPTIONS]")[1].strip()
              for verb in ("run", "train", "evaluate", "export-camtrap-dp", "serve")}
    # typer's usage style: {REQUIRED}, [OPTIONAL]...; one upper-case name per kind of folder
    assert usages == {"run": "[PHOTOS]...", "train": "{DATA}", "evaluate": "{DATA}",
                      "export-camtrap-dp": "{RESULTS_DIR}", "serve": "[RESULTS_DIR]..."}
    guard_help = _cli("guard", "--help", env_extra={"COLUMNS": "200"}).stdout
    line = next(x for x in guard_help.splitlines() if "--threshold " in x)
    from patou.guard import DEFAULT_GUARD_THRESHOLD

    assert f"[default: {DEFAULT_GUARD_THRESHOLD:g}]" in line


def test_decode_failure_texts_do_not_depend_on_case(tmp_path, real):
    """Item 1 (decode side): Pillow's 'Truncated File Read' is a truncated file, like 'truncated'."""
    from patou.media import decode

    data = (real / BEAR).read_bytes()
    p = tmp_path / "head.jpg"
    p.write_bytes(data[:100])
    r = ImageRecord(path=p, root=tmp_path, site=".")
    assert decode(r) is None and r.failure == "truncated image file"


REPO = Path(__file__).resolve().parents[2]


def _section(text: str, title: str) -> str:
    start = text.index(title)
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_readme_fresh_machine_is_two_commands_and_ci_runs_the_test_one():
    """Item 14: two self-sufficient commands (demo, tests), .ci/run runs exactly the test one; the
    `pip install .` list names every dependency; records.jsonl is among the outputs."""
    import tomllib

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    fresh = _section(readme, "## Fresh machine")
    block = fresh.split("```bash\n")[1].split("```")[0]
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]
    assert commands == ["bash install.sh demo", "bash install.sh test"]
    ci = [line.strip() for line in (REPO / ".ci/run").read_text().splitlines() if line.strip()]
    assert ci[-1] == commands[1] and "rm -rf .venv" in ci
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {"onnxruntime": "ONNX Runtime", "opencv-python-headless": "OpenCV", "python-multipart": "python-multipart"}
    for dep in deps:
        name = dep.split("==")[0].split(">=")[0]
        assert names.get(name, name).lower() in fresh.lower(), f"{name} missing from README's pip install list"
    assert "2.5 GB" in fresh
    assert "`records.jsonl`" in _section(readme, "### What lands in RESULTS_DIR")
    proc = subprocess.run(["bash", str(REPO / "install.sh"), "bogus"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "usage: bash install.sh [demo|test]" in proc.stderr


def test_readme_names_the_reliability_guarantees_in_one_place():
    """Issue 10 'done when': what survives kill -9, what is never overwritten, what serve lets through."""
    rel = _section((REPO / "README.md").read_text(encoding="utf-8"), "## Reliability")
    for promise in ("kill -9", "never overwrite", "--max-pixels", "lock", "token", "--allow-dir", "guard"):
        assert promise in rel, promise
