"""pyproject.toml: every package-data glob ships real files, and the version has one source."""
from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_data_glob_matches_files(project):
    setuptools = project["tool"]["setuptools"]
    dirs = setuptools["package-dir"]
    for package, globs in setuptools["package-data"].items():
        assert package in setuptools["packages"]
        # a subpackage of a mapped package lives in its folder (lckd.model: LCKDSegmentation/lckd/model)
        top = next(p for p in sorted(dirs, key=len, reverse=True) if package == p or package.startswith(p + "."))
        folder = ROOT / dirs[top] / Path(*package[len(top):].split(".")[1:])
        for pattern in globs:
            matched = [p for p in folder.glob(pattern) if p.is_file()]
            assert matched, f"{package}: '{pattern}' matches no file in {folder}"


def test_the_wheel_ships_every_runtime_resource(project, monkeypatch):
    """Every file the core loads from its resources root (`lckd.model.resources.RUNTIME_FOLDERS`) is
    matched by a package-data glob, and the wheel takes them from the folder a checkout and the
    Slicer build use (the module's Resources/), not a copy."""
    from lckd.model.resources import RUNTIME_FOLDERS, resources_dir

    monkeypatch.delenv("LCKD_RESOURCES", raising=False)
    setuptools = project["tool"]["setuptools"]
    folder = ROOT / setuptools["package-dir"]["lckd._resources"]
    assert folder == ROOT / "LCKDSegmentation" / "Resources" == resources_dir()
    shipped = {p for pattern in setuptools["package-data"]["lckd._resources"] for p in folder.glob(pattern)}
    runtime = {p for name in RUNTIME_FOLDERS for p in (folder / name).rglob("*") if p.is_file()}
    assert runtime, f"no run-time resources under {folder}"
    missing = sorted(p.relative_to(folder).as_posix() for p in runtime - shipped)
    assert not missing, f"add to [tool.setuptools.package-data] lckd._resources: {missing}"


def test_version_comes_from_the_package(project):
    import lckd

    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "lckd.__version__"}
    assert lckd.__version__.count(".") == 2


def test_every_subpackage_is_shipped(project):
    """A wheel installs only the packages `packages` names: every folder of `lckd` with an
    `__init__.py` (the layers and `research.training`) is listed, and the entry point resolves."""
    core = ROOT / "LCKDSegmentation" / "lckd"
    on_disk = {".".join(("lckd",) + p.parent.relative_to(core).parts) for p in core.rglob("__init__.py")}
    listed = set(project["tool"]["setuptools"]["packages"]) - {"lckd._resources"}
    assert listed == on_disk, f"[tool.setuptools] packages: missing {sorted(on_disk - listed)}, " \
                              f"stale {sorted(listed - on_disk)}"
    module, _, function = project["project"]["scripts"]["lckd"].partition(":")
    import importlib

    assert callable(getattr(importlib.import_module(module), function))
