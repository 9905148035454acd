"""The Slicer module's own source, parsed: what tests check where only Slicer's GUI could show it."""
from __future__ import annotations

import ast
from pathlib import Path

MODULE_PY = Path(__file__).resolve().parents[2] / "LCKDSegmentation" / "LCKDSegmentation.py"


def module_tree() -> ast.Module:
    return ast.parse(MODULE_PY.read_text(encoding="utf-8"))


def method(name: str, cls: str = "LCKDSegmentationWidget") -> ast.FunctionDef:
    """The method `name` of class `cls` in the module file."""
    klass = next(n for n in module_tree().body if isinstance(n, ast.ClassDef) and n.name == cls)
    return next(n for n in klass.body if isinstance(n, ast.FunctionDef) and n.name == name)


def source_of(name: str, cls: str | None = None) -> str:
    """The source text of function or method `name` (of class `cls`; anywhere in the file when None)."""
    if cls is not None:
        return ast.unparse(method(name, cls))
    for node in ast.walk(module_tree()):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return ast.unparse(node)
    raise AssertionError(f"no function {name} in {MODULE_PY.name}")


def calls(node: ast.AST) -> list[str]:
    """The called expressions inside `node`, as source text."""
    return [ast.unparse(n.func) for n in ast.walk(node) if isinstance(n, ast.Call)]
