"""The inert unpickler (convert/unpickle.py): a publisher's pickled objects are read as data,
and no pickle, however crafted, runs anything."""
from __future__ import annotations

import argparse
import io
import os
import pathlib
import subprocess
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from patou.convert import unpickle  # noqa: E402


def _save(obj, path):
    torch.save(obj, path)
    return path


def _zip_with_pickle(path, data_pkl: bytes, extra: dict[str, bytes] | None = None):
    """A torch-style archive whose object tree is the given raw pickle (for opcodes torch.save never writes)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/byteorder", "little")
        for k, v in (extra or {}).items():
            z.writestr(f"archive/data/{k}", v)
    return path


def test_a_publishers_objects_come_back_as_data(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.SiLU())
    with torch.no_grad():
        net[1].running_mean.uniform_()
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    args = argparse.Namespace(backbone="vit_large", num_classes=np.int64(38), root=pathlib.PosixPath("/data/x"),
                              lr=np.float32(0.5))
    sd = {"w": base, "wt": base.t(), "half": torch.ones(2, dtype=torch.float16), "empty": torch.zeros(0, 3),
          "ids": torch.tensor([1, 2], dtype=torch.int64)}
    path = _save({"args": args, "state_dict": sd, "model": net, "epoch": 3}, tmp_path / "ck.pt")

    with unpickle.read(path) as ck:
        assert {"argparse.Namespace", "pathlib.PosixPath", "torch.nn.modules.conv.Conv2d"} <= ck.stand_ins
        a = unpickle.plain(ck.root["args"])
        assert a == {"backbone": "vit_large", "num_classes": 38, "root": "/data/x", "lr": 0.5}
        assert ck.root["epoch"] == 3
        refs = unpickle.tensors(ck.root["state_dict"])
        assert refs["w"].shape == (3, 4) and refs["wt"].stride == (1, 4)
        for k, t in sd.items():
            got = refs[k].tensor()
            assert got.dtype == t.dtype and torch.equal(got, t), k
        module = unpickle.tensors(ck.root["model"])
        want = net.state_dict()
        assert list(module) == list(want)  # names and order as nn.Module.state_dict gives them
        for k, t in want.items():
            assert torch.equal(module[k].tensor(), t), k
        assert module["0.weight"].parameter and not module["1.running_mean"].parameter
        assert ck.root["model"].attrs["_modules"]["2"].qualname == "torch.nn.modules.activation.SiLU"


class _Evil:
    """Pickles as a call of `func(*args)`: what a hostile checkpoint does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker: pathlib.Path):
    touch = f"touch {marker}"
    return {
        "os.system": _Evil(os.system, touch),
        "subprocess.Popen": _Evil(subprocess.Popen, ["touch", str(marker)]),
        "exec": _Evil(exec, f"open({str(marker)!r}, 'w').close()"),
        "eval": _Evil(eval, f"open({str(marker)!r}, 'w')"),
        "Path.touch": _Evil(pathlib.Path.touch, pathlib.Path(marker)),
        "open": _Evil(open, str(marker), "w"),
    }


@pytest.mark.parametrize("name", ["os.system", "subprocess.Popen", "exec", "eval", "Path.touch", "open"])
def test_a_pickle_that_would_run_code_runs_nothing(tmp_path, name):
    marker = tmp_path / "pwned"
    payload = _payloads(marker)[name]
    path = _save({"args": {"num_classes": 2}, "state_dict": {"w": torch.ones(2)}, "x": payload}, tmp_path / "ck.pt")
    with unpickle.read(path) as ck:
        assert isinstance(ck.root["x"], unpickle.Inert)  # the call was recorded, not made
        assert ck.stand_ins  # named, so the installer can list them
        assert torch.equal(unpickle.tensors(ck.root["state_dict"])["w"].tensor(), torch.ones(2))
    assert not marker.exists()


