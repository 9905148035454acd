"""Intensity augmentation: changes present scans inside the brain only, reproducibly per step."""
from __future__ import annotations

import numpy as np
import torch

from lckd.research.scaneffects import gaussian_blur
from lckd.research.training.augment import augment_intensities


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
    assert torch.allclose(gaussian_blur(const, 1.0), const, atol=1e-5)
    noise = torch.randn((24, 24, 24), generator=torch.Generator().manual_seed(1))
    assert gaussian_blur(noise, 1.0).std() < 0.5 * noise.std()


def test_thick_slices_average_slabs_along_one_axis_only():
    from lckd.research.scaneffects import thick_slices

    v = torch.arange(12, dtype=torch.float32).view(12, 1, 1).expand(12, 6, 6).contiguous()
    t = thick_slices(v, 0, 4)
    assert t.shape == v.shape
    # the slab means (1.5, 5.5, 9.5) are kept at the slabs' centres, edges are held flat
    assert torch.allclose(t[:2, 0, 0], torch.tensor([1.5, 1.5]))
    assert torch.allclose(t[-2:, 0, 0], torch.tensor([9.5, 9.5]))
    assert torch.allclose(t.mean(), v.mean())
    assert torch.equal(thick_slices(v, 1, 4), v)        # constant along y: nothing to average
    noise = torch.randn((8, 30, 8), generator=torch.Generator().manual_seed(0))
    # detail is lost along the thick axis only
    assert (thick_slices(noise, 1, 5).diff(dim=1).abs().mean() < 0.5 * noise.diff(dim=1).abs().mean())


def test_thick_slice_augmentation_happens_and_keeps_the_background():
    x = _patch()
    present = np.ones(4, dtype=bool)
    plain = [augment_intensities(x, present, np.random.default_rng(s)) for s in range(10)]
    thick = [augment_intensities(x, present, np.random.default_rng(s), thick_slice_prob=1.0) for s in range(10)]
    assert all(torch.all(y[:, x[0] == 0] == 0) for y in thick)
    assert all(not torch.allclose(a, b) for a, b in zip(plain, thick))


def _case(shape=(60, 70, 80)):
    from lckd.research.training.data import LoadedCase

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4,) + shape).astype(np.float16)
    regions = np.zeros((3,) + shape, dtype=bool)
    regions[:, 20:40, 25:45, 10:70] = True                 # long along x
    return LoadedCase("c", x, np.ones(4, dtype=bool), regions, (1.0, 1.0, 1.0))


def test_rotated_crop_matches_the_plain_crop_without_rotation_and_turns_labels_with_a_rotation():
    from lckd.research.training.data import _rotated_crop, _scaled_crop

    case, centre, patch = _case(), np.array([30, 35, 40]), np.array([32, 32, 48])
    a, ya = _scaled_crop(case, centre, patch, 1.0)
    b, yb = _rotated_crop(case, centre, patch, 1.0, np.eye(3))
    assert torch.allclose(a, b, atol=1e-3) and torch.equal(ya, yb)
    quarter = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])   # 90 degrees about z: y and x swap
    c, yc = _rotated_crop(case, centre, np.array([48, 48, 48]), 1.0, quarter)
    extent = [int(yc[2].sum(dim=[d for d in range(3) if d != k]).gt(0).sum()) for k in range(3)]
    assert extent == [20, 48, 20]                           # the x-long box now lies along y


def test_sampler_with_rotation_gives_patches_of_the_right_shape_and_binary_targets():
    from lckd.research.training.data import PatchSampler
    from lckd.research.training.presets import CPU_REAL

    cfg = CPU_REAL.with_overrides(patch=(32, 32, 32), batch=4)
    s = PatchSampler([_case()], cfg)
    x, y, present = s.batch(cfg.warmup_steps + 1)
    assert x.shape == (4, 4, 32, 32, 32) and y.shape == (4, 3, 32, 32, 32)
    assert set(torch.unique(y).tolist()) <= {0.0, 1.0}
    assert torch.equal(x, s.batch(cfg.warmup_steps + 1)[0])   # a function of the step (exact resume)
