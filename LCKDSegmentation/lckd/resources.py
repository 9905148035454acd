"""Where the bundled files (model registry, default model, sample case) live.

Three installs put them in different places: a source checkout (`<repo>/Resources`), a
Slicer extension install (`<module dir>/Resources`, where CMake copies them) and a wheel
(`lckd/_resources`). `LCKD_RESOURCES` overrides all three.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import ModelError

_HERE = Path(__file__).resolve().parent


def resources_dir() -> Path:
    """The folder holding `models/registry.json` (and `SampleData/`)."""
    candidates = []
    if os.environ.get("LCKD_RESOURCES"):
        candidates.append(Path(os.environ["LCKD_RESOURCES"]))
    candidates += [_HERE / "_resources", _HERE.parents[1] / "Resources", _HERE.parent / "Resources"]
    for c in candidates:
        if (c / "models" / "registry.json").is_file():
            return c
    raise ModelError("bundled resources not found (looked in: " + ", ".join(str(c) for c in candidates) + ")")


def cache_dir() -> Path:
    """Folder for downloaded models: $LCKD_CACHE_DIR, else $XDG_CACHE_HOME/lckd, else ~/.cache/lckd."""
    if os.environ.get("LCKD_CACHE_DIR"):
        return Path(os.environ["LCKD_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lckd"
