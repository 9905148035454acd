"""Rigid co-registration of MR modalities (SimpleITK, Mattes mutual information).

Used when the inputs of one patient are not already aligned (e.g. scans from different
sessions). Mutual information needs no intensity relation between the two images, so a
FLAIR registers onto a T1ce directly.

Choices, and why:
- Euler3D (rotation + translation) about the fixed foreground's centroid: the scans are of
  one head (no scaling or shear), and rotating about the brain's centre keeps rotation and
  translation nearly independent for the optimiser.
- Start from the scanner coordinates (same-session scans are already nearly aligned in
  physical space) *or* from aligned foreground centroids (moments), whichever the metric
  prefers: the first is right for same-scanner data, the second rescues unrelated origins.
- Our own pyramid at about 4, 2 and 1 mm: each image is block-averaged (`BinShrink`, per
  axis, so anisotropic scans are handled) and lightly smoothed once per level. Registering
  small images is what keeps a BraTS-size pair at a few seconds on one core.
- A fixed number of random metric samples per level, drawn inside the fixed image's
  foreground, with a fixed seed: reproducible results, cost independent of image size.
- Regular-step gradient descent with scales from physical shifts (one step is about one
  millimetre whether it turns or shifts); each level starts with steps of half its voxel
  size, so the fine levels polish the coarse result instead of jumping away from it.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk

from ..base.errors import InputError, itk_error_detail
from .foreground import nonzero_unless_noisy
from .geometry import resample_onto

Progress = Optional[Callable[[float, str], None]]

__all__ = ["register_rigid", "register_inputs", "transform_summary", "LEVEL_SPACINGS_MM"]

#: Voxel size (mm) of each resolution level, coarse to fine (never finer than the fixed image).
LEVEL_SPACINGS_MM: tuple[float, ...] = (4.0, 2.0, 1.0)
#: Random metric samples kept per level (inside the fixed foreground).
SAMPLES_PER_LEVEL = 40_000
#: Most iterations per level; the optimiser usually stops earlier on its step-size criterion.
MAX_ITERATIONS = 100
#: Step shrink factor when the gradient turns back, and the smallest step (fraction of a
#: level voxel). A slow shrink lets the optimiser cross the narrow valley where rotation
#: and translation trade off, instead of stopping half-way after a few reversals.
RELAXATION = 0.8
MIN_STEP = 0.005
#: Background margin (mm) kept around the fixed foreground where metric samples are drawn.
MASK_MARGIN_MM = 4.0
#: Seed of the random sampling (reproducible results).
SEED = 20231003
#: Fewest voxels a shrunk axis keeps (small test images are shrunk less).
_MIN_LEVEL_VOXELS = 12


def _centroid(image: sitk.Image, mask: np.ndarray) -> np.ndarray | None:
    """Physical centroid of a (z, y, x) mask on `image`'s grid, or None if empty."""
    n = np.count_nonzero(mask)
    if n == 0:
        return None
    # Axis sums avoid listing millions of coordinates.
    idx = []
    for axis in (2, 1, 0):  # x, y, z index order for ITK
        others = tuple(a for a in range(3) if a != axis)
        prof = mask.sum(axis=others)
        idx.append(float(np.dot(np.arange(prof.size), prof)) / n)
    return np.array(image.TransformContinuousIndexToPhysicalPoint(idx))


