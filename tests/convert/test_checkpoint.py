"""convert/checkpoint.py: a publisher's training checkpoint read safely, whatever its `args` holds."""
from __future__ import annotations

import argparse
import os
import pathlib
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.torch

torch = pytest.importorskip("torch")

from patou.convert import checkpoint  # noqa: E402
from patou.convert.unpickle import CheckpointError  # noqa: E402

FIXTURE = Path(__file__).parents[1] / "data" / "deepfaune" / "tiny-v1.5.pt"


def _with_args(tmp_path: Path, args, name="ck.pt") -> Path:
    ck = torch.load(FIXTURE, map_location="cpu", weights_only=True)
    ck["args"] = args
    path = tmp_path / name
    torch.save(ck, path)
    return path


def test_a_plain_checkpoint_is_read_by_torch():
    with checkpoint.read(FIXTURE) as ck:
        assert ck.reader.startswith("torch.load") and ck.refused == []
        assert ck.args["num_classes"] == 40 and ck.shapes()["base_model.reg_token"] == (1, 4, 128)


def test_namespace_path_and_numpy_scalar_are_read_inertly(tmp_path):
    args = {"backbone": "vit_large_patch16_dinov3.lvd1689m", "num_classes": np.int64(40), "root": pathlib.Path("/data/df"),
            "opt": argparse.Namespace(lr=np.float32(0.5), epochs=30)}
    path = _with_args(tmp_path, args)
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)  # what patou met before: the safe loader refuses it
    want = torch.load(FIXTURE, map_location="cpu", weights_only=True)["state_dict"]
    with checkpoint.read(path) as ck:
        assert ck.reader == "patou's inert unpickler"
        assert {"argparse.Namespace", "pathlib.PosixPath"} <= set(ck.refused)
        assert ck.args == {"backbone": "vit_large_patch16_dinov3.lvd1689m", "num_classes": 40, "root": "/data/df",
                           "opt": {"lr": 0.5, "epochs": 30}}
        assert ck.shapes() == {k: tuple(v.shape) for k, v in want.items()}  # known before any weight is read
        got = ck.tensors()
        assert all(torch.equal(got[k], v) for k, v in want.items())


class _Run:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("how", ["os.system", "exec"])
def test_a_checkpoint_whose_pickle_would_run_code_is_refused_and_runs_nothing(tmp_path, how):
    marker = tmp_path / "pwned"
    payload = _Run(os.system, f"touch {marker}") if how == "os.system" else _Run(exec, f"open({str(marker)!r}, 'w')")
    path = _with_args(tmp_path, {"num_classes": 40, "hook": payload})
    with pytest.raises(CheckpointError, match="refused, it holds .* besides tensors and plain data") as e:
        checkpoint.read(path)
    assert ("posix.system" in str(e.value) or "os.system" in str(e.value)) if how == "os.system" else "exec" in str(e.value)
    assert str(e.value).startswith(f"--from {path}: ")
    assert not marker.exists()


@pytest.mark.parametrize("content,why", [(None, "not a readable torch checkpoint"), (b"", "empty file"),
                                         (b"garbage" * 10, "not a readable torch checkpoint")])
def test_unreadable_files_are_one_line(tmp_path, content, why):
    path = tmp_path / "x.pt"
    path.write_bytes(FIXTURE.read_bytes()[:50_000] if content is None else content)
    with pytest.raises(CheckpointError, match=why) as e:
        checkpoint.read(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_not_a_training_checkpoint(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(CheckpointError, match="expected a dict with 'args' and 'state_dict'"):
        checkpoint.read(path)
