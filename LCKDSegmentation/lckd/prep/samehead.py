"""After co-registration: do the scans show one head, or scans of different patients?

Rigid registration fits any brain onto any other: scans of two patients given as one study
first get "looks misaligned" warnings, and once `--register` has fitted one onto the other
the warning is gone and the network segments a chimera with confidence. This check judges the
fit, for each registered scan against the reference, on a `GRID_MM` grid:

- **sharpness**: the normalised mutual information (NMI) of the two scans inside the brain
  both cover, at the fit minus its mean over shifts of `SHIFT_MM` along each axis. One head's
  anatomy (ventricles, sulci, the tumour) lines up at the fit only, so the NMI drops when
  shifted; another head's anatomy lines up nowhere, so it stays flat. Mutual information
  needs no intensity relation, so it compares any two contrasts.
- **outline** (reported, not judged): the Dice of the two scans' filled brain (or head) masks
  inside the moving scan's field of view.

Measured on the shared BraTS cases (skull-stripped and co-registered to an atlas, so other
patients are already roughly aligned; `Testing/experiments/samehead_measure.py`, 14 pairs of
each kind): a scan of the same case moved by up to 5 deg and 5 mm per axis and registered back
gives sharpness 0.026-0.081 (0.022-0.053 cut to 5 mm slices); the same contrast of another
case gives -0.004-0.001. A scan is reported when its sharpness is under `MIN_SHARPNESS`. The
outline does not separate them (same case 0.79-0.998: BraTS 2013 FLAIRs cover less of the
brain than their T1ce; other cases 0.55-0.94), so it only backs the report with a number.
It can miss twins; a scan so blurred or noisy that nothing lines up sharply even with itself
is reported.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .foreground import nonzero_unless_noisy

__all__ = ["HeadComparison", "Mismatch", "compare_heads", "judge_registered", "MIN_SHARPNESS"]

#: Voxel size (mm) of the grid the scans are compared on.
GRID_MM = 2.0
#: Shift (mm) the fit is compared with.
SHIFT_MM = 4.0
#: Least NMI sharpness of scans of one head (measured: same case >= 0.022, other cases <= 0.001).
MIN_SHARPNESS = 0.01
#: Histogram bins of the NMI.
BINS = 32
#: Fewest voxels (on the coarse grid) both scans must cover to be judged.
MIN_VOXELS = 2000


@dataclass(frozen=True)
class HeadComparison:
    """How one registered scan fits the reference."""

    sharpness: float            # NMI at the fit minus its mean over shifts of SHIFT_MM
    outline_dice: float | None  # Dice of the filled masks in the moving scan's field of view (None: not measured)
    voxels: int                 # coarse voxels compared

    @property
    def judged(self) -> bool:
        return self.voxels >= MIN_VOXELS

    @property
    def same_head(self) -> bool:
        """False when the fit does not look like scans of one head."""
        if not self.judged:
            return True
        return self.sharpness >= MIN_SHARPNESS


def _coarse(image: sitk.Image) -> sitk.Image:
    f = [max(1, int(round(GRID_MM / s))) for s in image.GetSpacing()]
    return sitk.BinShrink(sitk.Cast(image, sitk.sitkFloat32), f) if max(f) > 1 else sitk.Cast(image, sitk.sitkFloat32)


def _filled(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_fill_holes(mask)


def _nmi(a: np.ndarray, b: np.ndarray) -> float:
    """(H(a) + H(b)) / H(a, b) of two equally long value arrays (1 = independent, 2 = identical)."""
    h, _, _ = np.histogram2d(a, b, bins=BINS)
    p = h / max(h.sum(), 1.0)

    def entropy(q: np.ndarray) -> float:
        q = q[q > 0]
        return float(-np.sum(q * np.log(q)))

    joint = entropy(p)
    return (entropy(p.sum(1)) + entropy(p.sum(0))) / joint if joint > 0 else 1.0


def compare_heads(reference: sitk.Image, moving: sitk.Image, transform: sitk.Transform,
                  brain: sitk.Image | None = None) -> HeadComparison:
    """Judge the fit of `moving` onto `reference` by `transform` (reference points -> moving points).

    `brain` (a mask on the reference grid, e.g. the extracted brain of raw scans) is where the
    sharpness is measured; without it, inside both scans' own masks (`nonzero_unless_noisy`,
    holes filled), and the outline Dice is measured too.
    """
    ref = _coarse(reference)
    ref_values = sitk.GetArrayViewFromImage(ref)
    moved = sitk.GetArrayFromImage(sitk.Resample(sitk.Cast(moving, sitk.sitkFloat32), ref, transform,
                                                 sitk.sitkLinear, 0.0))
    ones = sitk.Image(moving.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(moving)
    fov = sitk.GetArrayViewFromImage(sitk.Resample(ones, ref, transform, sitk.sitkNearestNeighbor, 0)) > 0
    dice = None
    if brain is not None:
        region = (sitk.GetArrayViewFromImage(sitk.Resample(brain, ref, sitk.Transform(), sitk.sitkNearestNeighbor,
                                                          0)) > 0) & fov
    else:
        own = sitk.GetImageFromArray(nonzero_unless_noisy(sitk.GetArrayViewFromImage(moving)).astype(np.uint8))
        own.CopyInformation(moving)
        a = _filled(nonzero_unless_noisy(ref_values)) & fov
        b = _filled(sitk.GetArrayViewFromImage(sitk.Resample(own, ref, transform, sitk.sitkNearestNeighbor, 0)) > 0)
        b &= fov
        dice = 2.0 * float(np.count_nonzero(a & b)) / max(int(np.count_nonzero(a)) + int(np.count_nonzero(b)), 1)
        region = a & b
    n = int(np.count_nonzero(region))
    if n < MIN_VOXELS:
        return HeadComparison(0.0, dice, n)
    fixed_values = ref_values[region]
    at_fit = _nmi(fixed_values, moved[region])
    steps = [max(1, int(round(SHIFT_MM / s))) for s in ref.GetSpacing()[::-1]]   # (z, y, x) voxels
    shifted = [_nmi(fixed_values, np.roll(moved, sign * steps[axis], axis=axis)[region])
               for axis in range(3) for sign in (-1, 1)]
    return HeadComparison(at_fit - float(np.mean(shifted)), dice, n)


@dataclass(frozen=True)
class Mismatch:
    """A registered scan that does not look like the reference's head."""

    name: str
    reference: str
    comparison: HeadComparison

    def reason(self) -> str:
        """Short, for the quality estimate's reasons."""
        return f"{self.name} and {self.reference} may be from different patients"

    def warning(self) -> str:
        """One line naming both scans and the evidence."""
        c = self.comparison
        outline = "" if c.outline_dice is None else f"; their brain outlines overlap with Dice {c.outline_dice:.2f}"
        return (f"{self.name} and {self.reference}: these scans may be from different patients: after co-registration "
                f"their anatomy lines up no better than {SHIFT_MM:g} mm off the fit (sharpness {c.sharpness:.3f}; "
                f"scans of one head: above {MIN_SHARPNESS:g}){outline}; check that every scan is of this patient")


def judge_registered(images: Mapping[str, sitk.Image], reference: str, transforms: Mapping[str, sitk.Transform],
                     brain: sitk.Image | None = None) -> list[Mismatch]:
    """The registered scans that do not look like the reference's head (an empty list when all do).

    `images` are the scans as given (before resampling), `transforms` what `register_inputs`
    returned; `brain` as in `compare_heads`.
    """
    out = []
    for name, tx in transforms.items():
        if name == reference or name not in images:
            continue
        c = compare_heads(images[reference], images[name], tx, brain)
        if not c.same_head:
            out.append(Mismatch(name, reference, c))
    return out
