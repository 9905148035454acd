"""Python packages the worker needs inside Slicer: found on first use, installed after asking.

Never called at import time or from the module constructor (Slicer's guidance): the
widget calls `missing_packages()` when the module is first shown and `ensure()` when
the user presses Apply. PyTorch goes through the PyTorch extension (`PyTorchUtils`) when
it is installed, so the build matching the GPU and CUDA driver is chosen; everything else
comes from the module's `Resources/requirements.txt` (where Slicer's module template
keeps it), via `slicer.packaging` where this
Slicer has it and `slicer.util.pip_install` otherwise.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

REQUIREMENTS_FILE = Path(__file__).resolve().parents[1] / "Resources" / "requirements.txt"
TORCH_REQUIREMENT = ">=2.0"
#: Import name of each distribution whose import name differs from it (lower-cased key).
_IMPORT_NAMES = {"simpleitk": "SimpleITK"}


class DependencyError(RuntimeError):
    """Packages are missing and were not installed; the message says how to install them."""


def read_requirements(path: str | Path = REQUIREMENTS_FILE) -> list[str]:
    """Requirement lines of `requirements.txt` (comments and blanks dropped)."""
    lines = (line.split("#", 1)[0].strip() for line in Path(path).read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def distribution_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]


def _satisfied(requirement: str) -> bool:
    name = distribution_name(requirement)
    if importlib.util.find_spec(_IMPORT_NAMES.get(name.lower(), name)) is None:
        return False
    try:  # also catch a too-old version, where the tools to tell are available
        from importlib.metadata import PackageNotFoundError, version

        from packaging.requirements import Requirement
    except ImportError:
        return True
    try:
        spec = Requirement(requirement).specifier
        return not spec or spec.contains(version(name), prereleases=True)
    except PackageNotFoundError:
        return True  # importable but not pip-installed (e.g. bundled with Slicer): accept it


def missing_packages(requirements: list[str] | None = None) -> list[str]:
    """Requirements not satisfied in this Python, torch first; imports none of them."""
    torch = "torch" + TORCH_REQUIREMENT
    missing = [] if _satisfied(torch) else [torch]   # absent, or older than TORCH_REQUIREMENT
    for requirement in read_requirements() if requirements is None else requirements:
        if not _satisfied(requirement):
            missing.append(requirement)
    return missing


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
    slicer.util.pip_install("torch" + TORCH_REQUIREMENT)


def _install_requirements(slicer, requirements: list[str]) -> None:
    try:
        from slicer import packaging
    except ImportError:
        packaging = None
    if packaging is not None and hasattr(packaging, "pip_ensure"):
        # Checks, asks, installs with a progress dialog and offers a restart if needed.
        packaging.pip_ensure(packaging.load_requirements(str(REQUIREMENTS_FILE)), requester="LCKD Segmentation")
        return
    if not slicer.util.confirmOkCancelDisplay(
            "LCKD Segmentation needs these Python packages:\n\n  " + "\n  ".join(requirements)
            + "\n\nInstall them now? (This takes a few minutes; nothing else is changed.)",
            "Install Python packages"):
        raise DependencyError("Installation cancelled. The module needs: " + ", ".join(requirements)
                              + f". Install them later with: {manual_command()}")
    slicer.util.pip_install(requirements)


def missing_preprocess_packages(extractor: str | None = None) -> list[str]:
    """The brain extractor's requirement if it is not installed (raw scans need it; nothing else does)."""
    from lckd.options import BRAIN_EXTRACTOR_REQUIREMENTS, check_brain_extractor

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
    slicer.util.pip_install(missing)
    importlib.invalidate_caches()
    still = missing_preprocess_packages(extractor)
    if still:
        raise DependencyError("Brain extraction could not be installed: " + ", ".join(still)
                              + ". Install it from a terminal with: PythonSlicer -m pip install "
                              + " ".join(f'"{r}"' for r in still))

