"""Fabricated tumours on real brains: a tumour shape painted into the tumour-free tissue of a
training patch with the contrasts real gliomas show in each scan.

Lesion mixing (`lesionmix.py`) carries a donor's own voxels, so every mixed tumour is one of
the 22 tumours the model already sees; fabrication makes new ones. Shapes are a training
case's label map, moved, scaled and elastically deformed, or a random one (an irregular
oedema shell around an irregular core with an enhancing rim of random thickness, or no
enhancement at all, as in lower-grade tumours). Intensities come from the training cases
themselves: for every case and scan the median and spread (z-score units, as the network
sees them) of healthy brain, oedema, necrotic / non-enhancing core and enhancing tumour.
A fabricated tumour takes each scan's class levels from a randomly chosen case, stretched
around the recipient's healthy level by a random factor, with smooth random texture; oedema
is added to the recipient's tissue (real oedema keeps the anatomy visible under it), the
core and the enhancing rim replace it; edges are blended. Labels are exact by construction.

Used on a share of the samples that falls to zero over the first part of a run (a
pre-training stage on top of the phantom one, inside the same step budget), and those samples
get thick slices more often, so a thick-slice series of a tumour is seen on many tumours.
Every draw comes from the sampler's per-step generator: a resumed run draws the same batches.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..scaneffects import gaussian_blur
from .lesionmix import Donor, donor_grid, donor_transform

HEALTHY, OEDEMA, CORE, ENHANCING = 0, 1, 2, 3
CLASSES = (OEDEMA, CORE, ENHANCING)
MIN_CLASS_VOXELS = 50          # a case's class level is measured only from at least this many voxels
STRETCH = (0.7, 1.3)           # per class and scan: the level's distance from healthy tissue, scaled
TEXTURE_SIGMA = (0.7, 2.0)     # voxels: grain of the random texture
EDGE_SIGMA = (0.6, 1.5)        # voxels: blending of the class borders
ELASTIC_SIGMA, ELASTIC_VOX = 6.0, 4.0   # smooth displacement of a real shape (voxels)
RADIUS_MM = (8.0, 28.0)        # random shapes: whole-tumour mean radius
NO_ENHANCEMENT_P = 0.2         # random shapes without an enhancing rim
REAL_SHAPE_P = 0.5             # shapes taken from a training case's label map
PLACEMENT_TRIES = 8
MIN_TUMOUR_VOXELS = 300        # a fabricated tumour brings at least this much into the patch
MIN_INSIDE_BRAIN = 0.85        # share of its voxels that must lie in the recipient's brain
EDGE_VOX = 12                  # its centre this far inside the patch
THICK_SLICE_P = 0.5            # per scan, on fabricated samples (the recipe's own share on the rest)


@dataclass
class ContrastLevels:
    """Per training case and scan, the median and SD (z-score units) of healthy brain and of each
    tumour class: arrays (cases, M, 4) indexed by HEALTHY, OEDEMA, CORE, ENHANCING; NaN where the
    case lacks the scan or the class."""

    median: np.ndarray
    sd: np.ndarray

    def draw(self, channel: int, cls: int, rng: np.random.Generator) -> tuple[float, float, float] | None:
        """(healthy median, class median, class SD) of one scan from a random case that has both."""
        ok = np.flatnonzero(np.isfinite(self.median[:, channel, cls]) & np.isfinite(self.median[:, channel, HEALTHY]))
        if len(ok) == 0:
            return None
        i = int(ok[int(rng.integers(len(ok)))])
        return (float(self.median[i, channel, HEALTHY]), float(self.median[i, channel, cls]),
                float(self.sd[i, channel, cls]))


def class_map(regions: np.ndarray) -> np.ndarray:
    """(3, ...) ET, TC, WT regions -> one map of HEALTHY / OEDEMA / CORE / ENHANCING."""
    out = np.zeros(regions.shape[1:], dtype=np.int8)
    out[regions[2] > 0] = OEDEMA
    out[regions[1] > 0] = CORE
    out[regions[0] > 0] = ENHANCING
    return out


def measure_levels(cases: Sequence) -> ContrastLevels:
    """The contrast levels of loaded training cases (`lckd.prep.modelgrid.LoadedCase`)."""
    m = cases[0].x.shape[0] if cases else 0
    median = np.full((len(cases), m, 4), np.nan)
    sd = np.full((len(cases), m, 4), np.nan)
    for i, c in enumerate(cases):
        if not c.regions.size:
            continue
        labels = class_map(c.regions)
        brain = np.any(c.x[c.present] != 0, axis=0)
        for ch in np.flatnonzero(c.present):
            v = c.x[ch]
            for cls in (HEALTHY,) + CLASSES:
                vals = v[brain & (labels == cls)].astype(np.float32)
                if vals.size >= MIN_CLASS_VOXELS:
                    median[i, ch, cls] = float(np.median(vals))
                    sd[i, ch, cls] = float(vals.std())
    return ContrastLevels(median, sd)


def _smooth_noise(shape: Sequence[int], sigma: float, gen: torch.Generator) -> torch.Tensor:
    """Zero-mean, unit-SD Gaussian-smoothed noise."""
    v = gaussian_blur(torch.randn(tuple(shape), generator=gen), sigma)
    return (v - v.mean()) / v.std().clamp_min(1e-6)


def random_shape(shape: Sequence[int], target: np.ndarray, spacing_mm: float, rng: np.random.Generator,
                 gen: torch.Generator) -> torch.Tensor:
    """A random tumour's class map on a patch of `shape`, centred at voxel `target`: an irregular
    whole tumour, an irregular core inside it (off-centre), and an enhancing rim of the core
    (none on NO_ENHANCEMENT_P of the draws)."""
    axes = [torch.arange(n, dtype=torch.float32) for n in shape]
    p = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1) - torch.from_numpy(target.astype(np.float32))
    p = p * spacing_mm
    # an ellipsoid's radii, the direction of its axes random
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    radius = float(rng.uniform(*RADIUS_MM))
    radii = radius * rng.uniform(0.7, 1.3, size=3)
    local = p @ torch.from_numpy(q.astype(np.float32))
    r = torch.sqrt(((local / torch.from_numpy(radii.astype(np.float32))) ** 2).sum(-1))
    bumps = float(rng.uniform(0.1, 0.35))
    wt = r + bumps * _smooth_noise(shape, float(rng.uniform(3.0, 6.0)), gen) < 1.0
    out = wt.to(torch.int8) * OEDEMA
    core_share = float(rng.uniform(0.25, 0.7))
    offset = torch.from_numpy((rng.uniform(-0.3, 0.3, size=3) * radii).astype(np.float32))
    rc = torch.sqrt((((local - offset) / torch.from_numpy((radii * core_share).astype(np.float32))) ** 2).sum(-1))
    core = (rc + bumps * _smooth_noise(shape, float(rng.uniform(2.0, 4.0)), gen) < 1.0) & wt
    out[core] = CORE
    if rng.random() >= NO_ENHANCEMENT_P:
        rim_mm = float(rng.uniform(1.5, 5.0))
        inner = rc < 1.0 - rim_mm / (radius * core_share)
        out[core & ~inner] = ENHANCING
    return out


def real_shape(donor: Donor, shape: Sequence[int], target: np.ndarray, rng: np.random.Generator,
               gen: torch.Generator) -> torch.Tensor:
    """A training case's label map moved to `target` (rotated, flipped, scaled as lesion mixing
    does) and elastically deformed (a smooth displacement of up to a few voxels)."""
    transform = donor_transform(rng)
    grid = donor_grid(shape, target, transform, donor.centre, donor.regions.shape[1:])
    sizes = torch.tensor([float(n) for n in donor.regions.shape[1:]]).flip(0) - 1.0
    disp = torch.stack([_smooth_noise(shape, ELASTIC_SIGMA, gen) for _ in range(3)], dim=-1)
    grid = grid + float(rng.uniform(0.0, ELASTIC_VOX)) * disp[None] * 2.0 / sizes.clamp_min(1.0)
    regions = F.grid_sample(torch.from_numpy(donor.regions.astype(np.float32))[None], grid, mode="bilinear",
                            padding_mode="zeros", align_corners=True)[0] > 0.5
    return torch.from_numpy(class_map(regions.numpy()))


def _target(brain: torch.Tensor, tumour: torch.Tensor, rng: np.random.Generator) -> np.ndarray | None:
    """A brain voxel outside the recipient's tumour, at least EDGE_VOX inside the patch."""
    inner = torch.zeros_like(brain)
    e = [min(EDGE_VOX, n // 4) for n in brain.shape]
    inner[e[0]:brain.shape[0] - e[0], e[1]:brain.shape[1] - e[1], e[2]:brain.shape[2] - e[2]] = True
    candidates = torch.nonzero(brain & inner & ~tumour)
    if len(candidates) == 0:
        return None
    return candidates[int(rng.integers(len(candidates)))].numpy()


def fabricate_tumour(x: torch.Tensor, y: torch.Tensor, present: np.ndarray, levels: ContrastLevels,
                     donors: Sequence[Donor], rng: np.random.Generator,
                     spacing_mm: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Paint a fabricated tumour into a patch (x (M, D, H, W) normalised, y (3, D, H, W) ET/TC/WT).

    Returns (x, y, made); unchanged and made False when no place in the patch fits.
    """
    channels = np.flatnonzero(present)
    brain = torch.any(x[channels] != 0, dim=0)
    shape = tuple(brain.shape)
    gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
    labels = None
    for _ in range(PLACEMENT_TRIES):
        target = _target(brain, y[2] > 0.5, rng)
        if target is None:
            return x, y, False
        if donors and rng.random() < REAL_SHAPE_P:
            cand = real_shape(donors[int(rng.integers(len(donors)))], shape, target, rng, gen)
        else:
            cand = random_shape(shape, target, spacing_mm, rng, gen)
        n = int((cand > 0).sum())
        if n >= MIN_TUMOUR_VOXELS and int(((cand > 0) & brain).sum()) >= MIN_INSIDE_BRAIN * n:
            labels = cand * brain.to(torch.int8)
            break
    if labels is None:
        return x, y, False
    edge = float(rng.uniform(*EDGE_SIGMA))
    weights = torch.stack([gaussian_blur((labels == k).float(), edge) for k in (HEALTHY,) + CLASSES])
    weights = weights / weights.sum(0, keepdim=True).clamp_min(1e-6)
    x = x.clone()
    for c in channels:
        v = x[c]
        painted = weights[0] * v
        for j, cls in enumerate(CLASSES, start=1):
            level = levels.draw(int(c), cls, rng)
            if level is None:      # no training case shows this class in this scan: look like oedema
                level = levels.draw(int(c), OEDEMA, rng) or (0.0, 0.0, 0.5)
            healthy, median, sd = level
            shift = (median - healthy) * float(rng.uniform(*STRETCH))
            grain = float(rng.uniform(*TEXTURE_SIGMA))
            texture = float(sd) * float(rng.uniform(0.3, 1.0)) * _smooth_noise(shape, grain, gen)
            # oedema keeps the anatomy under it (the recipient's tissue, shifted); core and
            # enhancing tumour replace it
            value = v + shift + 0.5 * texture if cls == OEDEMA else healthy + shift + texture
            painted = painted + weights[j] * value
        x[c] = torch.where(brain, painted, torch.zeros((), dtype=v.dtype))
    new = torch.stack([labels == ENHANCING, labels >= CORE, labels >= OEDEMA]).float()
    return x, torch.maximum(y, new), True


def share_at(step: int, prob: float, until: float, total_steps: int) -> float:
    """The share of fabricated samples at `step`: `prob` at the start, falling linearly to 0 at
    `until` of the run (0 < until <= 1)."""
    end = max(1.0, until * total_steps)
    return prob * max(0.0, 1.0 - step / end)
