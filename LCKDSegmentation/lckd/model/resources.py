"""Where the bundled files (model registry, bundled models, sample case) live, and the sample case.

One folder holds them: the Slicer module's `LCKDSegmentation/Resources/` (beside its icon,
UI and requirements), which every install reaches without copying files between folders:

- a source checkout, an editable install, a Slicer build and a Slicer extension install find
  it next to this package (`lckd/../Resources`): the Slicer build lists its files in the
  module's `MODULE_PYTHON_RESOURCES`, like the icon;
- a wheel carries it inside the package as `lckd/_resources` (pyproject maps the folder
  there), because a wheel can only install files that belong to a package.

`LCKD_RESOURCES` overrides both. The top-level `Resources/` of the repository holds only
what the extension catalogue shows (screenshots); nothing loads it at run time.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..base.errors import ModelError

if TYPE_CHECKING:
    from ..io.caselayout import CaseFiles

#: The `lckd` package folder (this module is `lckd/model/resources.py`).
_PACKAGE = Path(__file__).resolve().parents[1]

#: The folders of the resources root that the core loads at run time (what a wheel must carry).
RUNTIME_FOLDERS = ("models", "SampleData")


def resources_dir() -> Path:
    """The folder holding `models/registry.json` and `SampleData/`."""
    candidates = []
    if os.environ.get("LCKD_RESOURCES"):
        candidates.append(Path(os.environ["LCKD_RESOURCES"]))
    candidates += [_PACKAGE / "_resources", _PACKAGE.parent / "Resources"]
    for c in candidates:
        if (c / "models" / "registry.json").is_file():
            return c
    raise ModelError("bundled resources not found (looked in: " + ", ".join(str(c) for c in candidates) + ")")


def sample_cases() -> list[CaseFiles]:
    """The bundled sample cases: every BraTS-layout case folder under `<resources>/SampleData/`,
    sorted by id ([] when there is no such folder). Standard library only, so Slicer can list
    them at start-up."""
    from ..io.caselayout import find_cases

    folder = resources_dir() / "SampleData"
    return find_cases(folder) if folder.is_dir() else []


def sample_case() -> CaseFiles:
    """The bundled sample case the demo runs (the first of `sample_cases`), with its ground truth."""
    cases = [c for c in sample_cases() if c.label is not None]
    if not cases:
        raise ModelError(f"no bundled sample case with a label under {resources_dir() / 'SampleData'}")
    return cases[0]


def cache_dir() -> Path:
    """Folder for downloaded models: $LCKD_CACHE_DIR, else $XDG_CACHE_HOME/lckd, else ~/.cache/lckd."""
    if os.environ.get("LCKD_CACHE_DIR"):
        return Path(os.environ["LCKD_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lckd"
