"""Which voxels of a scan are background: every rule the package uses, named for what it is.

Four jobs need "where is the head or brain", and one rule does not fit them all:

- `nonzero_nonbackground`: neither 0 nor the faces' constant background value. Fits
  skull-stripped input: BraTS (background 0) and z-scored exports (a constant non-zero
  background). Used by `preprocess`: the network's brain mask, crop and normalisation.
- `nonzero_unless_noisy`: above 0, or above a tenth of a robust maximum when nearly every
  voxel is above 0. Fits both kinds: skull-stripped scans, and raw scans whose background is
  scanner noise. Used by `registration`: centroids, where metric samples are drawn.
- `bright_voxels`: above a tenth of the 99th percentile of the non-zero voxels. Fits raw
  scans (the head without the noise around it), also once resampled onto another grid, whose
  field of view is padded with 0. Used by `rawprep`: coverage and head-overlap checks.
- `background_distance_score`: distance from the faces' median value in units of a noise
  tolerance, averaged over ~4 mm blocks; above 1 is foreground. Fits any contrast and any
  scaling (z-scoring leaves the inside of a brain near 0; the block average fills it). Used by
  `validation.check_alignment`: do the scans' masks line up?

Why not one rule: the preprocessing mask must be exact (every brain voxel, not one background
voxel) and may rely on a constant background, which raw scans do not have; registration must
also work on raw scans, where "above 0" is the whole field of view; a series resampled onto
the reference grid gains a border of exact zeros that the faces' rules would take as its
background; the alignment check must count the near-zero inside of a z-scored brain as brain.
`face_background` alone also decides `rawprep`'s `auto` rule (how much of a scan is one constant
value), and `face_median` the background that `validation` looks past for contrast. Changing a
rule changes the results of the module that uses it, so each stays as measured.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

__all__ = ["face_values", "face_background", "face_median", "nonzero_nonbackground", "nonzero_unless_noisy",
           "bright_voxels", "background_distance_score"]

#: A face value is the constant background only when it fills at least this share of the faces.
CONSTANT_FACE_SHARE = 0.5
#: Share of voxels above 0 beyond which "above 0" is the field of view, not the head (noisy background).
NOISY_SHARE = 0.9
#: Fraction of a robust maximum (99th percentile) above which a voxel counts as head (raw scans).
BRIGHT_FRACTION = 0.1
#: Noise tolerance of the alignment check: this fraction of the 99th percentile of the distance
#: from the background value, above typical MR background noise.
NOISE_TOLERANCE = 0.05


def face_values(array: np.ndarray) -> np.ndarray:
    """Every voxel of a 3D array's six outer faces, as one flat array (edges counted per face)."""
    return np.concatenate([array[[0, -1]].ravel(), array[:, [0, -1]].ravel(), array[:, :, [0, -1]].ravel()])


def face_background(array: np.ndarray) -> float:
    """The constant background of a volume: the value of most of its outer faces, else 0.

    BraTS files have a 0 background, but z-scored exports (e.g. BRATS 2013 data re-saved by
    other tools) keep a constant non-zero value there, which must not count as brain.
    A value is taken as the background only when it fills at least half of the faces,
    so a noisy raw scan (no constant border) falls back to 0.
    """
    if array.ndim != 3 or min(array.shape) < 2:
        return 0.0
    faces = face_values(array)
    values, counts = np.unique(faces, return_counts=True)
    i = int(np.argmax(counts))
    return float(values[i]) if counts[i] >= CONSTANT_FACE_SHARE * faces.size else 0.0


def face_median(array: np.ndarray) -> np.floating:
    """The median of a volume's outer faces (in the array's float type): its background value when
    most of the border is background, even a noisy or z-scored one (0 for skull-stripped scans)."""
    return np.median(face_values(array))


def nonzero_nonbackground(array: np.ndarray) -> np.ndarray:
    """Voxels that are neither 0 nor the volume's constant background (`face_background`):
    the brain of a skull-stripped scan, whatever constant its export left outside it."""
    mask = array != 0
    bg = face_background(array)
    if bg != 0:
        mask &= array != array.dtype.type(bg)
    return mask


def nonzero_unless_noisy(array: np.ndarray) -> np.ndarray:
    """Voxels above 0 (skull-stripped data) or, when nearly everything is above 0 (raw scans
    with a noisy background), above a tenth of a robust maximum (99th percentile of about 32
    evenly spaced slices, which is cheap and as good as all of them)."""
    mask = array > 0
    if mask.mean() > NOISY_SHARE:
        hi = float(np.percentile(array[:: max(1, array.shape[0] // 32)], 99))
        mask = array > BRIGHT_FRACTION * hi
    return mask


def bright_voxels(array: np.ndarray) -> np.ndarray:
    """Voxels above a tenth of the 99th percentile of the non-zero ones: the head without the
    scanner noise around it (raw scans), the brain (skull-stripped ones).

    Unlike `nonzero_unless_noisy` this holds for a series resampled onto another grid, whose
    field of view is padded with 0: the padding cannot make "above 0" look like a head."""
    nonzero = array[array > 0]
    return array > (BRIGHT_FRACTION * float(np.percentile(nonzero, 99)) if nonzero.size else 0.0)


def background_distance_score(image: sitk.Image, block_mm: float) -> sitk.Image:
    """Distance from the background value in units of a noise tolerance, averaged over blocks
    of about `block_mm`; a coarse voxel scoring above 1 is mostly head or brain.

    The background value is the median of the volume's faces (0 for skull-stripped scans,
    whatever the z-scoring did inside); the tolerance is `NOISE_TOLERANCE` of the 99th
    percentile, above typical MR background noise. Averaging over blocks fills the voxels
    near 0 inside a z-scored brain.
    """
    arr = sitk.GetArrayViewFromImage(image)
    bg = float(face_median(arr))
    dist = np.abs(arr.astype(np.float32) - np.float32(bg))
    tol = NOISE_TOLERANCE * float(np.percentile(dist[::2, ::2, ::2], 99))
    if tol <= 0:
        tol = 1.0  # (almost) everything is background: the masks say so, the caller skips the scan
    score = sitk.GetImageFromArray(dist / np.float32(tol))
    score.CopyInformation(image)
    shrink = [max(1, int(round(block_mm / s))) for s in image.GetSpacing()]
    return sitk.BinShrink(score, shrink)
