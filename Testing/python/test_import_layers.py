"""The core's import graph, read with `ast` (nothing is imported), against the layer table.

`lckd` is split into subpackages, one per layer (DEVELOPERS.md, "Layers"). `LAYERS` says which
subpackages each may import; every other import between subpackages runs against the layers.
Nothing under `lckd/` imports anything of Slicer's (the application or its glue), and neither
the modules nor the subpackages import each other in a circle. Imports inside functions count:
a lazy import is still a dependency, it only moves the moment it is paid for.

The checker (`layer_problems`) takes the package folder, so the tests also run it on a small
made-up package with a deliberate violation and see it fail.
"""
from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "LCKDSegmentation" / "lckd"
#: Top-level names of the Slicer application and its glue; the core runs without them.
SLICER = {"slicer", "qt", "vtk", "ctk", "mrml", "LCKDSegmentationLib", "LCKDSegmentation"}

#: The layers, bottom up: each subpackage of `lckd` and the subpackages it may import (itself and
#: the `lckd` package, which holds only the version, are always allowed). The core (base, io, prep,
#: model, inference) never imports the research drivers or the front ends; the research drivers
#: never import the front ends; nothing imports upwards, so no circle between subpackages is possible.
LAYERS: dict[str, set[str]] = {
    "base": set(),
    "io": {"base"},
    "prep": {"base", "io"},
    "model": {"base", "io"},
    "inference": {"base", "io", "prep", "model"},
    "research": {"base", "io", "prep", "model", "inference"},
    "frontends": {"base", "io", "prep", "model", "inference", "research"},
}


