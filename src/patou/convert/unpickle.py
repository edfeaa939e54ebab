"""Read a torch checkpoint without running anything from it: the inert unpickler.

Publishers save whole objects (YOLOv5 and Ultralytics pickle the `Model`, DeepFaune an `args`
that may hold a Namespace, a Path or a NumPy scalar), which `torch.load(weights_only=True)`
refuses and `weights_only=False` would let run any code the file names. Here the zip archive
`torch.save` writes is read with the standard library and its `data.pkl` by an unpickler whose
`find_class` hands out only (a) plain containers and value types, (b) this module's own tensor and
scalar rebuilders, and (c) for every other global an `Inert` stand-in class that merely records the
arguments and state the file gives it. So no `__reduce__`, `__setstate__` or constructor of the
file ever runs, and the object tree still says what the file describes (a module's `_modules`,
`_parameters`, `yaml`; an `args` Namespace's fields).

Tensors come back as `TensorRef`s: dtype, shape and stride from the pickle, bytes left in the
archive until `.tensor()` is asked for, so a caller can refuse a file from its shapes before
anything is allocated; `.tensor()` checks that the view fits its storage (no stride-0 tensor
declaring a network of gigabytes from a few bytes).
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

MAX_PICKLE_BYTES = 256 << 20  # a model's object tree is kilobytes to a few MB; tensors live beside it
MAX_DEPTH = 500  # nesting of containers walked by `materialise`

# torch's storage classes, by name, -> (torch dtype name, bytes per element)
_STORAGES = {
    "FloatStorage": ("float32", 4), "DoubleStorage": ("float64", 8), "HalfStorage": ("float16", 2),
    "BFloat16Storage": ("bfloat16", 2), "LongStorage": ("int64", 8), "IntStorage": ("int32", 4),
    "ShortStorage": ("int16", 2), "CharStorage": ("int8", 1), "ByteStorage": ("uint8", 1),
    "BoolStorage": ("bool", 1), "ComplexFloatStorage": ("complex64", 8),
    "ComplexDoubleStorage": ("complex128", 16), "UntypedStorage": ("uint8", 1),
}
_TORCH_DTYPES = {"float32", "float", "float64", "double", "float16", "half", "bfloat16", "int64", "long", "int32",
                 "int", "int16", "short", "int8", "uint8", "bool", "complex64", "complex128"}
_NUMPY_KINDS = "biufc?"  # numeric NumPy scalars only (no object, string or void dtypes)


class CheckpointError(ValueError):
    """A one-line reason the file cannot be read as a checkpoint."""


class Inert:
    """Stand-in for a class or function the file names: records what the file gives it, does nothing."""

    qualname = "?"  # "module.name" of the global it stands for (set on each subclass)

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state, obj.items, obj.entries = args, kwargs, None, [], {}
        return obj

    def __init__(self, *args, **kwargs):  # pickle's REDUCE calls the class; nothing to do
        pass

    def __setstate__(self, state):
        self.state = state

    def __call__(self, *args, **kwargs):  # a call of what a call returned (getattr(obj, "x")(...))
        return _Result(self, *args, **kwargs)

    def __setitem__(self, key, value):
        self.entries[key] = value

    def append(self, value):
        self.items.append(value)

    def extend(self, values):
        self.items.extend(values)

    @property
    def attrs(self) -> dict:
        """The object's attributes as the file set them (BUILD's dict, or (dict, slots))."""
        s = self.state
        if isinstance(s, tuple) and len(s) == 2 and (s[0] is None or isinstance(s[0], dict)):
            return {**(s[0] or {}), **(s[1] if isinstance(s[1], dict) else {})}
        return s if isinstance(s, dict) else {}

    def __repr__(self) -> str:
        return f"<inert {self.qualname}>"


class _Sealed:
    """pickle's BUILD on an object without __setstate__ writes its __dict__: refuse it here."""

    def __setstate__(self, state):
        raise CheckpointError(f"the file sets the state of a {type(self).__name__}: refused")


