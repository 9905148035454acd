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

from ..scaneffects import gaussian_blur, restandardise, smooth_field, thick_slices

# probability of each transform per modality, and its range
P_CONTRAST, CONTRAST, SHIFT = 0.8, (0.75, 1.25), (-0.25, 0.25)
P_GAMMA, GAMMA = 0.3, (0.7, 1.5)
P_BIAS, BIAS_STD = 0.3, (0.1, 0.35)
P_NOISE, NOISE = 0.3, (0.0, 0.15)
P_BLUR, BLUR = 0.2, (0.5, 1.0)
THICK_MM = (3.0, 7.0)          # simulated slice thickness (clinical 2D series: 3-7 mm)
THICK_AXIS_P = (0.7, 0.15, 0.15)  # (z, y, x): most clinical 2D series are axial


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
            v = gaussian_blur(v, float(rng.uniform(*BLUR)))
        if changed:
            v = restandardise(v, brain)
        if rng.random() < P_CONTRAST:
            v = v * float(rng.uniform(*CONTRAST)) + float(rng.uniform(*SHIFT))
        if rng.random() < P_NOISE:
            v = v + float(rng.uniform(*NOISE)) * torch.randn(v.shape, generator=gen)
        out[c] = torch.where(brain, v, torch.zeros((), dtype=v.dtype))
    return out
