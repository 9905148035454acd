"""Rigid co-registration recovers a known rotation + shift of one modality (within 1 mm / 1 degree)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from lckd.inference import Segmenter
from lckd.prep.geometry import resample_onto
from lckd.prep.registration import register_inputs, register_rigid, transform_summary
from lckd.research.phantom import make_phantom

# BraTS geometry (240 x 240 x 155 at 1 mm): the case registration is for.
SHAPE, SPACING = (155, 240, 240), (1.0, 1.0, 1.0)


@pytest.fixture(scope="module")
def case():
    images, label = make_phantom(31, SHAPE, SPACING, origin=(-120.0, -120.0, -78.0)).to_sitk()
    return images, label


def _true_transform(images) -> sitk.Euler3DTransform:
    """5 deg about z, 3 deg about x, 2 deg about y, shifted (4, -3, 2.5) mm, about the volume's centre."""
    ref = images["T1ce"]
    centre = ref.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in ref.GetSize()])
    return sitk.Euler3DTransform(centre, math.radians(3), math.radians(2), math.radians(5), (4.0, -3.0, 2.5))


def _worst_error_mm(estimate: sitk.Transform, truth: sitk.Transform, fixed: sitk.Image, mask: np.ndarray) -> float:
    """Largest distance over brain voxels between truth(estimate(p)) and p (identity when exact)."""
    idx = np.argwhere(mask)[::97]
    worst = 0.0
    for z, y, x in idx:
        p = fixed.TransformIndexToPhysicalPoint((int(x), int(y), int(z)))
        q = truth.TransformPoint(estimate.TransformPoint(p))
        worst = max(worst, float(np.linalg.norm(np.subtract(q, p))))
    return worst


def test_recovers_a_known_rigid_motion_within_1mm_and_1_degree(case):
    images, _ = case
    truth = _true_transform(images)
    # moved(p) = FLAIR(truth(p)): the FLAIR as if the head had moved between the scans
    moved = resample_onto(images["FLAIR"], images["FLAIR"], truth)
    estimate = register_rigid(images["T1ce"], moved)
    # estimate maps fixed (T1ce) points into the moved FLAIR; truth maps them back
    angle, _ = transform_summary(_compose_euler(truth, estimate))
    assert angle < 1.0, angle
    brain = sitk.GetArrayFromImage(images["T1ce"]) > 0
    assert _worst_error_mm(estimate, truth, images["T1ce"], brain) < 1.0


def _compose_euler(outer: sitk.Euler3DTransform, inner: sitk.Euler3DTransform) -> sitk.Euler3DTransform:
    """outer(inner(p)) as one Euler3D transform (matrix product, translation by the image of 0)."""
    a = np.array(outer.GetMatrix()).reshape(3, 3) @ np.array(inner.GetMatrix()).reshape(3, 3)
    out = sitk.Euler3DTransform()
    out.SetMatrix(a.ravel().tolist())
    zero = outer.TransformPoint(inner.TransformPoint((0.0, 0.0, 0.0)))
    out.SetTranslation(zero)
    return out


def test_aligned_inputs_stay_put_and_a_motion_of_nothing_is_not_reported(case):
    images, _ = case
    notes: list = []
    out, transforms = register_inputs({"T1ce": images["T1ce"], "T2": images["T2"]}, "T1ce", notes=notes)
    angle, shift = transform_summary(transforms["T2"])
    assert angle < 0.5 and shift < 0.5, (angle, shift)
    assert out["T1ce"] is images["T1ce"]
    assert out["T2"].GetSize() == images["T1ce"].GetSize()
    assert notes == []            # "rotated 0.0 deg, shifted 0.0 mm" told a user nothing


def test_pipeline_with_register_realigns_a_moved_scan(case):
    """`segment(..., register=True)` puts a moved FLAIR back: the result matches the aligned run."""
    images, _ = case
    truth = _true_transform(images)
    moved = resample_onto(images["FLAIR"], images["FLAIR"], truth)
    seg = Segmenter.load("lckd-lite-phantom", device="cpu")      # phantom input: the phantom model
    aligned = seg.segment({"T1ce": images["T1ce"], "FLAIR": images["FLAIR"]})
    registered = seg.segment({"T1ce": images["T1ce"], "FLAIR": moved}, register=True)
    unregistered = seg.segment({"T1ce": images["T1ce"], "FLAIR": moved})
    # how far the FLAIR moved is information, not a warning
    assert any(n.startswith("FLAIR moved onto T1ce by co-registration: rotated") for n in registered.notes)
    assert not any("co-registration" in w for w in registered.warnings)
    a = sitk.GetArrayFromImage(aligned.labelmap) > 0
    r = sitk.GetArrayFromImage(registered.labelmap) > 0
    u = sitk.GetArrayFromImage(unregistered.labelmap) > 0

    from lckd.base.metrics import mask_dice as dice

    assert dice(a, r) > dice(a, u)
    assert dice(a, r) > 0.8