class _Result(Inert):
    qualname = "<result of a call>"


@dataclass(frozen=True)
class _StorageKind(_Sealed):
    dtype: str
    itemsize: int


@dataclass(frozen=True)
class _StorageRef(_Sealed):
    kind: _StorageKind
    key: str
    numel: int


@dataclass
class TensorRef(_Sealed):
    """A tensor the file declares: its bytes stay in the archive until `.tensor()`."""

    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    parameter: bool = False
    _source: "Checkpoint | None" = field(default=None, repr=False, compare=False)

    @property
    def dtype(self) -> str:
        return self.storage.kind.dtype

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def tensor(self):
        """The torch tensor, after checking that the declared view fits the declared storage."""
        if self._source is None:
            raise CheckpointError("tensor not attached to an open checkpoint")
        return self._source.tensor(self)


@dataclass
class Checkpoint:
    """A parsed checkpoint: `root` is the object tree (TensorRefs for tensors, `Inert` for the
    file's own classes); `stand_ins` names every global that was replaced by a stand-in."""

    path: Path
    root: object
    stand_ins: set[str]
    _zip: zipfile.ZipFile | None = field(default=None, repr=False)
    _prefix: str = ""
    _bases: dict = field(default_factory=dict, repr=False)

    def tensor(self, ref: TensorRef):
        import torch

        if any(s < 0 for s in ref.shape) or any(s < 0 for s in ref.stride) or ref.offset < 0 \
                or len(ref.shape) != len(ref.stride):
            raise CheckpointError(f"{self.path}: tensor with shape {ref.shape}, stride {ref.stride}: not a valid view")
        n = ref.numel
        if n:
            last = ref.offset + sum((s - 1) * st for s, st in zip(ref.shape, ref.stride))
            if last >= ref.storage.numel or n > ref.storage.numel:
                raise CheckpointError(
                    f"{self.path}: a tensor declares {n} elements (shape {list(ref.shape)}, stride "
                    f"{list(ref.stride)}) over a storage of {ref.storage.numel}: refused")
        base = self._bases.get(ref.storage.key)
        if base is None:
            base = self._read_storage(ref.storage)
            self._bases[ref.storage.key] = base
        dtype = getattr(torch, ref.dtype) if ref.dtype in _TORCH_DTYPES else None
        if not isinstance(dtype, torch.dtype):
            raise CheckpointError(f"{self.path}: storage {ref.storage.key} of an unknown type")
        if not n:
            return torch.empty(ref.shape, dtype=dtype)
        return base.view(dtype).as_strided(ref.shape, ref.stride, ref.offset).clone()

    def _read_storage(self, s: _StorageRef):
        import torch

        name = f"{self._prefix}data/{s.key}"
        try:
            info = self._zip.getinfo(name)
        except KeyError:
            raise CheckpointError(f"{self.path}: storage {s.key} is missing from the archive (truncated file?)") from None
        want = s.numel * s.kind.itemsize
        if info.file_size != want:
            raise CheckpointError(f"{self.path}: storage {s.key} holds {info.file_size} bytes, declares {want}")
        try:
            data = bytearray(self._zip.read(name))
        except (OSError, zipfile.BadZipFile, EOFError) as e:
            raise CheckpointError(f"{self.path}: storage {s.key} unreadable ({e})") from None
        return torch.frombuffer(data, dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------- the rebuilders the file may call
def _rebuild_tensor(storage, storage_offset, size, stride, *rest):
    if not isinstance(storage, _StorageRef):
        raise CheckpointError("a tensor without a storage")
    try:
        return TensorRef(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))
    except (TypeError, ValueError):
        raise CheckpointError(f"a tensor with an unreadable shape {size!r}") from None


def _rebuild_parameter(data, *rest):
    if isinstance(data, TensorRef):
        data.parameter = True
    return data


