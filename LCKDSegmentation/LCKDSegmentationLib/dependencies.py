"""Python packages the worker needs inside Slicer: found on first use, installed after asking.

Never called at import time or from the module constructor (Slicer's guidance): the
widget calls `missing_packages()` when the module is first shown and `ensure()` when
the user presses Apply. PyTorch goes through the PyTorch extension (`PyTorchUtils`) when
it is installed, so the build matching the GPU and CUDA driver is chosen; everything else
comes from the module's `Resources/requirements.txt` (where Slicer's module template
keeps it), via `slicer.packaging` where this
Slicer has it and `slicer.util.pip_install` otherwise.

Packages Slicer itself ships (SimpleITK built against Slicer's ITK, numpy, scipy, vtk,
packaging, ...) are never reinstalled or upgraded: whatever version this Slicer has is
accepted, and every install gets a constraints file that pins them at their installed
versions, so a dependency of monai, deepbet or torch cannot replace them either: as `-c` for
`slicer.util.pip_install` (5.6-5.10), as `constraints=` for `slicer.packaging.pip_ensure`
(5.12), and as `PIP_CONSTRAINT` / `UV_CONSTRAINT` in the environment while the PyTorch
extension installs torch (its `installTorch` takes no constraints of its own). Replacing
Slicer's SimpleITK with a PyPI wheel breaks `sitkUtils` (it reads `slicer:` node
addresses through Slicer's own ITK IO) for every module, not just this one.
"""
from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.metadata
import importlib.util
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REQUIREMENTS_FILE = Path(__file__).resolve().parents[1] / "Resources" / "requirements.txt"
TORCH_REQUIREMENT = ">=2.0"
#: Import name of each distribution whose import name differs from it (lower-cased key).
_IMPORT_NAMES = {"simpleitk": "SimpleITK"}


#: Distributions a Slicer installation ships in its own Python (SuperBuild/External_*.cmake):
#: accepted at any installed version, never reinstalled, and pinned while pip runs.
BUNDLED_WITH_SLICER = ("SimpleITK", "numpy", "scipy", "vtk", "packaging", "pip", "setuptools", "wheel",
                       "requests", "urllib3", "certifi", "idna", "charset-normalizer", "chardet", "pydicom",
                       "pillow", "six", "pyparsing", "GitPython", "gitdb", "smmap", "PyGithub")
_BUNDLED_KEYS = {re.sub(r"[-_.]+", "-", n).lower() for n in BUNDLED_WITH_SLICER}


class DependencyError(RuntimeError):
    """Packages are missing and were not installed; the message says how to install them."""


