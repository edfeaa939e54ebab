"""The package's shape, read from its source with `ast`: no import runs back up a floor, no two
modules import each other (directly or round a longer circle), no private name crosses a module.

A floor is a set of rooms (top-level modules or packages of patou); a module may import its own
floor and the floors below. Function-level (lazy) imports count like the others: a circle that
only closes at run time is still a circle. `patou/__init__.py` is the package's front door
(`__version__`, `patou.run`) and stands outside the floors.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "patou"

FLOORS = [
    {"record", "digest", "atomic", "options"},  # records, defaults, bytes on disk
    {"media", "video", "timestamps", "events", "decide"},  # pure steps on records
    {"models"},  # ONNX inference
    {"formats", "boxes", "results", "sort", "corrections", "blur"},  # files in and out, box sources
    {"pipeline", "ray_engine", "convert"},  # the analysis; torch -> ONNX conversion
    {"api", "train", "guard", "report"},  # the jobs
    {"evaluate", "reid"},  # jobs built on jobs
    {"web", "cli"},  # the faces
]


def modules() -> dict[str, Path]:
    """'patou.x.y' -> its file, for every module of the package."""
    out = {}
    for f in sorted(SRC.rglob("*.py")):
        parts = ("patou",) + f.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def imports(name: str, path: Path, known: dict) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for each import of a patou module in `path`;
    `from pkg import sub` counts as an import of the module pkg.sub."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("patou"):
                continue
            names = []
            for a in node.names:
                if f"{target}.{a.name}" in known:  # a submodule
                    found.append((f"{target}.{a.name}", [], node.lineno))
                else:
                    names.append(a.name)
            if names:
                found.append((target, names, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("patou")]
    return found


def room(module: str) -> str:
    return module.split(".")[1]


def floor(module: str) -> int:
    return next(i for i, rooms in enumerate(FLOORS) if room(module) in rooms)


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: {t for t, _, _ in imports(m, p, known) if t != "patou"} for m, p in known.items() if m != "patou"}


def test_every_room_is_on_a_floor():
    rooms = {room(m) for m in modules() if m != "patou"}
    placed = set().union(*FLOORS)
    assert rooms <= placed, f"rooms on no floor: {sorted(rooms - placed)}"
    assert len(placed) == sum(len(f) for f in FLOORS)  # a room on one floor only


def test_no_import_runs_back_up_a_floor():
    known = modules()
    up = []
    for m, path in known.items():
        if m == "patou":
            continue
        for target, _, line in imports(m, path, known):
            if target != "patou" and floor(target) > floor(m):
                up.append(f"{path.relative_to(SRC.parent)}:{line}: {m} (floor {floor(m)}) imports {target} "
                          f"(floor {floor(target)})")
    assert not up, "\n".join(up)


def circles(g: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of two or more modules (Tarjan), or one importing itself."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in g:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1 or v in g.get(v, ()):
                out.append(sorted(part))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_circle_of_imports():
    found = circles(graph())
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_private_name_crosses_a_module():
    known = modules()
    crossing = []
    for m, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = {}  # local name -> patou module it is bound to
        for target, names, line in imports(m, path, known):
            crossing += [f"{path.relative_to(SRC.parent)}:{line}: {n} from {target}"
                         for n in names if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))]
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for a in node.names:
                    full = (f"{node.module}.{a.name}" if isinstance(node, ast.ImportFrom) and node.module
                            else a.name)
                    if full in known or a.name in known:
                        aliases[a.asname or a.name.split(".")[0]] = full
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                crossing.append(f"{path.relative_to(SRC.parent)}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not crossing, "\n".join(crossing)


@pytest.mark.parametrize("bad", ["up", "circle", "private"])
def test_the_checks_catch_what_they_look_for(bad, tmp_path, monkeypatch):
    """The rules fail on a package that breaks them (so a passing run means something)."""
    pkg = tmp_path / "patou"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "__init__.py").write_text("")
    (pkg / "record.py").write_text({"up": "from patou.models import card\n",
                                    "circle": "from patou import media\n",
                                    "private": "from patou.media import _secret\n"}[bad])
    (pkg / "media.py").write_text("from patou.record import X\n_secret = 1\n" if bad == "circle" else "_secret = 1\n")
    (pkg / "models" / "card.py").write_text("")
    monkeypatch.setitem(globals(), "SRC", pkg)
    test = {"up": test_no_import_runs_back_up_a_floor, "circle": test_no_circle_of_imports,
            "private": test_no_private_name_crosses_a_module}[bad]
    with pytest.raises(AssertionError):
        test()
