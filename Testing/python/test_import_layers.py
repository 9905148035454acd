"""The core's import graph, read with `ast` (nothing is imported): no module under `lckd/`
imports the `lckd` command line (a front end nothing depends on) or anything of Slicer's,
and the graph has no circle. Imports inside functions count: a lazy import is still a
dependency, it only moves the moment it is paid for."""
from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "LCKDSegmentation" / "lckd"
#: Top-level names of the Slicer application and its glue; the core runs without them.
SLICER = {"slicer", "qt", "vtk", "ctk", "mrml", "LCKDSegmentationLib", "LCKDSegmentation"}


def module_name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(CORE.rglob("*.py")) if "__pycache__" not in p.parts}


def _module_level(tree: ast.AST):
    """The nodes of a module outside its functions: what importing it runs."""
    for node in ast.iter_child_nodes(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield node
            yield from _module_level(node)


def imported_names(name: str, path: Path, lazy: bool = True) -> set[str]:
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
            # `from . import cases` imports the module lckd.cases, not a name of lckd
            found.update(f"{source}.{alias.name}" for alias in node.names if f"{source}.{alias.name}" in MODULES)
    return found


def core_edges() -> dict[str, set[str]]:
    """lckd module -> the lckd modules it imports (a package's `__init__` stands for the package)."""
    edges: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        targets = set()
        for imported in imported_names(name, path):
            while imported and imported not in MODULES:   # lckd.x.y where y is a name in lckd.x
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
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


def test_the_graph_is_read():
    edges = core_edges()
    assert "lckd.cli" in edges and "lckd.training.command" in edges
    assert "lckd.batch" in edges["lckd.cli"]          # a lazy import inside cmd_batch counts
    assert "lckd.cases" in edges["lckd.inference"]    # `from . import cases`


def test_no_core_module_imports_the_command_line():
    importers = sorted(name for name, targets in core_edges().items() if "lckd.cli" in targets)
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
STANDARD_LIBRARY_ONLY = ("lckd.atomicwrite", "lckd.errors", "lckd.filetypes", "lckd.pathcheck", "lckd.protocol",
                         "lckd.segmentoptions", "lckd.segments", "lckd.options")


def test_light_modules_import_only_the_standard_library():
    import sys

    stdlib = getattr(sys, "stdlib_module_names", None)
    if stdlib is None:   # Python 3.9
        import pytest
        pytest.skip("sys.stdlib_module_names needs Python 3.10")
    for name in STANDARD_LIBRARY_ONLY:
        names = imported_names(name, MODULES[name], lazy=False)
        outside = sorted(n for n in names if n.split(".")[0] not in stdlib and n.split(".")[0] != "lckd")
        core = {n for n in names if n in MODULES} - set(STANDARD_LIBRARY_ONLY) - {"lckd"}  # the package: a version
        assert not outside and not core, (name, outside, sorted(core))


def test_atomic_writing_has_its_own_module_and_the_old_names_still_import():
    from lckd import atomicwrite
    from lckd.imageio import atomic_path, read_image, shown_path, write_image  # noqa: F401

    assert atomic_path is atomicwrite.atomic_path
    writers_only = [name for name, targets in core_edges().items()
                    if "lckd.imageio" in targets and name in ("lckd.preview", "lckd.demo", "lckd.modelcard",
                                                               "lckd.provenance", "lckd.registry", "lckd.cli")]
    assert writers_only == [], "these write no images: import atomic_path from lckd.atomicwrite"
