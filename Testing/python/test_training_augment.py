"""Intensity augmentation: changes present scans inside the brain only, reproducibly per step."""
from __future__ import annotations

import numpy as np
import torch

from lckd.training.augment import _gaussian_blur, augment_intensities


def _patch() -> torch.Tensor:
    x = torch.zeros(4, 32, 32, 32)
    g = torch.Generator().manual_seed(0)
    x[:, 4:28, 6:26, 5:27] = torch.randn((4, 24, 20, 22), generator=g)
    return x


def test_background_and_absent_scans_are_untouched():
    x = _patch()
    present = np.array([True, True, False, True])
    changed = []
    for seed in range(20):
        y = augment_intensities(x, present, np.random.default_rng(seed))
        assert torch.equal(y[2], x[2])                           # absent scan: not read, not changed
        assert torch.all(y[:, x[0] == 0] == 0)                   # outside the brain stays 0
        assert torch.isfinite(y).all()
        changed.append(not torch.allclose(y[present], x[present]))
    assert sum(changed) >= 15                                     # most draws do something


def test_same_generator_state_same_result():
    x = _patch()
    present = np.ones(4, dtype=bool)
    a = augment_intensities(x, present, np.random.default_rng([3, 0, 17]))
    b = augment_intensities(x, present, np.random.default_rng([3, 0, 17]))
    c = augment_intensities(x, present, np.random.default_rng([3, 0, 18]))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_blur_keeps_the_mean_of_a_constant_and_smooths_noise():
    const = torch.full((16, 16, 16), 2.5)
    assert torch.allclose(_gaussian_blur(const, 1.0), const, atol=1e-5)
    noise = torch.randn((24, 24, 24), generator=torch.Generator().manual_seed(1))
    assert _gaussian_blur(noise, 1.0).std() < 0.5 * noise.std()
