"""Per-sample intensity augmentation of normalised training patches.

The cached cases are already z-scored (as inference sees them), so augmentations that model
acquisition differences are applied to the normalised values and, where they change an
image's distribution the way a different scanner would (bias field, gamma), followed by a
fresh z-score over the patch's brain voxels, as inference would do. Each modality gets its
own draws: real protocols differ per sequence. Background (0 outside the brain) stays 0.

Everything is drawn from the sampler's per-step generator, so augmentation keeps the
"batches are a function of (seed, rank, step)" promise that makes resume exact.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# probability of each transform per modality, and its range
P_CONTRAST, CONTRAST, SHIFT = 0.8, (0.75, 1.25), (-0.25, 0.25)
P_GAMMA, GAMMA = 0.3, (0.7, 1.5)
P_BIAS, BIAS_STD = 0.3, (0.1, 0.35)
P_NOISE, NOISE = 0.3, (0.0, 0.15)
P_BLUR, BLUR = 0.2, (0.5, 1.0)
THICK_MM = (3.0, 7.0)          # simulated slice thickness (clinical 2D series: 3-7 mm)
THICK_AXIS_P = (0.7, 0.15, 0.15)  # (z, y, x): most clinical 2D series are axial


def restandardise(v: torch.Tensor, brain: torch.Tensor) -> torch.Tensor:
    vals = v[brain]
    if vals.numel() < 2:
        return v
    return (v - vals.mean()) / vals.std().clamp_min(1e-6)


def _gaussian_blur(v: torch.Tensor, sigma: float) -> torch.Tensor:
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


def augment_intensities(x: torch.Tensor, present: np.ndarray, rng: np.random.Generator,
                        thick_slice_prob: float = 0.0, spacing_mm: float = 1.0) -> torch.Tensor:
    """Augment the present channels of a (M, D, H, W) normalised patch; returns a new tensor.

    With `thick_slice_prob` > 0 each scan, on its own draw, is first turned into a thick-slice
    series (3-6 mm along a random axis, mostly axial; `spacing_mm` is the patch's voxel size).
    """
    gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
    out = x.clone()
    for c in np.flatnonzero(present):
        v = out[c]
        brain = v != 0
        if not bool(brain.any()):
            continue
        changed = False
        if thick_slice_prob > 0 and rng.random() < thick_slice_prob:
            axis = int(rng.choice(3, p=THICK_AXIS_P))
            factor = int(round(float(rng.uniform(*THICK_MM)) / spacing_mm))
            v = thick_slices(v, axis, factor)
            changed = True
        if rng.random() < P_BIAS:
            lo = v[brain].min()
            v = lo + (v - lo) * torch.exp(float(rng.uniform(*BIAS_STD)) * smooth_field(v.shape, gen))
            changed = True
        if rng.random() < P_GAMMA:
            lo, hi = v[brain].min(), v[brain].max()
            span = (hi - lo).clamp_min(1e-6)
            v = lo + span * ((v - lo) / span).clamp(0, 1) ** float(rng.uniform(*GAMMA))
            changed = True
        if rng.random() < P_BLUR:
            v = _gaussian_blur(v, float(rng.uniform(*BLUR)))
        if changed:
            v = restandardise(v, brain)
        if rng.random() < P_CONTRAST:
            v = v * float(rng.uniform(*CONTRAST)) + float(rng.uniform(*SHIFT))
        if rng.random() < P_NOISE:
            v = v + float(rng.uniform(*NOISE)) * torch.randn(v.shape, generator=gen)
        out[c] = torch.where(brain, v, torch.zeros((), dtype=v.dtype))
    return out
