"""Python packages the worker needs inside Slicer: found on first use, installed after asking.

Never called at import time or from the module constructor (Slicer's guidance): the
widget calls `missing_packages()` when the module is first shown and, when the user presses
Apply (or *Reinstall / repair*), `plan_installation()`, the one place that decides what to
install: torch, the requirements, the brain extractor for raw scans. The panel shows the plan
in one confirmation and carries it out with `run_installation()`: pip runs through Slicer's
launcher with its output in the panel's log on every Slicer version, and
`replaced_while_loaded()` tells when a package this process had imported (torch) was replaced,
so that the panel offers a restart. PyTorch goes through the PyTorch extension (`PyTorchUtils`)
when it is installed, so the build matching the GPU and CUDA driver is chosen; everything else
comes from the module's `Resources/requirements.txt` (where Slicer's module template keeps it).
`ensure()` / `ensure_preprocess()` are the console's step-by-step equivalent (each step asks;
`slicer.packaging.pip_ensure` where this Slicer has it, `slicer.util.pip_install` otherwise).

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
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

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


def _pip_ensure_module(slicer):
    """Slicer's module with `pip_ensure`: `slicer.packaging` (5.12) or `slicer.pydeps` (its name in
    Slicer's developer guide on `main`, "new in 5.11"); None on Slicers without one."""
    import importlib

    for name in ("packaging", "pydeps"):
        module = getattr(slicer, name, None)
        if module is None:
            try:
                module = importlib.import_module(f"slicer.{name}")
            except ImportError:
                continue
        if hasattr(module, "pip_ensure"):
            return module
    return None


def _install_requirements(slicer, requirements: list[str]) -> None:
    packaging = _pip_ensure_module(slicer)
    if packaging is not None:
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



# --------------------------------------------------------------------------- one-step install (the panel)

@dataclass
class Installation:
    """Everything one install from the panel will do, shown in one confirmation.

    torch: ["torch>=2.0"] when PyTorch is missing (or too old), else []. torch_by_extension: the
    PyTorch extension's PyTorch Util installs it (it picks the build for the GPU and CUDA driver),
    else pip. packages: the module's requirements to install (`Resources/requirements.txt`).
    extractor: the brain extractor, when raw scans are selected. pinned: Slicer's own packages,
    held at their installed versions for every step. repair: reinstall `packages` and
    `extractor` even where present (files of an installation that went wrong are replaced).
    """

    torch: list = field(default_factory=list)
    torch_by_extension: bool = False
    packages: list = field(default_factory=list)
    extractor: list = field(default_factory=list)
    pinned: list = field(default_factory=list)
    repair: bool = False

    def is_empty(self) -> bool:
        return not (self.torch or self.packages or self.extractor)

    def pip_runs(self, constraints_file: str | Path) -> list[list[str]]:
        """The `pip install` argument lists of the pip steps, in order (torch by the PyTorch
        extension is not one of them). A repair first reinstalls the listed packages with
        --force-reinstall --no-deps, so that Slicer's own packages among their dependencies are
        never reinstalled, then installs normally, which adds any dependency that is missing."""
        pins = ["-c", str(constraints_file)] if self.pinned else []
        runs = []
        if self.torch and not self.torch_by_extension:
            runs.append(pins + self.torch)
        wanted = self.packages + self.extractor
        if wanted and self.repair:
            runs.append(["--force-reinstall", "--no-deps"] + pins + wanted)
        if wanted:
            runs.append(pins + wanted)
        return runs


def pytorch_extension_installed() -> bool:
    """Whether the PyTorch extension's PyTorchUtils module is loaded or can be imported (without importing it)."""
    if "PyTorchUtils" in sys.modules:
        return sys.modules["PyTorchUtils"] is not None
    return importlib.util.find_spec("PyTorchUtils") is not None


def plan_installation(raw_scans: bool = False, repair: bool = False, path: Sequence[str] | None = None,
                      torch_extension: bool | None = None) -> Installation:
    """What the panel's install step must do for this Python (or the site folders `path`): the
    one place that decides. Missing torch first (through the PyTorch extension when it is
    installed, `torch_extension` None: look), then the module's requirements that are missing,
    then the brain extractor when `raw_scans`. `repair`: every requirement of the module (and the
    extractor, when raw scans are selected or it is installed) is reinstalled; torch only if
    missing (the PyTorch Util module repairs PyTorch). Slicer's own packages are never planned
    for reinstallation: they are pinned."""
    torch = "torch" + TORCH_REQUIREMENT
    requirements = read_requirements()
    if repair:
        packages = [r for r in requirements if not is_bundled(r) or not _satisfied(r, path)]
    else:
        packages = [r for r in requirements if not _satisfied(r, path)]
    from lckd.base.optionchecks import BRAIN_EXTRACTOR_REQUIREMENTS, DEFAULT_BRAIN_EXTRACTOR

    extractor_req = BRAIN_EXTRACTOR_REQUIREMENTS[DEFAULT_BRAIN_EXTRACTOR]
    present = _satisfied(extractor_req, path)
    extractor = [extractor_req] if (raw_scans and not present) or (repair and (raw_scans or present)) else []
    by_extension = pytorch_extension_installed() if torch_extension is None else torch_extension
    return Installation(torch=[] if _satisfied(torch, path) else [torch], torch_by_extension=by_extension,
                        packages=packages, extractor=extractor, pinned=bundled_pins(path), repair=repair)


