"""LCKD loss and teacher election: values, the detached teacher, mixed subsets, hand-made tables."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lckd.base.modalities import MODALITIES
from lckd.research.training.data import draw_subset, subset_choices
from lckd.research.training.election import elect
from lckd.research.training.losses import (
    bottleneck_loss,
    distillation_loss,
    lckd_loss,
    segmentation_loss,
    soft_dice_loss,
)


def _target(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(2, 3, 8, 8, 8, generator=g) > 0.7).float()


def test_segmentation_loss_is_small_for_a_perfect_and_large_for_a_wrong_prediction():
    y = _target()
    perfect = (y * 2 - 1) * 20.0
    assert segmentation_loss(perfect, y).item() < 0.01
    assert segmentation_loss(-perfect, y).item() > 1.9          # Dice ~1 plus a large BCE
    neutral = segmentation_loss(torch.zeros_like(y), y).item()  # p = 0.5 everywhere
    assert math.isclose(neutral, soft_dice_loss(torch.zeros_like(y), y).item() + math.log(2), rel_tol=1e-5)


def test_bottleneck_loss_targets_the_tumour_fraction_of_each_coarse_voxel():
    y = torch.zeros(1, 3, 8, 8, 8)
    y[:, :, :4, :4, :4] = 1                              # fills coarse voxel (0, 0, 0) of a 2^3 grid
    y[:, 2, 4:6, 4:8, 4:8] = 1                           # WT half fills voxel (1, 1, 1)
    soft = torch.zeros(1, 3, 2, 2, 2)
    soft[:, :, 0, 0, 0] = 1
    soft[:, 2, 1, 1, 1] = 0.5
    logit = torch.logit(soft.clamp(1e-4, 1 - 1e-4))       # predicts exactly the fractions
    assert math.isclose(bottleneck_loss(logit, y).item(), segmentation_loss(logit, soft).item(), rel_tol=1e-6)
    wrong = logit.clone()
    wrong[:, :, 0, 0, 0] = -10.0
    assert bottleneck_loss(wrong, y).item() > bottleneck_loss(logit, y).item() + 0.5


def test_dice_of_an_empty_region_predicted_empty_is_perfect():
    y = torch.zeros(1, 3, 4, 4, 4)
    assert soft_dice_loss(torch.full_like(y, -30.0), y).item() < 1e-6


def _features(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, 5, 2, 2, 2, generator=g).requires_grad_(True)


def test_kd_weight_zero_gives_the_segmentation_loss_alone():
    y, f = _target(), _features()
    present = torch.ones(2, 4, dtype=torch.bool)
    total, seg, kd = lckd_loss(torch.zeros_like(y), y, f, present, [1], kd_weight=0.0)
    assert kd.item() == 0.0 and total.item() == seg.item()
    total, seg, kd = lckd_loss(torch.zeros_like(y), y, f, present, [1], kd_weight=0.1)
    assert kd.item() > 0 and math.isclose(total.item(), seg.item() + 0.1 * kd.item(), rel_tol=1e-6)


def test_distillation_gradient_reaches_students_only():
    f = _features()
    present = torch.tensor([[True, True, False, True], [True, True, True, True]])
    distillation_loss(f, present, teachers=[1]).backward()
    g = f.grad
    assert g[:, 1].abs().sum() == 0                # the teacher (T1ce) is detached
    assert g[0, 2].abs().sum() == 0                # absent in sample 0: no term
    for b, s in ((0, 0), (0, 3), (1, 0), (1, 2), (1, 3)):
        assert g[b, s].abs().sum() > 0


def test_distillation_is_per_sample_and_needs_a_present_teacher():
    f = _features()
    # sample 0 lacks the teacher, sample 1 has only the teacher: no pair anywhere
    present = torch.tensor([[True, False, True, False], [False, True, False, False]])
    assert distillation_loss(f, present, teachers=[1]).item() == 0.0
    # two teachers present together distil into each other (each detached in its own role)
    present = torch.tensor([[False, True, False, True], [False, False, False, True]])
    loss = distillation_loss(f, present, teachers=[1, 3])
    expected = ((f[0, 3] - f[0, 1]).abs().mean() + (f[0, 1] - f[0, 3]).abs().mean()) / 2
    assert torch.allclose(loss, expected)


def test_election_picks_the_best_modality_per_region_and_unites_them():
    table = {"T1": {"ET": 0.10, "TC": 0.30, "WT": 0.50},
             "T1ce": {"ET": 0.70, "TC": 0.65, "WT": 0.55},
             "T2": {"ET": 0.05, "TC": 0.30, "WT": 0.70},
             "FLAIR": {"ET": 0.08, "TC": 0.35, "WT": 0.80}}
    assert elect(table, MODALITIES) == ["T1ce", "FLAIR"]
    table["T2"]["TC"] = 0.9
    assert elect(table, MODALITIES) == ["T1ce", "T2", "FLAIR"]
    single = {m: {"ET": 0.5, "TC": 0.5, "WT": 0.5} for m in MODALITIES}
    assert elect(single, MODALITIES) == ["T1"]    # ties go to the first in the model's order


def test_missing_phase_draws_one_to_three_of_four():
    full = np.ones(4, dtype=bool)
    choices = subset_choices(full, full=False)
    assert len(choices) == 14 and all(1 <= c.sum() <= 3 for c in choices)
    assert [c.sum() for c in subset_choices(full, full=True)] == [4]
    only_two = np.array([True, False, False, True])
    assert sorted(int(c.sum()) for c in subset_choices(only_two, full=False)) == [1, 1]


def test_the_number_of_kept_scans_is_uniform_then_the_scans():
    choices = subset_choices(np.ones(4, dtype=bool), full=False)
    rng = np.random.default_rng(0)
    draws = [draw_subset(choices, rng) for _ in range(6000)]
    counts = np.bincount([int(d.sum()) for d in draws], minlength=4)[1:]
    assert np.all(np.abs(counts / len(draws) - 1 / 3) < 0.03), counts
    singles = np.bincount([int(np.flatnonzero(d)[0]) for d in draws if d.sum() == 1], minlength=4)
    assert np.all(np.abs(singles / len(draws) - 1 / 12) < 0.02), singles


def _mixed_cases():
    """Four-scan, FLAIR + T1ce and T1-only cases, as in the shared real data set."""
    from lckd.prep.modelgrid import LoadedCase

    shape = (20, 20, 20)
    regions = np.zeros((3,) + shape, dtype=bool)
    regions[:, 8:12, 8:12, 8:12] = True
    masks = [[1, 1, 1, 1]] * 2 + [[0, 1, 0, 1]] * 3 + [[1, 0, 0, 0]]
    return [LoadedCase(f"c{i}", np.ones((4,) + shape, dtype=np.float16) * np.array(m, np.float16)[:, None, None, None],
                       np.array(m, dtype=bool), regions, (1.0, 1.0, 1.0)) for i, m in enumerate(masks)]


def _missing_phase_draws(balanced: bool, n: int = 400) -> list[tuple[int, tuple]]:
    from lckd.research.training.data import PatchSampler
    from lckd.research.training.presets import CPU_REAL

    cfg = CPU_REAL.with_overrides(patch=(16, 16, 16), batch=1, balanced_subsets=balanced, rotation_deg=0.0,
                                  intensity_augment=False)
    s = PatchSampler(_mixed_cases(), cfg)
    draws = []
    for step in range(cfg.warmup_steps, cfg.warmup_steps + n):
        x, _, present = s.batch(step)
        # the case is recognisable by which scans hold signal (absent scans are zeros)
        assert torch.equal(x[0].flatten(1).abs().amax(1) > 0, present[0])
        draws.append(tuple(present[0].tolist()))
    return [(int(sum(d)), d) for d in draws]


def test_balanced_sampling_gives_every_subset_its_share_whoever_supplies_it():
    balanced = _missing_phase_draws(True)
    sizes = np.bincount([k for k, _ in balanced], minlength=4)[1:]
    assert np.all(np.abs(sizes / len(balanced) - 1 / 3) < 0.08), sizes
    t2_alone = sum(d == (False, False, True, False) for _, d in balanced) / len(balanced)
    assert abs(t2_alone - 1 / 12) < 0.04                   # only the two four-scan cases have T2
    pairs = {d for k, d in balanced if k == 2}
    assert len(pairs) == 6                                 # every pair, FLAIR + T1ce from all five cases that have it
    # case first: the partial cases hand out single scans (here 2/3 of the samples), pairs are rare
    case_first = _missing_phase_draws(False)
    assert sum(k == 1 for k, _ in case_first) / len(case_first) > 0.6
    assert sum(d == (False, False, True, False) for _, d in case_first) < t2_alone * len(case_first)


def test_subset_sampling_is_a_recorded_choice_of_the_preset_and_the_command_line():
    import argparse

    from lckd.research.training.command import add_train_parser, config_from_args
    from lckd.research.training.presets import CPU_REAL, TrainConfig

    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers())
    base = ["train", "data", "--out", "o", "--preset", "cpu-real"]
    assert config_from_args(parser.parse_args(base)).balanced_subsets is False
    assert config_from_args(parser.parse_args(base + ["--balanced-subsets"])).balanced_subsets is True
    # cards written before the option existed reproduce their case-first sampling
    old = {k: v for k, v in CPU_REAL.to_dict().items() if k != "balanced_subsets"}
    assert TrainConfig.from_dict(old).balanced_subsets is False


def test_centred_fraction_sets_the_share_of_crops_on_the_tumour():
    import argparse

    from lckd.prep.modelgrid import LoadedCase
    from lckd.research.training.command import add_train_parser, config_from_args
    from lckd.research.training.data import PatchSampler
    from lckd.research.training.presets import CPU_REAL

    shape = (48, 48, 48)
    regions = np.zeros((3,) + shape, dtype=bool)
    regions[:, 4:8, 4:8, 4:8] = True                      # a small tumour in one corner
    case = LoadedCase("c", np.ones((4,) + shape, dtype=np.float16), np.ones(4, dtype=bool), regions, (1.0,) * 3)

    def share_on_tumour(fraction: float) -> float:
        cfg = CPU_REAL.with_overrides(patch=(16, 16, 16), batch=1, centred_fraction=fraction, rotation_deg=0.0,
                                      intensity_augment=False)
        s = PatchSampler([case], cfg)
        return float(np.mean([s.batch(step)[1].sum() > 0 for step in range(200)]))

    assert share_on_tumour(1.0) == 1.0
    low, high = share_on_tumour(0.0), share_on_tumour(0.6)
    assert low < 0.25 and high > low + 0.4, (low, high)
    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers())
    base = ["train", "data", "--out", "o", "--preset", "cpu-real"]
    assert config_from_args(parser.parse_args(base)).centred_fraction == CPU_REAL.centred_fraction
    assert config_from_args(parser.parse_args(base + ["--centred-fraction", "0.33"])).centred_fraction == 0.33
    for bad in ("1.5", "-0.1", "half"):
        with pytest.raises(SystemExit):
            parser.parse_args(base + ["--centred-fraction", bad])
