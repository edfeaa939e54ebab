"""A publisher's training checkpoint (`{"args": {...}, "state_dict": {...}}`), read without running it.

`torch.load(weights_only=True)` reads plain checkpoints. A publisher may have pickled more into
`args` (an argparse Namespace, a Path, a NumPy scalar: what a training script has at hand), which
the safe loader refuses; then the file is read by the inert unpickler (unpickle.py), which runs
nothing from it. What the file names must still be data: a checkpoint whose pickle names anything
else (os.system, builtins.exec, a class of the publisher's code...) is refused as torch refuses it,
even though the inert reading ran none of it, because no honest training checkpoint needs it.

Nothing is allocated from the file's declarations here: `shapes()` is read from the pickle, and the
caller checks them against what it expects (the registry entry's width, depth, patch) before
`tensors()` reads a single weight.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from patou.convert import unpickle
from patou.convert.unpickle import CheckpointError

# globals a training script's `args` may hold: values, never behaviour
DATA_GLOBALS = frozenset({
    "argparse.Namespace",
    *(f"pathlib.{n}" for n in ("Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath")),
    "numpy.ndarray", "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    *(f"numpy.{n}" for n in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool_")),
    "datetime.datetime", "datetime.date", "datetime.timedelta", "datetime.timezone",
})


@dataclass
class PublisherCheckpoint:
    path: Path
    args: dict
    state: dict  # key -> torch.Tensor (torch read it) or unpickle.TensorRef (the inert reader did)
    reader: str
    refused: list[str] = field(default_factory=list)  # the globals torch's safe loader refused
    _inert: unpickle.Checkpoint | None = field(default=None, repr=False)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(int(s) for s in v.shape) for k, v in self.state.items()}

    def tensors(self) -> dict:
        """The weights as torch tensors (read from the archive only now, for the inert reader)."""
        return {k: v.tensor() if isinstance(v, unpickle.TensorRef) else v for k, v in self.state.items()}

    def close(self) -> None:
        if self._inert is not None:
            self._inert.close()

    def __enter__(self) -> "PublisherCheckpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _refused_globals(path: Path) -> list[str]:
    """What torch's own scan of the pickle names as unsafe (read from the opcodes; nothing runs)."""
    import torch

    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # an older torch, or a file its scanner cannot read: the stand-ins say it
        return []


def _layout(name: str, root) -> tuple[dict, dict]:
    if not isinstance(root, dict) or not isinstance(root.get("state_dict"), dict):
        raise CheckpointError(f"{name}: expected a dict with 'args' and 'state_dict' (a training checkpoint)")
    args = unpickle.plain(root.get("args") or {})
    if not isinstance(args, dict):
        raise CheckpointError(f"{name}: 'args' is {type(args).__name__}, expected a dict (a training checkpoint)")
    return args, root["state_dict"]


def _tensors_only(name: str, state: dict, kind: type) -> None:
    for k, v in state.items():
        if not isinstance(v, kind):
            raise CheckpointError(f"{name}: {str(k)[:60]} is {type(v).__name__}, not a tensor")


def read(path: str | Path, what: str = "--from") -> PublisherCheckpoint:
    """The checkpoint's args (plain values) and state_dict; CheckpointError, one line naming `what`
    and the file, when it is unreadable, not a training checkpoint, or holds code."""
    import torch

    from patou.convert.torch_files import RefusedPickle, load

    path = Path(path)
    name = f"{what} {path}".strip()
    try:  # tensors mapped from the file, not read: nothing allocated from its declarations yet
        root = load(path, what, mmap=True)
    except RefusedPickle as e:
        refusal = str(e)
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    else:
        args, state = _layout(name, root)
        _tensors_only(name, state, torch.Tensor)
        return PublisherCheckpoint(path, args, dict(state), "torch.load(weights_only=True)")
    try:
        ck = unpickle.read(path)
    except CheckpointError:
        raise CheckpointError(refusal) from None
    try:
        code = sorted(ck.stand_ins - DATA_GLOBALS)
        if code:  # the same words as torch's refusal: what it names could run, whoever reads it
            raise CheckpointError(f"{name}: refused, it holds {', '.join(code[:4])} besides tensors and plain data "
                                  "(loading that could run code)")
        args, state = _layout(name, ck.root)
        _tensors_only(name, state, unpickle.TensorRef)
        return PublisherCheckpoint(path, args, dict(state), "patou's inert unpickler",
                                   _refused_globals(path) or sorted(ck.stand_ins), ck)
    except BaseException:
        ck.close()
        raise


# ---------------------------------------------------------------- state_dict keys and shapes
def mismatches(shapes: dict[str, tuple], want: dict[str, tuple], prefix: str = "") -> list[str]:
    """What keeps `shapes` from being exactly `want`: unexpected, missing and misshapen keys (empty if none)."""
    extra, absent = sorted(set(shapes) - set(want)), sorted(set(want) - set(shapes))
    parts = []
    if extra:
        parts.append(f"unexpected keys {', '.join(prefix + k for k in extra[:5])}" + (" ..." if len(extra) > 5 else ""))
    if absent:
        parts.append(f"missing keys {', '.join(prefix + k for k in absent[:5])}" + (" ..." if len(absent) > 5 else ""))
    bad = [f"{prefix}{k} {tuple(shapes[k])} (expected {want[k]})" for k in want if k in shapes and tuple(shapes[k]) != want[k]]
    if bad:
        parts.append("shapes that do not fit: " + ", ".join(bad[:5]))
    return parts


def strip_prefix(state: dict, prefix: str) -> dict:
    stray = sorted(str(k) for k in state if not (isinstance(k, str) and k.startswith(prefix)))
    if stray:
        raise ValueError(f"unexpected keys without the {prefix!r} prefix: {', '.join(stray[:5])}")
    return {k[len(prefix):]: v for k, v in state.items()}


EXACT = ("patch", "classes", "registers")  # the rest of a network's limits are maxima


def check_limits(declared: dict[str, int], limits: dict) -> None:
    """ValueError unless the network the shapes declare is within `limits` (a registry entry's
    `network`: width, depth, mlp, grid at most; patch, classes, registers exactly)."""
    over = [f"{k} {declared[k]} ({'expected' if k in EXACT else 'at most'} {v})" for k, v in limits.items()
            if k in declared and (declared[k] != v if k in EXACT else declared[k] > v)]
    if over:
        raise ValueError("the tensors' shapes declare a network other than this model's: " + ", ".join(over))
