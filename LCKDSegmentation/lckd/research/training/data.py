"""Training data: read cases once onto the model grid, cache them, and sample augmented patches.

Every case is read by `lckd.prep.modelgrid` (the reference grid, brain crop, clipping and z-score of
inference), so the network sees at training time exactly what it sees when deployed. Cases are cached in
memory (float16: half the memory, ample precision for z-scores) so a step costs only the
network.

Sampling is a pure function of (seed, rank, step): the generator for step `s` is
`np.random.default_rng([seed, rank, s])`. A resumed run therefore draws exactly the batches
the uninterrupted run would have drawn, with no sampler state to store.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...base.errors import InputError
from ...base.modalities import default_reference
from ...io.datasets import CaseFiles
from ...prep.modelgrid import LoadedCase, load_case, select_cases  # noqa: F401 (the training data's names)
from ...prep.modelgrid import load_cases as _load_cases
from ..scaneffects import random_rotation, rigid_resample
from .augment import augment_intensities
from .fabricate import THICK_SLICE_P, fabricate_tumour, measure_levels, share_at
from .lesionmix import make_donors, mix_lesion
from .presets import TrainConfig


def load_cases(cases: Sequence[CaseFiles], cfg: TrainConfig, order: Sequence[str], progress: bool = False,
               dtype=np.float16) -> list[LoadedCase]:
    """Load (and cache) several cases onto the grid of `cfg` (`lckd.prep.modelgrid.load_cases`)."""
    return _load_cases(cases, order, cfg.spacing, cfg.clip_percentiles, progress=progress, dtype=dtype)


def subset_choices(available: np.ndarray, full: bool) -> list[np.ndarray]:
    """Presence masks a sample may get: all available scans (warm-up), else each non-empty
    proper subset of them (1 to 3 of 4, as the paper's missing-modality phase)."""
    idx = np.flatnonzero(available)
    if full or len(idx) == 1:
        return [available.copy()]
    out = []
    for k in range(1, len(idx)):
        for combo in itertools.combinations(idx, k):
            mask = np.zeros_like(available)
            mask[list(combo)] = True
            out.append(mask)
    return out


def draw_subset(choices: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """One presence mask: first how many scans to keep (uniform), then which ones.

    Drawing the count first gives each single scan 1/12 of the missing-modality samples
    (1/14 if all 14 subsets were equally likely): single scans are the hardest inputs and
    a third of the 15 subsets a model is judged on.
    """
    counts = sorted({int(c.sum()) for c in choices})
    k = counts[int(rng.integers(len(counts)))]
    pool = [c for c in choices if int(c.sum()) == k]
    return pool[int(rng.integers(len(pool)))]


def _crop(array: np.ndarray, start: Sequence[int] | np.ndarray, size: Sequence[int] | np.ndarray) -> np.ndarray:
    """array[..., start:start+size] along the last 3 axes, zero-padded where it leaves the array."""
    lead = array.shape[:-3]
    out = np.zeros(lead + tuple(size), dtype=array.dtype)
    src, dst = [], []
    for s, n, dim in zip(start, size, array.shape[-3:]):
        lo, hi = max(s, 0), min(s + n, dim)
        src.append(slice(lo, max(hi, lo)))
        dst.append(slice(lo - s, lo - s + max(hi - lo, 0)))
    out[(Ellipsis,) + tuple(dst)] = array[(Ellipsis,) + tuple(src)]
    return out


# share of samples rotated when rotation is on: resampling a rotated crop costs about a
# quarter of a lite training step on one core, so half the samples keep the cheap crop
ROTATION_P = 0.5


# share of single-scan samples in the missing-modality phase under `single_first` (a third, as
# the count-first draw gives a four-scan case)
SINGLE_SHARE = 1.0 / 3.0


# per-scan misregistration (scans from separate series, registered imperfectly): small
# enough that the reference labels still fit the scan, as after a good rigid registration
SERIES_DEGREES, SERIES_MM = 3.0, 2.0


def misregister(v: torch.Tensor, rng: np.random.Generator, spacing_mm: float = 1.0) -> torch.Tensor:
    """A (D, H, W) scan moved by a random small rigid transform (up to SERIES_DEGREES about each
    axis, SERIES_MM along each), resampled on its own grid (zeros outside)."""
    rotation = random_rotation(rng, SERIES_DEGREES)
    return rigid_resample(v, rotation, rng.uniform(-SERIES_MM, SERIES_MM, size=3) / spacing_mm)


def _start(centre: np.ndarray, size: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Crop start around `centre`, kept inside the volume where it fits (padding only for small volumes)."""
    dims = np.asarray(shape)
    start = centre - size // 2
    return np.where(size <= dims, np.clip(start, 0, dims - size), (dims - size) // 2)


def _scaled_crop(case: LoadedCase, centre: np.ndarray, patch: np.ndarray,
                 scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(scans, regions) of a `patch * scale` crop resized to `patch`."""
    size = np.maximum(np.round(patch * scale).astype(int), 8)
    start = _start(centre, size, case.x.shape[1:])
    x = torch.from_numpy(_crop(case.x, start, size).astype(np.float32))
    y = torch.from_numpy(_crop(case.regions, start, size).astype(np.float32))
    if tuple(size) != tuple(patch):
        x = F.interpolate(x[None], size=tuple(patch), mode="trilinear", align_corners=False)[0]
        y = F.interpolate(y[None], size=tuple(patch), mode="nearest")[0]
    return x, y


def _rotated_crop(case: LoadedCase, centre: np.ndarray, patch: np.ndarray, scale: float,
                  rotation: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(scans, regions) of a patch rotated by `rotation` and scaled by `scale`, in one resampling.

    A crop just large enough to hold the rotated patch is cut first, so the resampling
    (trilinear for scans, trilinear then > 0.5 for regions) touches only that box.
    """
    half = patch * scale / 2.0
    extent = np.abs(rotation) @ half                        # half-size of the rotated patch's bounding box
    size = 2 * np.ceil(extent).astype(int) + 2
    start = _start(centre, size, case.x.shape[1:])
    # sample around the crop's own centre when the crop had to be moved to stay inside the volume
    xs = torch.from_numpy(_crop(case.x, start, size).astype(np.float32))
    ys = torch.from_numpy(_crop(case.regions, start, size).astype(np.float32))
    # output normalised coords -> input normalised coords (align_corners=False), axes (d, h, w)
    theta = np.diag(2.0 / size) @ rotation @ np.diag(half)
    theta = theta[::-1, ::-1].copy()                       # grid_sample wants (x, y, z) = (w, h, d)
    affine = torch.zeros(1, 3, 4, dtype=torch.float32)
    affine[0, :, :3] = torch.from_numpy(theta)
    grid = F.affine_grid(affine, [1, 1] + [int(p) for p in patch], align_corners=False)
    x = F.grid_sample(xs[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    y = (F.grid_sample(ys[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0] > 0.5)
    return x, y.float()


class PatchSampler:
    """Augmented training batches: tumour-centred or random crops, scaling, flips, modality dropping."""

    def __init__(self, cases: Sequence[LoadedCase], cfg: TrainConfig, rank: int = 0,
                 order: Sequence[str] = ()):
        """`order`: the network's modality names (channel order); the scan that inference would
        use as the reference grid keeps its place under `series_shift_prob`."""
        if not cases:
            raise InputError("no training case for this process: give more training cases than processes")
        self.cases = list(cases)
        self.cfg = cfg
        self.rank = rank
        self.order = list(order)
        # balanced_subsets: every presence mask some training case can serve, with its servers
        union = np.any([c.present for c in self.cases], axis=0)
        self.servers = {tuple(m): [i for i, c in enumerate(self.cases) if np.all(c.present[m])]
                        for m in subset_choices(union, full=False)}
        self.servable = [np.array(m) for m, who in self.servers.items() if who]
        self.singles = [np.array(m) for m in self.servable if m.sum() == 1]
        # a sample of tumour voxels per case, for tumour-centred crops
        self.tumour = []
        for c in self.cases:
            pts = np.argwhere(c.regions[2])
            if len(pts) > 4000:
                pts = pts[np.random.default_rng(0).choice(len(pts), 4000, replace=False)]
            self.tumour.append(pts)
        mixing = cfg.lesion_mix_prob > 0 or cfg.fabricate_prob > 0
        self.donors = make_donors(self.cases, cfg.spacing) if mixing else []
        self.levels = measure_levels(self.cases) if cfg.fabricate_prob > 0 else None

    def rng(self, step: int) -> np.random.Generator:
        return np.random.default_rng([self.cfg.seed, self.rank, int(step)])

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x (B, M, *patch) float32, target (B, 3, *patch) float32, present (B, M) bool) for `step`."""
        rng = self.rng(step)
        full = step < self.cfg.warmup_steps
        cfg = self.cfg
        fabricate = share_at(step, cfg.fabricate_prob, cfg.fabricate_until, cfg.total_steps)
        xs, ys, ps = [], [], []
        for _ in range(self.cfg.batch):
            x, y, p = self._sample(rng, full, fabricate)
            xs.append(x)
            ys.append(y)
            ps.append(p)
        return torch.stack(xs), torch.stack(ys), torch.from_numpy(np.stack(ps))

    def _sample(self, rng: np.random.Generator, full: bool,
                fabricate: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        cfg = self.cfg
        # drawn only while fabrication is on, so recipes without it (and a run after its
        # fabrication stage) draw the plain recipe's batches exactly
        fabricated = fabricate > 0 and rng.random() < fabricate
        present = None
        if cfg.balanced_subsets and not full:
            # subset first, then a case that has its scans: drawing the case first let the
            # partial cases (FLAIR + T1ce, T1 only) supply most single-scan samples and left
            # T2 alone, which only four-scan cases have, with a 25th of them
            present = draw_subset(self.servable, rng)
            who = self.servers[tuple(present)]
            i = who[int(rng.integers(len(who)))]
        elif cfg.single_first and not full and rng.random() < SINGLE_SHARE:
            # the scan first: T2 alone, which only four-scan cases give, and T1 alone, which the
            # T1-only case otherwise supplies, get their quarter of the single-scan samples
            present = self.singles[int(rng.integers(len(self.singles)))]
            who = self.servers[tuple(present)]
            i = who[int(rng.integers(len(who)))]
        else:
            i = int(rng.integers(len(self.cases)))
        case = self.cases[i]
        if cfg.single_first and not full and present is None:
            several = [m for m in subset_choices(case.present, full=False) if m.sum() >= 2]
            present = draw_subset(several, rng) if several else case.present.copy()
        shape = case.x.shape[1:]
        patch = np.asarray(cfg.patch)
        scale = rng.uniform(*cfg.scale_range)
        # a fabricated tumour goes into tissue anywhere, not next to the case's own tumour
        if not fabricated and rng.random() < cfg.centred_fraction and len(self.tumour[i]):
            centre = self.tumour[i][int(rng.integers(len(self.tumour[i])))]
        else:
            centre = np.array([rng.integers(0, n) for n in shape])
        rotation = None
        if cfg.rotation_deg > 0 and rng.random() < ROTATION_P:
            rotation = random_rotation(rng, cfg.rotation_deg)
        if rotation is None:
            x, y = _scaled_crop(case, centre, patch, scale)
        else:
            x, y = _rotated_crop(case, centre, patch, scale, rotation)
        if cfg.flip:
            dims = [d + 1 for d in range(3) if rng.random() < 0.5]
            if dims:
                x, y = x.flip(dims), y.flip(dims)
        if present is None:
            present = draw_subset(subset_choices(case.present, full), rng)
        # drawn only when mixing is on, so recipes without it keep their batches exactly
        if cfg.lesion_mix_prob > 0 and rng.random() < cfg.lesion_mix_prob:
            x, y, _ = mix_lesion(x, y, present, self.donors, rng, recipient=i)
        if fabricated and self.levels is not None:
            x, y, _ = fabricate_tumour(x, y, present, self.levels, self.donors, rng, float(min(cfg.spacing)))
        if cfg.series_shift_prob > 0:
            order = [self.order[c] for c in np.flatnonzero(present)] if self.order else []
            reference = default_reference(order) if order else None
            for c in np.flatnonzero(present):
                if (not self.order or self.order[c] != reference) and rng.random() < cfg.series_shift_prob:
                    x[c] = misregister(x[c], rng, float(min(cfg.spacing)))
        if cfg.intensity_augment:
            thick = max(cfg.thick_slice_prob, THICK_SLICE_P) if fabricated else cfg.thick_slice_prob
            x = augment_intensities(x, present, rng, thick, float(min(cfg.spacing)))
        x = x * torch.from_numpy(present.astype(np.float32)).view(-1, 1, 1, 1)  # absent scans are zeros
        return x.contiguous(), y.contiguous(), present