def read_requirements(path: str | Path = REQUIREMENTS_FILE) -> list[str]:
    """Requirement lines of `requirements.txt` (comments and blanks dropped)."""
    lines = (line.split("#", 1)[0].strip() for line in Path(path).read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def distribution_name(requirement: str) -> str:
    """The PEP 508 name at the start of a requirement line."""
    return re.split(r"[\s<>=!~;\[@]", requirement, maxsplit=1)[0]


def is_bundled(requirement: str) -> bool:
    """True for a distribution Slicer ships itself (compared by normalised name)."""
    return re.sub(r"[-_.]+", "-", distribution_name(requirement)).lower() in _BUNDLED_KEYS


def _importable(name: str, path: Sequence[str] | None) -> bool:
    """Whether `name` can be imported from `path` (None: sys.path), without importing it."""
    module = _IMPORT_NAMES.get(name.lower(), name)
    if path is None:
        return importlib.util.find_spec(module) is not None
    return importlib.machinery.PathFinder.find_spec(module, list(path)) is not None


def _installed_version(name: str, path: Sequence[str] | None) -> str | None:
    """Version from the pip metadata of `name` found on `path` (None: sys.path), if any."""
    if path is None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None
    key = re.sub(r"[-_.]+", "-", name).lower()
    for dist in importlib.metadata.distributions(path=list(path)):
        if re.sub(r"[-_.]+", "-", dist.metadata["Name"] or "").lower() == key:
            return dist.version
    return None


def _satisfied(requirement: str, path: Sequence[str] | None = None) -> bool:
    name = distribution_name(requirement)
    if not _importable(name, path):
        return False
    if is_bundled(requirement):
        return True   # Slicer's own copy: whatever version it is, it is the one to use
    try:  # also catch a too-old version, where the tools to tell are available
        from packaging.requirements import Requirement
    except ImportError:
        return True
    installed = _installed_version(name, path)
    if installed is None:
        return True  # importable but not pip-installed: accept it
    spec = Requirement(requirement).specifier
    return not spec or spec.contains(installed, prereleases=True)


def missing_packages(requirements: list[str] | None = None, path: Sequence[str] | None = None) -> list[str]:
    """Requirements not satisfied in this Python (or on `path`), torch first; imports none of them."""
    torch = "torch" + TORCH_REQUIREMENT
    missing = [] if _satisfied(torch, path) else [torch]   # absent, or older than TORCH_REQUIREMENT
    for requirement in read_requirements() if requirements is None else requirements:
        if not _satisfied(requirement, path):
            missing.append(requirement)
    return missing


@dataclass
class InstallPlan:
    """What an installation would do: `install` goes to pip, `pinned` are Slicer's own
    packages held at their installed versions (`name==version` constraint lines)."""

    install: list = field(default_factory=list)
    pinned: list = field(default_factory=list)

    def pip_arguments(self, constraints_file: str | Path) -> list[str]:
        """pip arguments: the constraints file (when anything is pinned), then the requirements."""
        return (["-c", str(constraints_file)] if self.pinned else []) + list(self.install)


def bundled_pins(path: Sequence[str] | None = None, names: Iterable[str] = BUNDLED_WITH_SLICER) -> list[str]:
    """`name==version` for each of Slicer's own packages installed here (or on `path`)."""
    pins = []
    for name in names:
        installed = _installed_version(name, path)
        if installed is not None:
            pins.append(f"{name}=={installed}")
    return pins


def install_plan(requirements: list[str], path: Sequence[str] | None = None) -> InstallPlan:
    """Plan installing `requirements` without touching what Slicer ships.

    A bundled package is installed only when it is missing altogether (never upgraded or
    replaced); every bundled package present is pinned for the whole pip run.
    """
    install = [r for r in requirements if not _satisfied(r, path)]
    return InstallPlan(install=install, pinned=bundled_pins(path))


def write_constraints(pins: list[str]) -> Path:
    """A constraints file holding `pins` (left in the temporary folder for pip to read)."""
    handle = tempfile.NamedTemporaryFile("w", prefix="lckd-slicer-constraints-", suffix=".txt",
                                         delete=False, encoding="utf-8")
    with handle:
        handle.write("# Packages Slicer ships: keep them as they are.\n" + "".join(p + "\n" for p in pins))
    return Path(handle.name)


@contextlib.contextmanager
def constraints_environment(pins: list[str]) -> Iterator[Path | None]:
    """While inside: pip and uv started by anyone (the PyTorch extension) read `pins` as
    constraints (`PIP_CONSTRAINT`, `UV_CONSTRAINT`); the environment is restored afterwards."""
    if not pins:
        yield None
        return
    path = write_constraints(pins)
    saved = {k: os.environ.get(k) for k in ("PIP_CONSTRAINT", "UV_CONSTRAINT")}
    os.environ.update(PIP_CONSTRAINT=str(path), UV_CONSTRAINT=str(path))
    try:
        yield path
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _pip_install_kept(slicer, requirements: list[str]) -> None:
    """`slicer.util.pip_install` of `requirements` with Slicer's own packages pinned."""
    plan = install_plan(requirements)
    if not plan.install:
        return
    slicer.util.pip_install(plan.pip_arguments(write_constraints(plan.pinned)) if plan.pinned else plan.install)


def manual_command() -> str:
    return f'PythonSlicer -m pip install torch -r "{REQUIREMENTS_FILE}"'


def ensure() -> None:
    """Install what is missing after the user agrees; raise DependencyError if still missing."""
    missing = missing_packages()
    if not missing:
        return
    import slicer

    if any(distribution_name(r) == "torch" for r in missing):
        _install_torch(slicer)
    others = [r for r in missing if distribution_name(r) != "torch"]
    if others:
        _install_requirements(slicer, others)
    importlib.invalidate_caches()  # let find_spec see what pip just added
    still = missing_packages()
    if still:
        raise DependencyError("LCKD Segmentation needs these Python packages: " + ", ".join(still)
                              + f". Install them from a terminal with: {manual_command()} , then restart Slicer.")


def _install_torch(slicer) -> None:
    try:
        import PyTorchUtils
    except ImportError:
        PyTorchUtils = None
    if PyTorchUtils is not None:
        with constraints_environment(bundled_pins()):   # torch must not bring its own numpy
            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True,
                                                                  torchVersionRequirement=TORCH_REQUIREMENT)
        if torch is None:
            raise DependencyError("PyTorch was not installed. Install it with the 'PyTorch Util' module "
                                  "(PyTorch extension), then press Apply again.")
        return
    if not slicer.util.confirmOkCancelDisplay(
            "LCKD Segmentation needs PyTorch, which is not installed.\n\n"
            "Install the CPU/GPU build pip chooses now (several hundred MB)? For a specific CUDA build, "
            "cancel and install the PyTorch extension from the Extensions Manager instead.",
            "Install PyTorch"):
        raise DependencyError("PyTorch is required. Install the PyTorch extension (Extensions Manager) "
                              "and use its 'PyTorch Util' module, or run: PythonSlicer -m pip install torch")
    _pip_install_kept(slicer, ["torch" + TORCH_REQUIREMENT])


