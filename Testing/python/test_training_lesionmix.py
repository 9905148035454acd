"""Lesion mixing, fabricated tumours and single-scan-first sampling: what a mixed or painted patch
holds, and who serves whom."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from lckd.base.labels import labels_to_regions
from lckd.base.modalities import MODALITIES
from lckd.prep.modelgrid import LoadedCase
from lckd.prep.preprocess import prepare_case
from lckd.research.phantom import make_phantom
from lckd.research.training.data import PatchSampler, _scaled_crop
from lckd.research.training.fabricate import HEALTHY, OEDEMA, fabricate_tumour, measure_levels, share_at
from lckd.research.training.lesionmix import make_donors, mix_lesion
from lckd.research.training.presets import CPU_REAL

SHAPE = (56, 72, 72)


def _case(seed: int, drop: tuple = ()) -> LoadedCase:
    ph = make_phantom(seed, SHAPE)
    images = {m: a for m, a in ph.images.items() if m not in drop}
    prepared = prepare_case(images, list(MODALITIES))
    regions = labels_to_regions(ph.label[prepared.box])
    return LoadedCase(f"P{seed}", prepared.x, prepared.present, regions, (1.0, 1.0, 1.0))


@pytest.fixture(scope="module")
def cases() -> list[LoadedCase]:
    return [_case(1), _case(2), _case(3, drop=("T1", "T2"))]


def _healthy_patch(case: LoadedCase) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """A 32^3 patch of `case` with as little tumour as the phantom allows."""
    shape = np.array(case.x.shape[1:])
    best = None
    for centre in np.ndindex(3, 3, 3):
        c = (np.array(centre) + 1) * shape // 4
        x, y = _scaled_crop(case, c, np.array([32, 32, 32]), 1.0)
        score = (float(y[2].sum()), -float((x[0] != 0).sum()))
        if best is None or score < best[0]:
            best = (score, x, y, c)
    return best[1], best[2], best[3]


def test_donors_hold_the_tumour_and_its_rim(cases):
    donors = make_donors(cases, (1.0, 1.0, 1.0))
    assert [d.case_index for d in donors] == [0, 1, 2]
    for d, c in zip(donors, cases):
        assert d.regions[2].sum() == c.regions[2].sum()                 # the whole tumour is in the box
        assert np.all(d.distance[d.regions[2]] == 0)
        assert np.all(d.distance[~d.regions[2]] > 0)
        assert np.array_equal(d.present, c.present)


def test_a_mixed_patch_carries_the_donor_tumour_with_consistent_labels(cases):
    donors = make_donors(cases, (1.0, 1.0, 1.0))
    x, y, _ = _healthy_patch(cases[0])
    present = np.ones(4, dtype=bool)
    mixed = 0
    for seed in range(12):
        x2, y2, ok = mix_lesion(x, y, present, donors, np.random.default_rng(seed), recipient=0)
        if not ok:
            continue
        mixed += 1
        brain = (x != 0).any(0)
        assert y2[2].sum() > y[2].sum()                                  # new tumour in the patch
        assert torch.all(y2[:, ~brain] == y[:, ~brain])                  # no label outside the brain
        assert torch.all(x2[:, ~brain] == 0)                             # background stays 0
        assert torch.all(y2[0] <= y2[1]) and torch.all(y2[1] <= y2[2])   # ET in TC in WT
        changed = (x2 != x).any(0)
        far = ~changed
        assert torch.equal(y2[:, far], y[:, far])                        # labels change only where the image did
        assert torch.isfinite(x2).all()
    assert mixed >= 8


def test_same_generator_same_mix_and_donors_need_the_scans(cases):
    donors = make_donors(cases, (1.0, 1.0, 1.0))
    x, y, _ = _healthy_patch(cases[0])
    present = np.ones(4, dtype=bool)
    a = mix_lesion(x, y, present, donors, np.random.default_rng(5), recipient=0)
    b = mix_lesion(x, y, present, donors, np.random.default_rng(5), recipient=0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
    # only the FLAIR + T1ce case lacks T2: with T2 in the sample it may never donate
    only_partial = [d for d in donors if not d.present[MODALITIES.index("T2")]]
    t2 = np.array([m == "T2" for m in MODALITIES])
    out = mix_lesion(x, y, t2, only_partial, np.random.default_rng(0), recipient=0)
    assert out[2] is False and out[0] is x


def test_sampler_mixes_the_share_it_is_told(cases):
    cfg = replace(CPU_REAL, patch=(32, 32, 32), batch=2, lesion_mix_prob=1.0, rotation_deg=0.0,
                  intensity_augment=False, centred_fraction=0.0)
    plain = PatchSampler(cases, replace(cfg, lesion_mix_prob=0.0), order=list(MODALITIES))
    mixing = PatchSampler(cases, cfg, order=list(MODALITIES))
    assert plain.donors == [] and len(mixing.donors) == 3
    more = 0
    for step in range(600, 612):
        _, y0, _ = plain.batch(step)
        _, y1, _ = mixing.batch(step)
        more += int(y1[:, 2].sum() > y0[:, 2].sum())
    assert more >= 6                           # random crops gain tumour when every sample is mixed


def test_single_first_gives_each_scan_its_share(cases):
    cfg = replace(CPU_REAL, patch=(16, 16, 16), batch=1, single_first=True, rotation_deg=0.0,
                  intensity_augment=False, lesion_mix_prob=0.0)
    sampler = PatchSampler(cases, cfg, order=list(MODALITIES))
    counts: dict = {}
    for step in range(cfg.warmup_steps, cfg.warmup_steps + 1200):
        p = sampler.batch(step)[2][0].numpy()
        key = "+".join(m for m, b in zip(MODALITIES, p) if b)
        counts[key] = counts.get(key, 0) + 1
    singles = [counts.get(m, 0) for m in MODALITIES]
    assert 0.25 < sum(singles) / 1200 < 0.42                  # a third of the samples
    assert min(singles) > 60                                  # T1 and T2 alone too (only 2 of 3 cases have them)
    assert counts.get("T1ce+FLAIR", 0) > counts.get("T1+T2", 0)  # the partial case trains as its pair


# --- fabricated tumours (training/fabricate.py) -------------------------------------------


def test_contrast_levels_are_measured_per_case_scan_and_class(cases):
    levels = measure_levels(cases)
    assert levels.median.shape == (3, 4, 4)
    flair, t2 = MODALITIES.index("FLAIR"), MODALITIES.index("T2")
    # the phantoms' oedema is bright on FLAIR, as in gliomas
    assert np.all(levels.median[:, flair, OEDEMA] > levels.median[:, flair, HEALTHY] + 0.5)
    assert np.isnan(levels.median[2, t2]).all()                       # case 3 has no T2
    assert np.isfinite(levels.median[:2, t2]).all()


def test_a_fabricated_tumour_is_painted_where_its_labels_are(cases):
    levels = measure_levels(cases)
    donors = make_donors(cases, (1.0, 1.0, 1.0))
    x, y, _ = _healthy_patch(cases[0])
    present = np.ones(4, dtype=bool)
    flair = MODALITIES.index("FLAIR")
    made = 0
    for seed in range(10):
        x2, y2, ok = fabricate_tumour(x, y, present, levels, donors, np.random.default_rng(seed))
        if not ok:
            continue
        made += 1
        brain = (x != 0).any(0)
        new = (y2[2] > 0.5) & (y[2] < 0.5)
        assert int(new.sum()) >= 300                                     # a tumour of its own
        assert torch.all(y2[:, ~brain] == y[:, ~brain]) and torch.all(x2[:, ~brain] == 0)
        assert torch.all(y2[0] <= y2[1]) and torch.all(y2[1] <= y2[2])   # ET in TC in WT
        assert torch.equal(y2[:, ~(x2 != x).any(0)], y[:, ~(x2 != x).any(0)])  # labels only where painted
        assert torch.all(y2 >= y)                                        # the recipient's own labels kept
        oedema = new & (y2[1] < 0.5)
        if int(oedema.sum()) > 100:                                      # oedema brighter on FLAIR than before
            assert float(x2[flair][oedema].mean()) > float(x[flair][oedema].mean()) + 0.3
        assert torch.isfinite(x2).all()
    assert made >= 7
    a = fabricate_tumour(x, y, present, levels, donors, np.random.default_rng(3))
    b = fabricate_tumour(x, y, present, levels, donors, np.random.default_rng(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])           # resume draws the same


def test_fabrication_is_a_stage_that_ends(cases):
    assert share_at(0, 0.5, 0.5, 4000) == 0.5
    assert share_at(1000, 0.5, 0.5, 4000) == pytest.approx(0.25)
    assert share_at(2000, 0.5, 0.5, 4000) == 0.0 and share_at(3999, 0.5, 0.5, 4000) == 0.0
    cfg = replace(CPU_REAL, patch=(32, 32, 32), batch=2, rotation_deg=0.0, intensity_augment=False)
    plain = PatchSampler(cases, cfg, order=list(MODALITIES))
    fab = PatchSampler(cases, replace(cfg, fabricate_prob=1.0, fabricate_until=0.5), order=list(MODALITIES))
    late = cfg.total_steps - 5                                           # after the stage: the plain batches
    assert all(torch.equal(a, b) for a, b in zip(plain.batch(late), fab.batch(late)))
    more = sum(int(fab.batch(s)[1][:, 2].sum() > plain.batch(s)[1][:, 2].sum()) for s in range(600, 606))
    assert more >= 4                                                     # early on, tumours are added
