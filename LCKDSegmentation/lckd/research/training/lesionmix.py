"""Lesion mixing: another training case's tumour, with a rim of its surrounding tissue, carved
into the training patch (CarveMix-style copy-paste for a few labelled cases).

With 22-28 labelled cases the network sees each tumour's shape and each brain a few hundred
times; mixing shows it new pairs of tumour and brain, tumour in either hemisphere and in
patches drawn away from the recipient's own tumour. The carved region is the donor's whole
tumour dilated by a random margin (1-6 mm: the margin carries the tumour's border with
healthy tissue, so the labels stay exact at its edge), intensity-matched per channel to the
recipient's tissue under it, rotated, flipped and scaled, placed where it lies inside the
recipient's brain, and blended over a voxel or two. Inside the carved region the donor's
labels replace the recipient's.

It works on the normalised patch after the presence mask is drawn (so every subset of scans
sees mixed samples) and before intensity augmentation (so contrast, bias and slice
thickness then apply to recipient and donor alike). Every draw comes from the sampler's
per-step generator: a resumed run draws the same mixed batches.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..scaneffects import gaussian_blur, random_rotation

MARGIN_MM = (1.0, 6.0)        # rim of donor tissue carved with the tumour
SCALE = (0.75, 1.25)          # donor resize factor
ROTATION_P, ROTATION_DEG = 0.5, 20.0
PLACEMENT_TRIES = 8
MIN_INSIDE_BRAIN = 0.9        # share of the carved voxels in the patch that must fall in the recipient's brain
MIN_TUMOUR_VOXELS = 200       # a placement must bring at least this much tumour into the patch
BLEND_SIGMA = 1.0             # voxels: the carved region's edge is blended, not cut
STD_RATIO = (0.5, 2.0)        # limits of the per-channel intensity rescaling
FAR_MM = 100.0                # the donor's background: beyond any margin


@dataclass
class Donor:
    """A labelled case's tumour with the tissue around it, cut to its box (model grid)."""

    case_index: int
    x: np.ndarray           # (M, d, h, w) normalised scans of the box (float16)
    regions: np.ndarray     # (3, d, h, w) bool ET, TC, WT
    distance: np.ndarray    # (d, h, w) float16 mm from the whole tumour (0 inside), FAR outside the brain
    present: np.ndarray     # (M,) bool
    centre: np.ndarray      # (3,) the whole tumour's centre, voxel index in the box


def make_donor(case_index: int, x: np.ndarray, regions: np.ndarray, present: np.ndarray,
               spacing: Sequence[float]) -> Donor | None:
    """The donor of one loaded case, or None when it has no tumour.

    `spacing` is the model grid's (x, y, z) mm; arrays are (z, y, x).
    """
    wt = regions[2]
    if wt.sum() < MIN_TUMOUR_VOXELS:
        return None
    sampling = tuple(float(s) for s in spacing[::-1])
    pad = [int(np.ceil(MARGIN_MM[1] / s)) + 1 for s in sampling]
    idx = np.argwhere(wt)
    lo = np.maximum(idx.min(0) - pad, 0)
    hi = np.minimum(idx.max(0) + 1 + np.asarray(pad), wt.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    xb = np.asarray(x[(slice(None),) + box])
    brain = np.any(xb[present] != 0, axis=0)
    distance = ndimage.distance_transform_edt(~wt[box], sampling=sampling).astype(np.float32)
    # finite, so that interpolation near the brain's edge stays a distance
    distance[~brain & ~wt[box]] = FAR_MM
    return Donor(case_index, xb.astype(np.float16), regions[(slice(None),) + box].copy(),
                 distance.astype(np.float16), present.copy(), (idx.mean(0) - lo).astype(np.float64))


def make_donors(cases: Sequence, spacing: Sequence[float]) -> list[Donor]:
    """Donors of every loaded case (`lckd.prep.modelgrid.LoadedCase`) that has a tumour."""
    donors = []
    for i, c in enumerate(cases):
        d = make_donor(i, c.x, c.regions, c.present, spacing)
        if d is not None:
            donors.append(d)
    return donors


def donor_transform(rng: np.random.Generator) -> np.ndarray:
    """A random 3x3 map from patch voxel offsets to donor voxel offsets ((z, y, x) axes):
    rotation (on half the draws), flips and the inverse of a scale in SCALE."""
    linear = random_rotation(rng, ROTATION_DEG) if rng.random() < ROTATION_P else np.eye(3)
    flips = np.where(rng.random(3) < 0.5, -1.0, 1.0)
    return (linear * flips) / float(rng.uniform(*SCALE))


def donor_grid(shape: Sequence[int], target: np.ndarray, transform: np.ndarray, centre: np.ndarray,
          donor_shape: Sequence[int], stride: int = 1) -> torch.Tensor:
    """grid_sample's grid (align_corners=True) that reads, for every `stride`-th voxel p of a
    patch of `shape`, the donor at centre + transform @ (p - target)."""
    axes = [torch.arange(0, n, stride, dtype=torch.float32) for n in shape]
    p = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1) - torch.from_numpy(target.astype(np.float32))
    q = p @ torch.from_numpy(transform.T.astype(np.float32)) + torch.from_numpy(centre.astype(np.float32))
    norm = 2.0 * q / (torch.tensor([float(n) for n in donor_shape]) - 1.0).clamp_min(1.0) - 1.0
    return norm.flip(-1)[None]                    # grid_sample wants (x, y, z)