def _install_requirements(slicer, requirements: list[str]) -> None:
    try:
        from slicer import packaging
    except ImportError:
        packaging = None
    if packaging is not None and hasattr(packaging, "pip_ensure"):
        # Checks, asks, installs with a progress dialog and offers a restart if needed;
        # Slicer's own packages held where they are, as on the older Slicers below.
        pins = bundled_pins()
        constraints = {"constraints": str(write_constraints(pins))} if pins else {}
        packaging.pip_ensure(packaging.load_requirements(str(REQUIREMENTS_FILE)), requester="LCKD Segmentation",
                             **constraints)
        return
    if not slicer.util.confirmOkCancelDisplay(
            "LCKD Segmentation needs these Python packages:\n\n  " + "\n  ".join(requirements)
            + "\n\nInstall them now? (This takes a few minutes; nothing else is changed.)",
            "Install Python packages"):
        raise DependencyError("Installation cancelled. The module needs: " + ", ".join(requirements)
                              + f". Install them later with: {manual_command()}")
    _pip_install_kept(slicer, requirements)


def missing_preprocess_packages(extractor: str | None = None) -> list[str]:
    """The brain extractor's requirement if it is not installed (raw scans need it; nothing else does)."""
    from lckd.base.optionchecks import BRAIN_EXTRACTOR_REQUIREMENTS, check_brain_extractor

    requirement = BRAIN_EXTRACTOR_REQUIREMENTS[check_brain_extractor(extractor)]
    return [] if _satisfied(requirement) else [requirement]


def ensure_preprocess(extractor: str | None = None) -> None:
    """Before segmenting raw scans: install the brain extractor after the user agrees; raise
    DependencyError if it is still missing. Asked only when raw-scan preprocessing is on, so
    users of skull-stripped data never download it."""
    missing = missing_preprocess_packages(extractor)
    if not missing:
        return
    import slicer

    if not slicer.util.confirmOkCancelDisplay(
            "Raw scans (skull not removed) need a brain extraction tool:\n\n  " + "\n  ".join(missing)
            + "\n\n(about 30 MB with what it needs; its network weights come with it, nothing is downloaded "
              "when it runs). Install it now?", "Install brain extraction"):
        raise DependencyError("Brain extraction is not installed, so raw scans cannot be prepared. Untick "
                              "'Raw scans' for skull-stripped input, or install it with: PythonSlicer -m pip "
                              "install " + " ".join(f'"{r}"' for r in missing))
    _pip_install_kept(slicer, missing)
    importlib.invalidate_caches()
    still = missing_preprocess_packages(extractor)
    if still:
        raise DependencyError("Brain extraction could not be installed: " + ", ".join(still)
                              + ". Install it from a terminal with: PythonSlicer -m pip install "
                              + " ".join(f'"{r}"' for r in still))

