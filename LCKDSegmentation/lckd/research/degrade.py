"""Clinical-slice degradation of a loaded case: how a BraTS case looks when it comes from 2D series.

Cross-validation scores each test case twice: as BraTS gives it (1 mm, co-registered) and
degraded the way a clinical study looks (`clinical_slices`): T1, T2 and FLAIR as 2D series
of 5-6 mm slices, each acquired at its own tilt of up to 3 degrees, with a smooth bias
field of its own; T1ce stays a 1 mm 3D scan (the usual post-contrast volume). The series
are then brought back onto the case's 1 mm model grid, as inference resamples every scan
onto the reference grid and model spacing: the network sees the slab blur, the partial
volume and the intensity drift, not a misregistration (the geometry is exact, as a
correct header gives it). Deterministic for a given case id and seed.
"""
from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from ..prep.modelgrid import LoadedCase
from .scaneffects import random_rotation, restandardise, rigid_resample, smooth_field, thick_slices

#: Slice thickness of the simulated 2D series (mm), their tilt (degrees) and bias strength.
SLICE_MM = (5.0, 6.0)
TILT_DEGREES = 3.0
BIAS_STD = 0.2
#: Scans kept as 1 mm 3D volumes.
KEPT_3D = ("T1ce",)


def clinical_slices(case: LoadedCase, order: Sequence[str], seed: int = 0) -> tuple[LoadedCase, np.ndarray]:
    """The case as clinical 2D series would show it, and each channel's slice thickness (mm).

    Args:
        case: a case on the model grid (`lckd.prep.modelgrid.load_case`), normalised.
        order: the modality name of each channel of `case.x`.
        seed: with the case id, fixes every draw (the same degraded case in every fold and run).
    Returns:
        (degraded case, (M,) slice thickness per channel in mm; the grid's own for 3D scans).
    """
    spacing_zyx = np.asarray(tuple(reversed(case.spacing)), dtype=float)
    thickness = np.full(len(order), float(spacing_zyx.max()))
    x = case.x.astype(np.float32, copy=True)
    for c, name in enumerate(order):
        if not case.present[c] or name in KEPT_3D:
            continue
        rng = np.random.default_rng([seed, zlib.crc32(case.case_id.encode("utf-8")), c])
        v = torch.from_numpy(x[c])
        brain = v != 0
        if not bool(brain.any()):
            continue
        mm = float(rng.uniform(*SLICE_MM))
        factor = max(int(round(mm / spacing_zyx[0])), 1)
        gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        lo = v[brain].min()
        v = lo + (v - lo) * torch.exp(float(BIAS_STD) * smooth_field(tuple(v.shape), gen))
        tilt = random_rotation(rng, TILT_DEGREES)
        # acquire along the tilted slice direction, then back onto the grid
        v = rigid_resample(thick_slices(rigid_resample(v, tilt), 0, factor), tilt.T)
        v = restandardise(v, brain)
        x[c] = torch.where(brain, v, torch.zeros((), dtype=v.dtype)).numpy()
        thickness[c] = factor * spacing_zyx[0]
    return replace(case, x=x.astype(case.x.dtype, copy=False)), thickness
