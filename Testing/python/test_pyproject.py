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
        folder = ROOT / dirs[package]
        for pattern in globs:
            matched = [p for p in folder.glob(pattern) if p.is_file()]
            assert matched, f"{package}: '{pattern}' matches no file in {folder}"


def test_the_wheel_ships_every_runtime_resource(project, monkeypatch):
    """Every file the core loads from its resources root (`lckd.resources.RUNTIME_FOLDERS`) is
    matched by a package-data glob, and the wheel takes them from the folder a checkout and the
    Slicer build use (the module's Resources/), not a copy."""
    from lckd.resources import RUNTIME_FOLDERS, resources_dir

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