def _sample(volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(C, d, h, w) donor channels read at `grid`; outside the box the edge repeats (no tumour,
    distance beyond any margin)."""
    return F.grid_sample(volume[None], grid, mode="bilinear", padding_mode="border", align_corners=True)[0]


def _place(donor: Donor, guide: torch.Tensor, brain: torch.Tensor, transform: np.ndarray,
           margin: float, rng: np.random.Generator) -> np.ndarray | None:
    """A patch voxel for the donor's tumour centre such that the carved region lies inside the
    brain and brings tumour into the patch (checked on every 4th voxel), or None."""
    candidates = torch.nonzero(brain)
    if len(candidates) == 0:
        return None
    stride = 4
    coarse_brain = brain[::stride, ::stride, ::stride]
    for _ in range(PLACEMENT_TRIES):
        target = candidates[int(rng.integers(len(candidates)))].numpy()
        grid = donor_grid(brain.shape, target, transform, donor.centre, donor.distance.shape, stride)
        wt, distance = _sample(guide, grid)
        carve = distance <= margin
        n = int(carve.sum())
        if n == 0 or int((wt > 0.5).sum()) * stride ** 3 < MIN_TUMOUR_VOXELS:
            continue
        if int((carve & coarse_brain).sum()) >= MIN_INSIDE_BRAIN * n:
            return target
    return None


def _matched(donor: torch.Tensor, ring: torch.Tensor, recipient: torch.Tensor, under: torch.Tensor) -> torch.Tensor:
    """A donor channel rescaled so its rim tissue has the mean and SD of the recipient's tissue under it."""
    if int(ring.sum()) < 20 or int(under.sum()) < 20:
        return donor
    d, r = donor[ring], recipient[under]
    ratio = float((r.std() / d.std().clamp_min(1e-6)).clamp(*STD_RATIO))
    return (donor - d.mean()) * ratio + r.mean()


def mix_lesion(x: torch.Tensor, y: torch.Tensor, present: np.ndarray, donors: Sequence[Donor],
               rng: np.random.Generator, recipient: int = -1) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Carve a donor's tumour into the patch (x (M, D, H, W) normalised, y (3, D, H, W) regions).

    Donors must have every scan in `present`; another case than `recipient` is preferred.
    Returns (x, y, mixed); (x, y) unchanged and mixed False when no donor or place fits.
    """
    need = np.asarray(present, dtype=bool)
    pool = [d for d in donors if np.all(d.present[need]) and d.case_index != recipient]
    if not pool:
        pool = [d for d in donors if np.all(d.present[need])]
    if not pool:
        return x, y, False
    donor = pool[int(rng.integers(len(pool)))]
    margin = float(rng.uniform(*MARGIN_MM))
    transform = donor_transform(rng)
    channels = np.flatnonzero(need)
    brain = torch.any(x[channels] != 0, dim=0)
    distance = torch.from_numpy(donor.distance.astype(np.float32))
    guide = torch.stack([torch.from_numpy(donor.regions[2].astype(np.float32)), distance])
    target = _place(donor, guide, brain, transform, margin, rng)
    if target is None:
        return x, y, False
    volume = torch.cat([torch.from_numpy(donor.x[channels].astype(np.float32)),
                        torch.from_numpy(donor.regions.astype(np.float32)), distance[None]])
    read = _sample(volume, donor_grid(brain.shape, target, transform, donor.centre, donor.distance.shape))
    k = len(channels)
    dx, dy, region = read[:k], read[k:k + 3] > 0.5, (read[k + 3] <= margin) & brain
    ring = region & ~dy[2]
    # the recipient's healthy tissue under the carved region (its own tumour would bias the match)
    under = region & (y[2] < 0.5)
    if int(under.sum()) < 20:
        under = brain
    weight = gaussian_blur(region.float(), BLEND_SIGMA).clamp(0, 1) * brain.float()
    x, y = x.clone(), y.clone()
    for j, c in enumerate(channels):
        x[c] = weight * _matched(dx[j], ring, x[c], under) + (1 - weight) * x[c]
    y = torch.where(weight > 0.5, dy.float(), y)
    return x, y, True
