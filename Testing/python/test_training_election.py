"""End to end: a short LCKD run on phantoms elects T1ce for ET and TC and FLAIR for WT.

Whole-brain phantoms at 1.5 mm (104 x 160 x 160 voxels, the BraTS field of view), 36 for
training and 4 for the elections, trained on that grid with 48^3 patches for 3000 steps
(600 with all four scans; about 11 steps per second on 2 idle CPU cores). The number of
training phantoms matters more than the number of steps: with 9 of them T1ce alone still trailed T2 for the
tumour core after 5000 steps (TC 0.61 vs 0.67, two seeds), because the T1ce-only pathway
sees too few tumours to generalise. With 48 (the ablation's setting) the step-3000 election
gave T1ce ET 0.81 / TC 0.86 (next best 0.26 / 0.46) and FLAIR WT 0.82 (T2 0.75); this test's
setting (36 + 4) passes, with T2 still sharing the step-1500 vote.
"""
from __future__ import annotations

import pytest

from lckd.io.datasets import write_split
from lckd.research.phantom import write_phantom_dataset
from lckd.research.training.presets import TrainConfig
from lckd.research.training.trainer import RunOptions, Trainer

SPACING = 1.5
SHAPE = tuple(int(round(n / SPACING)) for n in (155, 240, 240))
N_TRAIN, N_VAL = 36, 4


@pytest.mark.slow
@pytest.mark.timeout(3600)   # 3000 steps: about 5 minutes on 2 idle cores, far more on busy ones
def test_short_training_elects_t1ce_for_the_core_and_flair_for_the_whole_tumour(tmp_path):
    ids = [p.name for p in write_phantom_dataset(tmp_path / "data", N_TRAIN + N_VAL, seed=900, shape=SHAPE,
                                                 spacing=(SPACING,) * 3)]
    write_split(tmp_path / "split.csv", {"train": ids[:N_TRAIN], "val": ids[N_TRAIN:]})
    cfg = TrainConfig(patch=(48, 48, 48), batch=2, warmup_steps=600, missing_steps=2400, optimizer="adamw",
                      lr=2e-3, weight_decay=1e-4, election_every=1500, election_cases=0, election_box=0,
                      checkpoint_every=10 ** 9, seed=0, spacing=(SPACING,) * 3)
    opts = RunOptions(data=str(tmp_path / "data"), split=str(tmp_path / "split.csv"), out=str(tmp_path / "run"),
                      progress=False, final_eval=False, threads=2, log=lambda s: None)
    trainer = Trainer(cfg, opts)
    trainer.train()
    history = trainer.meta["history"]
    assert [h["step"] for h in history] == [0, 1500, 3000]
    final = history[-1]
    table = final["table"]
    assert max(table, key=lambda m: table[m]["ET"]) == "T1ce", table
    assert max(table, key=lambda m: table[m]["TC"]) == "T1ce", table
    assert max(table, key=lambda m: table[m]["WT"]) == "FLAIR", table
    assert final["elected"] == ["T1ce", "FLAIR"]