def module_name(path: Path, core: Path = CORE) -> str:
    parts = path.relative_to(core.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def find_modules(core: Path) -> dict[str, Path]:
    """Dotted name -> file of every module of the package folder `core`."""
    return {module_name(p, core): p for p in sorted(core.rglob("*.py")) if "__pycache__" not in p.parts}


MODULES = find_modules(CORE)


def _module_level(tree: ast.AST):
    """The nodes of a module outside its functions: what importing it runs."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            yield from (n for child in node.orelse for n in (child, *_module_level(child)))
            continue
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield node
            yield from _module_level(node)


def imported_names(name: str, path: Path, lazy: bool = True, modules: dict[str, Path] = MODULES) -> set[str]:
    """Every module `path` imports as absolute dotted names: anywhere in the file, or with
    `lazy` False only those importing it imports (not those inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in (ast.walk(tree) if lazy else _module_level(tree)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found.add(source)
            # `from . import cases` imports the module lckd.prep.modelgrid, not a name of lckd
            found.update(f"{source}.{alias.name}" for alias in node.names if f"{source}.{alias.name}" in modules)
    return found


def core_edges(modules: dict[str, Path] = MODULES) -> dict[str, set[str]]:
    """lckd module -> the lckd modules it imports (a package's `__init__` stands for the package)."""
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in imported_names(name, path, modules=modules):
            while imported and imported not in modules:   # lckd.x.y where y is a name in lckd.x
                imported = imported.rpartition(".")[0]
            # a module's own packages are imported before it anyway: not an edge
            if imported and imported != name and not name.startswith(imported + "."):
                targets.add(imported)
        edges[name] = targets
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def layer_of(name: str) -> str | None:
    """The subpackage (layer) a module belongs to; None for the top-level package `lckd` itself."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def layer_problems(core: Path = CORE, layers: dict[str, set[str]] = LAYERS) -> list[str]:
    """Every way the package folder `core` breaks the layer rules, one line each (empty: none)."""
    modules = find_modules(core)
    edges = core_edges(modules)
    top = core.name
    problems = []
    for name in sorted(modules):
        layer = layer_of(name)
        if layer is None:
            continue
        if layer not in layers and (core / layer).is_dir():
            problems.append(f"{name}: {top}.{layer} is not a layer (add it to LAYERS or move the module)")
            continue
        for target in sorted(edges[name]):
            other = layer_of(target)
            if other is not None and other != layer and other not in layers[layer]:
                problems.append(f"{name} imports {target}: {layer} may not import {other}")
        slicer = sorted(n for n in imported_names(name, modules[name], modules=modules) if n.split(".")[0] in SLICER)
        problems += [f"{name} imports {n}: the core runs without Slicer" for n in slicer]
    loose = [p for p in core.glob("*.py") if p.name != "__init__.py"]
    problems += [f"{top}/{p.name}: a module outside every layer (put it in a subpackage)" for p in loose]
    package_edges = {layer: set() for layer in layers}
    for name, targets in edges.items():
        for target in targets:
            a, b = layer_of(name), layer_of(target)
            if a and b and a != b:
                package_edges.setdefault(a, set()).add(b)
    problems += [f"subpackages import each other in a circle: {c}" for c in cycles(package_edges)]
    problems += [f"modules import each other in a circle: {c}" for c in cycles(edges)]
    return problems


def test_the_layer_table_is_a_stack():
    """No circle in the table itself, and the core never reaches the research drivers or the front ends."""
    assert cycles({k: set(v) for k, v in LAYERS.items()}) == []
    for core in ("base", "io", "prep", "model", "inference"):
        assert not LAYERS[core] & {"research", "frontends"}, core
    assert "frontends" not in LAYERS["research"]
    on_disk = {p.name for p in CORE.iterdir() if (p / "__init__.py").is_file()}
    assert on_disk == set(LAYERS), "every subpackage of lckd is a layer of the table"


def test_the_package_keeps_its_layers():
    assert layer_problems() == []


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root / "pkg"


GOOD = {"__init__.py": "", "low/__init__.py": "", "low/a.py": "X = 1\n",
        "high/__init__.py": "", "high/b.py": "from ..low.a import X\n"}
SMALL = {"low": set(), "high": {"low"}}


@pytest.mark.parametrize("extra, expected", [
    ({"low/c.py": "def f():\n    from ..high import b\n"}, "pkg.low.c imports pkg.high.b: low may not import high"),
    ({"low/c.py": "import slicer\n"}, "pkg.low.c imports slicer: the core runs without Slicer"),
    ({"low/c.py": "from LCKDSegmentationLib import logic\n"}, "pkg.low.c imports LCKDSegmentationLib"),
    ({"loose.py": "X = 2\n"}, "pkg/loose.py: a module outside every layer"),
    ({"other/__init__.py": "", "other/d.py": ""}, "pkg.other: pkg.other is not a layer"),
    ({"high/c.py": "from . import d\n", "high/d.py": "from . import c\n"}, "modules import each other in a circle"),
])
def test_a_deliberate_violation_fails_the_check(tmp_path, extra, expected):
    assert layer_problems(_tree(tmp_path, GOOD), SMALL) == []
    problems = layer_problems(_tree(tmp_path, {**GOOD, **extra}), SMALL)
    assert any(expected in p for p in problems), problems


def test_a_circle_between_subpackages_is_found(tmp_path):
    tree = _tree(tmp_path, {**GOOD, "low/c.py": "from ..high.b import X\n"})
    problems = layer_problems(tree, {"low": {"high"}, "high": {"low"}})
    assert any("subpackages import each other in a circle: ['high', 'low']" in p for p in problems), problems


def test_the_graph_is_read():
    edges = core_edges()
    assert "lckd.frontends.cli" in edges and "lckd.research.training.command" in edges
    assert "lckd.frontends.batchcommand" in edges["lckd.frontends.cli"]   # a lazy import inside cmd_batch counts
    assert "lckd.prep.modelgrid" in edges["lckd.inference.segmenter"]   # `from ..prep import modelgrid`


def test_no_core_module_imports_the_command_line():
    importers = sorted(name for name, targets in core_edges().items() if "lckd.frontends.cli" in targets)
    assert importers == [], f"library modules importing the CLI front end: {importers}"


def test_no_core_module_imports_slicer():
    offenders = {name: sorted(n for n in imported_names(name, path) if n.split(".")[0] in SLICER)
                 for name, path in MODULES.items()}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_import_circle():
    assert cycles(core_edges()) == []


def test_a_circle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


#: Modules the Slicer GUI process imports (no torch, numpy or SimpleITK there before the
#: dependencies are installed): importing them imports the standard library and each other only.
STANDARD_LIBRARY_ONLY = ("lckd.io.atomicwrite", "lckd.base.errors", "lckd.io.filetypes", "lckd.io.pathcheck",
                         "lckd.frontends.protocol", "lckd.inference.options", "lckd.base.segments",
                         "lckd.base.optionchecks")
#: Importing a module first imports the packages above it: those must be as light.
LIGHT_PACKAGES = tuple(sorted({n.rpartition(".")[0] for n in STANDARD_LIBRARY_ONLY} - {"lckd"}))


def test_light_modules_import_only_the_standard_library():
    import sys

    stdlib = getattr(sys, "stdlib_module_names", None)
    if stdlib is None:   # Python 3.9
        import pytest
        pytest.skip("sys.stdlib_module_names needs Python 3.10")
    for name in STANDARD_LIBRARY_ONLY + LIGHT_PACKAGES:
        names = imported_names(name, MODULES[name], lazy=False)
        outside = sorted(n for n in names if n.split(".")[0] not in stdlib and n.split(".")[0] != "lckd")
        # the package `lckd`: a version; a light module's own package is imported anyway
        core = {n for n in names if n in MODULES} - set(STANDARD_LIBRARY_ONLY) - set(LIGHT_PACKAGES) - {"lckd"}
        assert not outside and not core, (name, outside, sorted(core))


def test_atomic_writing_has_its_own_module_and_the_old_names_still_import():
    from lckd.io import atomicwrite
    from lckd.io.imageio import atomic_path, read_image, shown_path, write_image  # noqa: F401

    assert atomic_path is atomicwrite.atomic_path
    writes_no_image = ("lckd.frontends.preview", "lckd.frontends.demo", "lckd.model.modelcard", "lckd.inference.record",
                       "lckd.model.registry", "lckd.frontends.cli")
    writers_only = [name for name, targets in core_edges().items()
                    if "lckd.io.imageio" in targets and name in writes_no_image]
    assert writers_only == [], "these write no images: import atomic_path from lckd.io.atomicwrite"