def test_protocol_0_inst_and_copyreg_tricks_run_nothing(tmp_path):
    marker = tmp_path / "pwned"
    # INST (protocol 0): "(S'touch M'\nios\nsystem\n." calls os.system when unpickled normally
    inst = f"(S'touch {marker}'\nios\nsystem\n.".encode()
    with unpickle.read(_zip_with_pickle(tmp_path / "a.pt", inst)) as ck:
        assert isinstance(ck.root, unpickle.Inert) and ck.root.qualname == "os.system"
    # copyreg._reconstructor: a stand-in class stays a stand-in; a real class with a foreign base is refused
    recon = (b"ccopyreg\n_reconstructor\n(cos\nsystem\ncsubprocess\nPopen\n(S'touch " + str(marker).encode()
             + b"'\nltR.")
    with unpickle.read(_zip_with_pickle(tmp_path / "b.pt", recon)) as ck:
        assert isinstance(ck.root, unpickle.Inert)
    foreign = (b"ccopyreg\n_reconstructor\n(c__builtin__\nset\ncsubprocess\nPopen\n(S'touch " + str(marker).encode()
               + b"'\nltR.")
    with pytest.raises(unpickle.CheckpointError, match="_reconstructor"):
        unpickle.read(_zip_with_pickle(tmp_path / "b2.pt", foreign))
    # a bare getattr chain (builtins.getattr(os, 'system')) is a stand-in too
    chain = f"cbuiltins\ngetattr\n(cos\nsystem\nS'x'\ntR(S'touch {marker}'\ntR.".encode()
    with unpickle.read(_zip_with_pickle(tmp_path / "c.pt", chain)) as ck:
        assert isinstance(ck.root, unpickle.Inert)
    assert not marker.exists()


def test_a_stride_0_tensor_is_known_by_its_shape_and_refused_before_allocation(tmp_path):
    path = _save({"w": torch.zeros(1).expand(4096, 4096)}, tmp_path / "ck.pt")
    assert path.stat().st_size < 4096  # a few bytes on disk declaring 64 MB
    with unpickle.read(path) as ck:
        ref = unpickle.tensors(ck.root)["w"]
        assert ref.shape == (4096, 4096) and ref.storage.numel == 1  # readable without allocating
        with pytest.raises(unpickle.CheckpointError, match="declares 16777216 elements"):
            ref.tensor()


def test_storage_that_does_not_match_its_declaration_is_refused(tmp_path):
    good = _save({"w": torch.ones(8)}, tmp_path / "good.pt")
    bad = tmp_path / "bad.pt"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            zout.writestr(item, data[:4] if "/data/" in item.filename else data)  # storage cut to one float
    with unpickle.read(bad) as ck, pytest.raises(unpickle.CheckpointError, match="holds 4 bytes, declares 32"):
        ck.root["w"].tensor()


@pytest.mark.parametrize("content,why", [(b"", "empty"), (b"not a zip at all", "not a torch zip checkpoint")])
def test_not_a_checkpoint_is_one_line(tmp_path, content, why):
    p = tmp_path / "x.pt"
    p.write_bytes(content)
    with pytest.raises(unpickle.CheckpointError, match=why) as e:
        unpickle.read(p)
    assert "\n" not in str(e.value) and str(p) in str(e.value)


def test_truncated_archive_is_one_line(tmp_path):
    p = _save({"w": torch.ones(1000)}, tmp_path / "ck.pt")
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(unpickle.CheckpointError) as e:
        unpickle.read(p)
    assert str(p) in str(e.value)


def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path):
    deep = b"\x80\x02" + b"]" * 100_000 + b"a" * 99_999 + b"."  # 100,000 nested lists
    with pytest.raises(unpickle.CheckpointError, match="nested more than"):
        unpickle.read(_zip_with_pickle(tmp_path / "deep.pt", deep))


def test_state_written_onto_a_tensor_reference_is_refused(tmp_path):
    ok = io.BytesIO()
    torch.save({"w": torch.ones(2)}, ok)
    # BUILD onto the rebuilt tensor: "(...tensor...)}(shape...)b" — pickle would overwrite its fields
    with zipfile.ZipFile(io.BytesIO(ok.getvalue())) as z:
        pkl = z.read("archive/data.pkl")
        storage = z.read("archive/data/0")
    hacked = pkl[:-3] + b"}X\x05\x00\x00\x00shape(K\x01tsb" + pkl[-3:]
    with pytest.raises(unpickle.CheckpointError):
        unpickle.read(_zip_with_pickle(tmp_path / "h.pt", hacked, {"0": storage}))
