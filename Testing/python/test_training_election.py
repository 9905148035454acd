"""End to end: a short LCKD run on phantoms elects T1ce for ET and TC and FLAIR for WT.

Small phantoms (the whole brain on a 64 x 96 x 96 grid, 2.5 mm voxels) with randomised
appearance, 32^3 patches, a few hundred steps: a couple of minutes on 2 CPU cores.
"""
from __future__ import annotations

import pytest

from lckd.datasets import write_split
from lckd.phantom import write_phantom_dataset
from lckd.training.presets import TrainConfig
from lckd.training.trainer import RunOptions, Trainer

SHAPE = (64, 96, 96)


@pytest.mark.slow
def test_short_training_elects_t1ce_for_the_core_and_flair_for_the_whole_tumour(tmp_path):
    ids = [p.name for p in write_phantom_dataset(tmp_path / "data", 12, seed=900, shape=SHAPE)]
    write_split(tmp_path / "split.csv", {"train": ids[:9], "val": ids[9:]})
    cfg = TrainConfig(patch=(32, 32, 32), batch=2, warmup_steps=60, missing_steps=240, optimizer="adamw",
                      lr=3e-3, election_every=150, election_cases=0, checkpoint_every=1000, seed=1)
    opts = RunOptions(data=str(tmp_path / "data"), split=str(tmp_path / "split.csv"), out=str(tmp_path / "run"),
                      progress=False, final_eval=False, threads=2, log=lambda s: None)
    trainer = Trainer(cfg, opts)
    trainer.train()
    final = trainer.meta["history"][-1]
    table = final["table"]
    assert final["step"] == cfg.total_steps
    assert max(table, key=lambda m: table[m]["ET"]) == "T1ce", table
    assert max(table, key=lambda m: table[m]["TC"]) == "T1ce", table
    assert max(table, key=lambda m: table[m]["WT"]) == "FLAIR", table
    assert final["elected"] == ["T1ce", "FLAIR"]