def _rebuild_from_type(func, new_type, args, state):
    return func(*args)  # func came from find_class: a rebuilder of this module or a stand-in


def _reconstructor(cls, base, state):  # copyreg's protocol-0/1 object rebuild
    if isinstance(cls, type) and issubclass(cls, Inert):
        obj = cls.__new__(cls)
        obj.args = (state,) if state is not None else ()
        return obj
    if cls in (dict, list, tuple, set, frozenset, collections.OrderedDict) and cls is base:
        return cls() if state is None else cls(state)
    raise CheckpointError(f"copyreg._reconstructor of {cls!r}: refused")


def _codecs_encode(text, encoding="utf-8"):  # protocol 2 writes bytes as encode(str, 'latin1')
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CheckpointError("_codecs.encode used for something other than bytes: refused")
    return text.encode("latin1")


def _numpy_dtype(spec, align=False, copy=False):
    import numpy as np

    if not isinstance(spec, str):
        raise CheckpointError(f"numpy dtype {spec!r}: refused")
    dt = np.dtype(spec)
    if dt.kind not in _NUMPY_KINDS:
        raise CheckpointError(f"numpy dtype {spec!r} (not numeric): refused")
    return dt  # pickle then calls the dtype's own __setstate__ (byte order), NumPy's C code


def _numpy_scalar(dtype, data=None):
    import numpy as np

    if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMPY_KINDS or not isinstance(data, bytes) \
            or len(data) != dtype.itemsize:
        raise CheckpointError("a numpy scalar of an unexpected kind: refused")
    return np.frombuffer(data, dtype=dtype)[0]


def _torch_device(*args):
    return ":".join(str(a) for a in args)


def _torch_size(dims=()):
    return tuple(int(d) for d in dims)


_SAFE = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("torch", "Size"): _torch_size,
    ("torch", "device"): _torch_device,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("_codecs", "encode"): _codecs_encode,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}
_BUILTINS = {t.__name__: t for t in (set, frozenset, list, dict, tuple, slice, complex, bytearray, int, float, bool, str)}
for _name, _type in _BUILTINS.items():  # value types only: never getattr, eval, open...
    _SAFE[("builtins", _name)] = _SAFE[("__builtin__", _name)] = _type


class _InertUnpickler(pickle.Unpickler):
    def __init__(self, file, stand_ins: set[str]):
        super().__init__(file, encoding="utf-8")
        self._stand_ins = stand_ins
        self._classes: dict[str, type] = {}

    def find_class(self, module: str, name: str):
        safe = _SAFE.get((module, name))
        if safe is not None:
            return safe
        if module == "torch" and name in _STORAGES:
            return _StorageKind(*_STORAGES[name])
        if module == "torch" and name in _TORCH_DTYPES:
            import torch

            return getattr(torch, name)
        qual = f"{module}.{name}"
        cls = self._classes.get(qual)
        if cls is None:  # one stand-in class per global, so objects of one class share a type
            cls = type(f"Inert[{qual}]", (Inert,), {"qualname": qual})
            self._classes[qual] = cls
            self._stand_ins.add(qual)
        return cls

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageKind)):
            raise CheckpointError(f"unexpected persistent id {str(pid)[:80]!r}")
        try:
            numel = int(pid[4])
        except (TypeError, ValueError):
            raise CheckpointError(f"storage {pid[2]!r} with an unreadable size") from None
        if numel < 0:
            raise CheckpointError(f"storage {pid[2]!r} with a negative size")
        return _StorageRef(pid[1], str(pid[2]), numel)