def installed_versions(path: Sequence[str] | None = None) -> dict[str, str]:
    """{normalised distribution name: version} of what is installed here (or on `path`)."""
    importlib.invalidate_caches()   # see what a pip process just changed
    dists = importlib.metadata.distributions() if path is None else importlib.metadata.distributions(path=list(path))
    return {re.sub(r"[-_.]+", "-", d.metadata["Name"] or "").lower(): d.version for d in dists if d.metadata["Name"]}


def _import_names(name: str, path: Sequence[str] | None) -> set[str]:
    """Top-level import names of distribution `name` (from its top_level.txt or file list; the
    distribution name itself as a last resort). Works on Python 3.9 (no packages_distributions)."""
    key = re.sub(r"[-_.]+", "-", name).lower()
    dists = importlib.metadata.distributions() if path is None else importlib.metadata.distributions(path=list(path))
    names = {_IMPORT_NAMES.get(key, key.replace("-", "_"))}
    for dist in dists:
        if re.sub(r"[-_.]+", "-", dist.metadata["Name"] or "").lower() != key:
            continue
        top = dist.read_text("top_level.txt")
        if top:
            names |= {line.strip() for line in top.splitlines() if line.strip()}
        for f in dist.files or []:
            first = f.parts[0]
            if not first.endswith((".dist-info", ".data")) and first != "..":
                names.add(first[:-3] if first.endswith(".py") else first)
    return names


def replaced_while_loaded(before: dict, after: dict, reinstalled: Iterable[str] = (),
                          path: Sequence[str] | None = None) -> list[str]:
    """Distributions this install replaced while this process had them imported: their version
    changed between the `installed_versions` snapshots `before` and `after`, or they were in
    `reinstalled` (a repair), and one of their import names is in `sys.modules`. The process
    still runs the old code (a torch that another extension imported, say): Slicer must restart.
    Returned as 'name old -> new' lines."""
    forced = {re.sub(r"[-_.]+", "-", distribution_name(r)).lower() for r in reinstalled}
    lines = []
    for name, new in sorted(after.items()):
        old = before.get(name)
        if old == new and name not in forced:
            continue
        loaded = [m for m in _import_names(name, path) if sys.modules.get(m) is not None]
        if loaded:
            lines.append(f"{name} {old or '(not installed)'} -> {new}")
    return lines


def run_pip(arguments: list[str], log: Callable[[str], None],
            launch: Callable[[list[str]], Any] | None = None, python: str | None = None) -> None:
    """`python -m pip install ARGUMENTS`, each output line handed to `log` as it comes (the panel
    shows it; Slicer's events are processed between lines by `log`). `launch` starts the process
    and returns it with its output on `.stdout` (Slicer: `slicer.util.launchConsoleProcess`,
    which gives PythonSlicer the right environment). Raises DependencyError when pip fails."""
    import shutil
    import subprocess

    command = [python or shutil.which("PythonSlicer") or sys.executable, "-m", "pip", "install", *arguments]
    if launch is None:
        def launch(cmd: list[str]) -> Any:
            return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log("$ pip install " + " ".join(arguments))
    proc = launch(command)
    for line in proc.stdout:
        log(line.rstrip())
    code = proc.wait()
    if code != 0:
        raise DependencyError(f"pip install {' '.join(arguments)} failed (exit status {code}); its output is "
                              f"in the panel's log. Manual alternative: {manual_command()}")


def run_installation(plan: Installation, log: Callable[[str], None],
                     launch: Callable[[list[str]], Any] | None = None) -> list[str]:
    """Carry out a confirmed `plan` without asking again: torch through the PyTorch extension
    (Slicer's packages pinned through PIP_CONSTRAINT / UV_CONSTRAINT) or pip, then the pip runs
    (`Installation.pip_runs`), their output to `log`. Returns what is still missing afterwards
    (`[]` when all is there) and raises DependencyError when a step fails or is declined."""
    constraints = write_constraints(plan.pinned) if plan.pinned else Path(os.devnull)
    if plan.torch and plan.torch_by_extension:
        import PyTorchUtils

        log("Installing PyTorch with the PyTorch extension (its output goes to Slicer's Python console)...")
        with constraints_environment(plan.pinned):
            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                                  torchVersionRequirement=TORCH_REQUIREMENT)
        if torch is None:
            raise DependencyError("PyTorch was not installed. Install it with the 'PyTorch Util' module "
                                  "(PyTorch extension), then press Apply again.")
    for arguments in plan.pip_runs(constraints):
        run_pip(arguments, log, launch=launch)
    importlib.invalidate_caches()   # let find_spec see what pip just added
    still = missing_packages() + (missing_preprocess_packages() if plan.extractor else [])
    return still