def _factors(image: sitk.Image, target_mm: float) -> list[int]:
    return [max(1, min(int(round(target_mm / s)), n // _MIN_LEVEL_VOXELS or 1))
            for s, n in zip(image.GetSpacing(), image.GetSize())]


def _level(image: sitk.Image, target_mm: float) -> sitk.Image:
    """`image` block-averaged to about `target_mm` voxels, lightly smoothed against aliasing."""
    f = _factors(image, target_mm)
    if max(f) == 1:
        return image
    small = sitk.BinShrink(image, f)
    # Block averaging is a box filter; a Gaussian of ~a third of the level's voxel on top
    # removes most of the remaining aliasing (cheap: the image is small now).
    return sitk.SmoothingRecursiveGaussian(small, [s / 3.0 for s in small.GetSpacing()])


def _level_mask(mask: sitk.Image, target_mm: float) -> sitk.Image:
    """The foreground mask on the level's grid, dilated by about MASK_MARGIN_MM.

    The margin matters: with samples strictly inside the fixed brain, the brain's outline
    barely shapes the metric and the optimum drifts by a millimetre or more (measured);
    with a few millimetres of background around it the outline pins the alignment.
    """
    f = _factors(mask, target_mm)
    if max(f) > 1:
        # a block touching the foreground counts
        mask = sitk.Cast(sitk.BinShrink(sitk.Cast(mask, sitk.sitkFloat32), f) > 0, sitk.sitkUInt8)
    radius = [max(1, int(round(MASK_MARGIN_MM / s))) for s in mask.GetSpacing()]
    return sitk.BinaryDilate(mask, radius)


def _levels(fixed: sitk.Image) -> list[float]:
    finest = min(fixed.GetSpacing())
    levels: list[float] = []
    seen = set()
    for target in LEVEL_SPACINGS_MM:
        target = max(target, finest)
        key = tuple(_factors(fixed, target))
        if key not in seen:
            seen.add(key)
            levels.append(target)
    return levels


def _as_euler(tx: sitk.Transform) -> sitk.Euler3DTransform:
    """The Euler3D transform inside what ImageRegistrationMethod returns."""
    if isinstance(tx, sitk.CompositeTransform):
        tx = tx.GetNthTransform(tx.GetNumberOfTransforms() - 1)
    return sitk.Euler3DTransform(tx)


def register_rigid(fixed: sitk.Image, moving: sitk.Image, *, progress: Progress = None,
                   use_masks: bool = True, seed: int = SEED) -> sitk.Euler3DTransform:
    """Rigid transform mapping points of `fixed` onto `moving` (ITK's convention).

    Resample `moving` onto `fixed` with it: `geometry.resample_onto(moving, fixed, tx)`.
    `use_masks` draws metric samples inside the fixed image's non-zero voxels (the brain of
    skull-stripped data). `progress(fraction, message)` is called during the optimisation.
    """
    if fixed.GetDimension() != 3 or moving.GetDimension() != 3:
        raise InputError("registration needs two 3D images")
    fixed = sitk.Cast(fixed, sitk.sitkFloat32)
    moving = sitk.Cast(moving, sitk.sitkFloat32)
    fixed_fg = nonzero_unless_noisy(sitk.GetArrayViewFromImage(fixed))
    moving_fg = nonzero_unless_noisy(sitk.GetArrayViewFromImage(moving))

    centre = _centroid(fixed, fixed_fg)
    if centre is None:
        centre = np.array(fixed.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in fixed.GetSize()]))
    candidates = [sitk.Euler3DTransform(centre.tolist(), 0.0, 0.0, 0.0, (0.0, 0.0, 0.0))]
    moving_centre = _centroid(moving, moving_fg)
    if moving_centre is not None and np.linalg.norm(moving_centre - centre) > 1.0:
        candidates.append(sitk.Euler3DTransform(centre.tolist(), 0.0, 0.0, 0.0, (moving_centre - centre).tolist()))

    fixed_mask = None
    if use_masks and fixed_fg.any():
        fixed_mask = sitk.GetImageFromArray(fixed_fg.astype(np.uint8))
        fixed_mask.CopyInformation(fixed)

    levels = _levels(fixed)
    transform = candidates[0]
    for k, target in enumerate(levels):
        f_img, m_img = _level(fixed, target), _level(moving, target)
        reg = sitk.ImageRegistrationMethod()
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
        # Gradients at the sample points only, not gradient images of whole volumes.
        reg.SetMetricUseFixedImageGradientFilter(False)
        reg.SetMetricUseMovingImageGradientFilter(False)
        if fixed_mask is not None:
            mask = _level_mask(fixed_mask, target)
            reg.SetMetricFixedMask(mask)
            domain = float(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
        else:
            domain = float(np.prod(f_img.GetSize()))
        # ITK draws this fraction of the grid at random and drops the samples outside the
        # mask, so p * domain samples are kept.
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(float(np.clip(SAMPLES_PER_LEVEL / max(domain, 1.0), 1e-4, 1.0)), seed + k)
        reg.SetInterpolator(sitk.sitkLinear)
        if k == 0 and len(candidates) > 1:
            values = []
            for cand in candidates:
                reg.SetInitialTransform(cand, inPlace=False)
                values.append(reg.MetricEvaluate(f_img, m_img))
            transform = candidates[int(np.argmin(values))]
        voxel = max(f_img.GetSpacing())
        reg.SetOptimizerAsRegularStepGradientDescent(
            learningRate=0.5 * voxel, minStep=MIN_STEP * voxel, numberOfIterations=MAX_ITERATIONS,
            relaxationFactor=RELAXATION, gradientMagnitudeTolerance=1e-8)
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetInitialTransform(sitk.Euler3DTransform(transform), inPlace=False)
        if progress is not None:
            def on_iteration(reg=reg, k=k):
                # The optimiser usually stops well before MAX_ITERATIONS: a rough fraction is enough.
                done = min(1.0, reg.GetOptimizerIteration() / 30.0)
                progress((k + done) / len(levels), f"registering: level {k + 1} of {len(levels)}")
            reg.AddCommand(sitk.sitkIterationEvent, on_iteration)
        try:
            transform = _as_euler(reg.Execute(f_img, m_img))
        except RuntimeError as exc:
            raise InputError(f"rigid registration failed ({itk_error_detail(exc) or 'no detail'})") from None
    if progress is not None:
        progress(1.0, "registered")
    return transform


def transform_summary(tx: sitk.Transform) -> tuple[float, float]:
    """(rotation angle in degrees, translation length in mm) of a rigid transform."""
    euler = _as_euler(tx)
    matrix = np.array(euler.GetMatrix()).reshape(3, 3)
    angle = math.degrees(math.acos(float(np.clip((np.trace(matrix) - 1.0) / 2.0, -1.0, 1.0))))
    return angle, float(np.linalg.norm(euler.GetTranslation()))


#: Motion below both of these is not reported (a registration of aligned scans moves them by
#: a fraction of a voxel: "rotated 0.0 deg, shifted 0.0 mm" told the user nothing).
NOTE_DEGREES, NOTE_MM = 1.0, 1.0


def register_inputs(images: Mapping[str, sitk.Image], reference: str, *, progress: Progress = None,
                    notes: list[str] | None = None) -> tuple[dict[str, sitk.Image], dict[str, sitk.Transform]]:
    """Register every input onto `reference` and resample it onto the reference grid.

    Returns the images (the reference unchanged) and the transforms (reference: identity).
    A line of information per input the registration moved by at least NOTE_DEGREES or
    NOTE_MM ("FLAIR moved onto T1ce by co-registration: rotated 4.2 deg, shifted 3.1 mm") is
    appended to `notes` when given, so users see how far inputs were moved.
    """
    if reference not in images:
        raise InputError(f"reference '{reference}' is not among the inputs ({', '.join(images)})")
    ref = images[reference]
    others = [m for m in images if m != reference]
    out: dict[str, sitk.Image] = {reference: ref}
    transforms: dict[str, sitk.Transform] = {reference: sitk.Euler3DTransform()}
    for i, name in enumerate(others):
        sub = None
        if progress is not None:
            def sub(fraction, message, i=i, name=name):
                progress((i + fraction) / len(others), f"{name}: {message}")
        tx = register_rigid(ref, images[name], progress=sub)
        transforms[name] = tx
        out[name] = resample_onto(images[name], ref, tx)
        angle, shift = transform_summary(tx)
        if notes is not None and (angle >= NOTE_DEGREES or shift >= NOTE_MM):
            notes.append(f"{name} moved onto {reference} by co-registration: rotated {angle:.1f} deg, "
                         f"shifted {shift:.1f} mm")
    if progress is not None:
        progress(1.0, "registration done")
    return out, transforms
