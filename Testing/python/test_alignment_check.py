"""Misalignment warning (issue 12.5): scans that look misregistered against the reference are
flagged (suggesting --register), co-registered ones are not; registration skips the check.

Real SimpleITK images throughout: a BraTS-sized phantom (always) and the real shared BraTS
cases (skipped when ../shared/data is absent).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import SimpleITK as sitk

from conftest import needs_shared_data, shared_data
from lckd.base.modalities import canonical, default_reference
from lckd.inference.inputchecks import check_alignment
from lckd.io.imageio import read_image
from lckd.prep.geometry import resample_onto
from lckd.research.phantom import make_phantom

DATA = shared_data()
REAL_CASE = shared_data("real", "BraTS-GLI-00001-000")


def moved(image: sitk.Image, degrees: float, mm: float) -> sitk.Image:
    """`image` rigidly moved (about the volume's centre) by `degrees` and `mm`, on its own grid."""
    centre = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])
    axis = [0.6, 0.3, 0.74]
    norm = math.sqrt(sum(a * a for a in axis))
    angles = [math.radians(degrees) * a / norm for a in axis]
    direction = [0.8, -0.5, 0.33]
    dnorm = math.sqrt(sum(d * d for d in direction))
    shift = tuple(mm * d / dnorm for d in direction)
    return resample_onto(image, image, sitk.Euler3DTransform(centre, *angles, shift))


def misaligned(warnings) -> list:
    return [w for w in warnings if "misaligned" in w]


@pytest.fixture(scope="module")
def phantom():
    """A BraTS-sized phantom (240 x 240 x 155 at 1 mm), all four scans co-registered."""
    images, _ = make_phantom(5, (155, 240, 240)).to_sitk()
    return images


def test_phantom_aligned_gives_no_warning_and_is_quick(phantom):
    t = time.process_time()
    warnings = check_alignment(phantom, "T1ce")
    cpu = time.process_time() - t
    assert warnings == []
    assert cpu < 1.0, cpu   # four 240x240x155 scans; ~0.2 s CPU when measured


@pytest.mark.parametrize("degrees,mm", [(6, 8), (0, 4), (3, 4)])
def test_phantom_shifted_scan_is_flagged(phantom, degrees, mm):
    images = dict(phantom, FLAIR=moved(phantom["FLAIR"], degrees, mm))
    warnings = check_alignment(images, "T1ce")
    assert len(warnings) == 1, warnings
    w = warnings[0]
    assert w.startswith("FLAIR looks misaligned with T1ce")
    assert "--register" in w and "Dice" in w and "mm apart" in w   # says what was measured and the fix


def test_a_field_of_view_cut_short_on_the_same_grid_is_judged_where_both_scans_reach(phantom):
    """A co-registered FLAIR whose rows beyond 70 % of the head were never acquired (zeros on the
    same grid, as a BraTS case's cut FLAIR is): no warning; the same cut FLAIR moved: warned."""
    import numpy as np

    flair = sitk.GetArrayFromImage(phantom["FLAIR"])
    rows = np.flatnonzero(flair.any(axis=(0, 2)))
    flair[:, rows[0] + int(0.7 * (rows[-1] - rows[0])):, :] = 0
    cut = sitk.GetImageFromArray(flair)
    cut.CopyInformation(phantom["FLAIR"])
    assert check_alignment({"T1ce": phantom["T1ce"], "FLAIR": cut}, "T1ce") == []
    for degrees, mm in ((6, 8), (0, 6)):
        warnings = check_alignment({"T1ce": phantom["T1ce"], "FLAIR": moved(cut, degrees, mm)}, "T1ce")
        assert len(misaligned(warnings)) == 1, (degrees, mm, warnings)


def test_scan_on_another_grid_is_judged_inside_its_field_of_view(phantom):
    """A co-registered scan covering only the upper half, on a coarser grid: no warning; moved: warned."""
    flair = phantom["FLAIR"]
    half = flair[:, :, flair.GetSize()[2] // 2:]                 # upper half of the slices
    coarse = sitk.Resample(half, [120, 120, 39], sitk.Transform(), sitk.sitkLinear, half.GetOrigin(),
                           (2.0, 2.0, 2.0), half.GetDirection(), 0.0, sitk.sitkFloat32)
    assert check_alignment({"T1ce": phantom["T1ce"], "FLAIR": coarse}, "T1ce") == []
    shifted = resample_onto(moved(half, 6, 8), coarse)
    assert len(check_alignment({"T1ce": phantom["T1ce"], "FLAIR": shifted}, "T1ce")) == 1


def test_pipeline_warns_without_register_and_not_with_it(segmenter):
    """Through Segmenter.segment (what the CLI, batch, worker and Slicer run)."""
    images, _ = make_phantom(7, (64, 80, 80)).to_sitk()
    inputs = {"T1ce": images["T1ce"], "FLAIR": moved(images["FLAIR"], 6, 8)}
    assert misaligned(segmenter.segment({"T1ce": images["T1ce"], "FLAIR": images["FLAIR"]}).warnings) == []
    assert len(misaligned(segmenter.segment(inputs).warnings)) == 1
    registered = segmenter.segment(inputs, register=True)
    assert misaligned(registered.warnings) == []


def _real_cases() -> list:
    roots = [DATA / "brats-labelled", DATA / "real"]
    return sorted(p for r in roots if r.is_dir() for p in r.iterdir() if p.is_dir())


def _read_case(folder: Path) -> dict:
    images = {}
    for f in sorted(folder.glob("*.nii.gz")):
        tag = f.name[:-len(".nii.gz")].replace("-", "_").rsplit("_", 1)[-1]
        if tag != "seg":
            images[canonical(tag)] = read_image(str(f), what=tag)
    return images


@needs_shared_data("real", "BraTS-GLI-00001-000")
def test_real_case_aligned_passes_and_shifted_is_flagged():
    images = _read_case(REAL_CASE)
    assert check_alignment(images, "T1ce") == []
    shifted = dict(images, FLAIR=moved(images["FLAIR"], 6, 8))
    warnings = check_alignment(shifted, "T1ce")
    assert len(warnings) == 1 and warnings[0].startswith("FLAIR looks misaligned with T1ce"), warnings


@pytest.mark.skipif(not _real_cases(), reason=f"shared BraTS cases not available under {DATA}")
def test_no_warning_on_any_coregistered_real_case():
    """Every shared case (four scans, FLAIR + T1ce only, z-scored, T1 only): zero warnings."""
    flagged = {}
    for folder in _real_cases():
        images = _read_case(folder)
        warnings = check_alignment(images, default_reference(images))
        if warnings:
            flagged[folder.name] = warnings
    assert flagged == {}
