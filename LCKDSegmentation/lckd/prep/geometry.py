"""Image grids: resampling onto a reference, physical extents, canonical orientation, brain crop."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk


def resample_onto(image: sitk.Image, reference: sitk.Image, transform: sitk.Transform | None = None,
                  *, label: bool = False) -> sitk.Image:
    """Resample `image` onto `reference`'s grid (linear, or nearest neighbour for labels); outside is 0."""
    interp = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
    tx = transform if transform is not None else sitk.Transform()
    return sitk.Resample(image, reference, tx, interp, 0.0, image.GetPixelID())


def physical_bounds(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned physical bounding box (LPS mm) of the image's voxel centres' extent."""
    size = np.array(image.GetSize())
    corners = []
    for cx in (0, 1):
        for cy in (0, 1):
            for cz in (0, 1):
                idx = np.array([cx, cy, cz]) * (size - 1) + np.array([cx, cy, cz]) - 0.5
                # continuous index of the voxel's outer faces
                corners.append(image.TransformContinuousIndexToPhysicalPoint(idx.tolist()))
    pts = np.array(corners)
    return pts.min(0), pts.max(0)


def extents_overlap(a: sitk.Image, b: sitk.Image) -> bool:
    """True when the physical bounding boxes of `a` and `b` intersect."""
    alo, ahi = physical_bounds(a)
    blo, bhi = physical_bounds(b)
    return bool(np.all(alo < bhi) and np.all(blo < ahi))


def same_grid(a: sitk.Image, b: sitk.Image, tol: float = 1e-4) -> bool:
    """True when two images share size, spacing, origin and direction (within `tol`)."""
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol * 100)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol))


def to_model_grid(image: sitk.Image, spacing: Sequence[float] | None) -> sitk.Image:
    """Reorient to LPS (identity direction, as BraTS files are stored) and resample to `spacing`.

    Only the axis order/flips change when spacing already matches, so 1 mm BraTS data is
    not interpolated at all.
    """
    out = sitk.DICOMOrient(image, "LPS")
    if spacing is None or np.allclose(out.GetSpacing(), spacing, rtol=1e-3):
        return out
    spacing = [float(s) for s in spacing]
    size = [max(1, int(round(n * s / t))) for n, s, t in zip(out.GetSize(), out.GetSpacing(), spacing)]
    ref = sitk.Image(size, out.GetPixelID())
    ref.SetSpacing(spacing)
    ref.SetDirection(out.GetDirection())
    # keep the physical centre of the first voxel's outer corner fixed
    half_old = np.array(out.GetSpacing()) / 2
    half_new = np.array(spacing) / 2
    origin = np.array(out.TransformContinuousIndexToPhysicalPoint((-half_old / out.GetSpacing()).tolist()))
    d = np.array(out.GetDirection()).reshape(3, 3)
    ref.SetOrigin((origin + d @ half_new).tolist())
    return resample_onto(out, ref)


def brain_bbox(mask: np.ndarray, margin: int = 4) -> tuple[slice, ...] | None:
    """Bounding box (array slices) of the non-zero voxels plus `margin`, or None if empty."""
    coords = [np.flatnonzero(mask.any(axis=tuple(j for j in range(mask.ndim) if j != i)))
              for i in range(mask.ndim)]
    if any(len(c) == 0 for c in coords):
        return None
    return tuple(slice(max(0, int(c[0]) - margin), min(n, int(c[-1]) + 1 + margin))
                 for c, n in zip(coords, mask.shape))


def paste(crop: np.ndarray, box: tuple[slice, ...], shape: Sequence[int], fill=0) -> np.ndarray:
    """Inverse of cropping `box` out of an array of `shape` (leading channel axes allowed)."""
    lead = crop.shape[: crop.ndim - len(box)]
    out = np.full(tuple(lead) + tuple(shape), fill, dtype=crop.dtype)
    out[(Ellipsis,) + tuple(box)] = crop
    return out
