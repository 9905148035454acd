"""Intensity preprocessing shared by training and inference (one definition, used by both)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .foreground import nonzero_nonbackground


def brain_mask(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Voxels that are brain in any input (skull-stripped input: background 0 or constant; see
    `lckd.prep.foreground`)."""
    mask = np.zeros(arrays[0].shape, dtype=bool)
    for a in arrays:
        mask |= nonzero_nonbackground(a)
    return mask


def normalise(array: np.ndarray, mask: np.ndarray | None = None,
              clip_percentiles: Sequence[float] = (0.5, 99.5)) -> np.ndarray:
    """Clip to brain-voxel percentiles, z-score over the brain, zero outside it (float32).

    Clipping the top tail first keeps a few very bright voxels (vessels, artefacts) from
    squashing the contrast of everything else, as the authors' preprocessing does.
    """
    if mask is None:
        mask = nonzero_nonbackground(array)
    out = np.zeros(array.shape, dtype=np.float32)
    values = array[mask].astype(np.float32)
    if values.size == 0:
        return out
    lo, hi = np.percentile(values, clip_percentiles)
    values = np.clip(values, lo, hi)
    std = float(values.std())
    out[mask] = (values - float(values.mean())) / (std if std > 1e-6 else 1.0)
    return out


@dataclass
class PreparedCase:
    """Network-ready arrays of one case on the model grid, cropped to the brain."""

    x: np.ndarray                 # (M, d, h, w) float32 in the model's modality order; zeros where absent
    present: np.ndarray           # (M,) bool
    box: tuple                    # crop slices into the full model-grid array
    mask: np.ndarray              # full-size brain mask (bool)


def prepare_case(arrays: Mapping[str, np.ndarray], order: Sequence[str],
                 clip_percentiles: Sequence[float] = (0.5, 99.5), margin: int = 4) -> PreparedCase:
    """Brain mask, crop to its bounding box (+margin) and normalise each present modality."""
    from ..base.errors import InputError
    from .geometry import brain_bbox

    mask = brain_mask(list(arrays.values()))
    box = brain_bbox(mask, margin=margin)
    if box is None:
        raise InputError("all inputs are empty (every voxel is 0)")
    crop_shape = tuple(s.stop - s.start for s in box)
    x = np.zeros((len(order),) + crop_shape, dtype=np.float32)
    present = np.array([m in arrays for m in order], dtype=bool)
    for i, m in enumerate(order):
        if m in arrays:
            x[i] = normalise(arrays[m][box], mask[box], clip_percentiles)
    return PreparedCase(x, present, box, mask)
