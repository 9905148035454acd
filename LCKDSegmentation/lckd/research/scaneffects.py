"""Scan effects on a (D, H, W) tensor, shared by training augmentation and clinical-slice degradation.

Thick slices (a 2D series' partial volume), rigid resampling (tilt, misregistration), random
rotations, a smooth bias field, a Gaussian blur and a fresh z-score over the brain. Moved out of
`training/augment.py` so that `lckd.research.degrade` (evaluation) does not import training; the
functions are unchanged, so training draws the same batches.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def restandardise(v: torch.Tensor, brain: torch.Tensor) -> torch.Tensor:
    """A fresh z-score over the `brain` voxels (as inference normalises a scan)."""
    vals = v[brain]
    if vals.numel() < 2:
        return v
    return (v - vals.mean()) / vals.std().clamp_min(1e-6)


def gaussian_blur(v: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable 3D Gaussian blur of a (D, H, W) tensor (replicate padding)."""
    r = max(1, int(round(2.5 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=v.dtype) / sigma) ** 2)
    k = k / k.sum()
    out = v[None, None]
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = k.numel()
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = r
        out = F.conv3d(F.pad(out, pad, mode="replicate"), k.view(shape))
    return out[0, 0]


def smooth_field(shape: tuple, gen: torch.Generator) -> torch.Tensor:
    """Zero-mean, unit-std smooth random field (a 4^3 lattice, trilinearly upsampled)."""
    coarse = torch.randn((1, 1, 4, 4, 4), generator=gen)
    field = F.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)[0, 0]
    return (field - field.mean()) / field.std().clamp_min(1e-6)


def thick_slices(v: torch.Tensor, axis: int, factor: int) -> torch.Tensor:
    """A (D, H, W) volume as a series of `factor`-voxel-thick slices along `axis` would show it.

    Each slab of `factor` voxels is averaged (partial-volume effect of a thick slice) and
    the slabs are linearly interpolated back onto the original grid, as resampling a 2D
    series onto a 1 mm grid does at inference.
    """
    if factor <= 1 or v.shape[axis] < 2:
        return v
    kernel = [1, 1, 1]
    kernel[axis] = factor
    coarse = F.avg_pool3d(v[None, None], kernel_size=kernel, stride=kernel, ceil_mode=True, count_include_pad=False)
    return F.interpolate(coarse, size=tuple(v.shape), mode="trilinear", align_corners=False)[0, 0]


def rigid_resample(v: torch.Tensor, rotation: np.ndarray, shift_vox=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """A (D, H, W) volume moved by `rotation` (3x3, (z, y, x) axes) about its centre and shifted
    by `shift_vox` voxels, resampled trilinearly on its own grid (zeros where it leaves it)."""
    shape = np.asarray(v.shape, dtype=float)
    theta = np.zeros((3, 4))
    theta[:, :3] = np.diag(2.0 / shape) @ rotation @ np.diag(shape / 2.0)
    theta[:, 3] = 2.0 * np.asarray(shift_vox, dtype=float) / shape
    # affine_grid wants (x, y, z) order: reverse the rows and the columns of the linear part
    theta = np.concatenate([theta[::-1, :3][:, ::-1], theta[::-1, 3:]], axis=1)
    grid = F.affine_grid(torch.from_numpy(theta.copy()).to(v.dtype)[None], [1, 1, *v.shape], align_corners=False)
    return F.grid_sample(v[None, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0, 0]


def random_rotation(rng: np.random.Generator, max_degrees: float) -> np.ndarray:
    """A random 3x3 rotation: angles about each axis drawn uniformly in +-max_degrees."""
    a = np.deg2rad(rng.uniform(-max_degrees, max_degrees, size=3))
    c, s = np.cos(a), np.sin(a)
    rx = np.array([[1, 0, 0], [0, c[0], -s[0]], [0, s[0], c[0]]])
    ry = np.array([[c[1], 0, s[1]], [0, 1, 0], [-s[1], 0, c[1]]])
    rz = np.array([[c[2], -s[2], 0], [s[2], c[2], 0], [0, 0, 1]])
    return rz @ ry @ rx