def read(path: str | Path) -> Checkpoint:
    """Parse the checkpoint at `path` (the zip format of torch >= 1.6) into an inert object tree.

    Raises CheckpointError (one line, naming the file) for anything that is not such a file."""
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except zipfile.BadZipFile:
        what = "empty" if path.is_file() and path.stat().st_size == 0 else "not a torch zip checkpoint"
        raise CheckpointError(f"{path}: {what} (truncated, or saved by torch < 1.6 or another tool)") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        pkl = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise CheckpointError(f"{path}: not a torch checkpoint (no single */data.pkl in the archive)")
        prefix = pkl[0][: -len("data.pkl")]
        order = zf.read(prefix + "byteorder").decode().strip() if prefix + "byteorder" in zf.namelist() else "little"
        if order != "little":
            raise CheckpointError(f"{path}: saved in {order}-endian byte order (not supported)")
        info = zf.getinfo(pkl[0])
        if info.file_size > MAX_PICKLE_BYTES:
            raise CheckpointError(f"{path}: object tree of {info.file_size} bytes (more than {MAX_PICKLE_BYTES}): refused")
        stand_ins: set[str] = set()
        try:
            root = _InertUnpickler(io.BytesIO(zf.read(pkl[0])), stand_ins).load()
        except CheckpointError as e:
            raise CheckpointError(f"{path}: {e}") from None
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError, KeyError,
                RecursionError, MemoryError, zipfile.BadZipFile, OSError) as e:
            raise CheckpointError(f"{path}: unreadable object tree ({type(e).__name__}: {str(e)[:120]})") from None
    except BaseException:
        zf.close()
        raise
    ck = Checkpoint(path, root, stand_ins, zf, prefix)
    _attach(root, ck, 0, set())
    return ck


def _children(obj):
    if isinstance(obj, dict):
        return list(obj.values())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return list(obj)
    if isinstance(obj, Inert):
        return [obj.state, *obj.args, *obj.items, *obj.entries.values()]
    return []


def _attach(obj, ck: Checkpoint, depth: int, seen: set[int]) -> None:
    if isinstance(obj, TensorRef):
        obj._source = ck
        return
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if depth > MAX_DEPTH:
        raise CheckpointError(f"{ck.path}: objects nested more than {MAX_DEPTH} deep: refused")
    for c in _children(obj):
        _attach(c, ck, depth + 1, seen)


def tensors(obj, prefix: str = "") -> dict[str, TensorRef]:
    """Every TensorRef under `obj` by dotted path: a dict's keys, a module stand-in's
    `_parameters`, persistent `_buffers` and `_modules` (as nn.Module.state_dict names them)."""
    out: dict[str, TensorRef] = {}
    _collect(obj, prefix, out, 0)
    return out


def _collect(obj, prefix: str, out: dict, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise CheckpointError(f"objects nested more than {MAX_DEPTH} deep")
    if isinstance(obj, TensorRef):
        out[prefix.rstrip(".")] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _collect(v, f"{prefix}{k}.", out, depth + 1)
    elif isinstance(obj, Inert) and "_modules" in obj.attrs:
        a = obj.attrs
        skip = a.get("_non_persistent_buffers_set") or set()
        for group in ("_parameters", "_buffers"):
            for k, v in (a.get(group) or {}).items():
                if v is not None and k not in skip:
                    _collect(v, f"{prefix}{k}.", out, depth + 1)
        for k, v in (a.get("_modules") or {}).items():
            if v is not None:
                _collect(v, f"{prefix}{k}.", out, depth + 1)


def plain(value, depth: int = 0):
    """A value of the file as plain Python: a Namespace (or any stand-in with attributes) as a
    dict, a Path as its string, NumPy scalars as numbers; TensorRefs and the rest unchanged."""
    if depth > MAX_DEPTH:
        raise CheckpointError(f"objects nested more than {MAX_DEPTH} deep")
    if isinstance(value, Inert):
        if value.qualname.startswith("pathlib.") and value.args and all(isinstance(a, str) for a in value.args):
            return os.path.join(*value.args)
        if value.attrs:
            return {k: plain(v, depth + 1) for k, v in value.attrs.items()}
        return value
    if isinstance(value, dict):
        return {k: plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v, depth + 1) for v in value)
    if hasattr(value, "item") and type(value).__module__ == "numpy":
        return value.item()
    return value
