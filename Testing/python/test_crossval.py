"""Cross-validation: fold plan rules on a real case folder, the over-folds table, the split files."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lckd.base.errors import InputError
from lckd.io.datasets import find_cases, load_split, write_case
from lckd.research.crossval import aggregate, card_evaluation, fold_plan, format_table, write_plan, write_report


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """7 complete cases, 2 FLAIR+T1ce cases, 1 T1-only case and 1 unlabelled case (tiny images)."""
    import SimpleITK as sitk

    root = tmp_path_factory.mktemp("cv")
    img = sitk.GetImageFromArray(np.ones((4, 5, 6), dtype=np.int16))
    lab = sitk.GetImageFromArray(np.zeros((4, 5, 6), dtype=np.uint8))
    four = {m: img for m in ("T1", "T1ce", "T2", "FLAIR")}
    for i in range(7):
        write_case(root, f"full{i}", four, lab)
    for i in range(2):
        write_case(root, f"pair{i}", {"T1ce": img, "FLAIR": img}, lab)
    write_case(root, "t1only", {"T1": img}, lab)
    write_case(root, "nolabel", four, None)
    return root


def test_complete_cases_rotate_partial_and_pinned_cases_always_train(folder):
    plan = fold_plan(find_cases(folder), k=3, seed=1, train_only=["full6"])
    folds = plan["folds"]
    tests = [c for f in folds for c in f["test"]]
    assert sorted(tests) == [f"full{i}" for i in range(6)]            # each rotating case tested once
    assert sorted(len(f["test"]) for f in folds) == [2, 2, 2]
    for f in folds:
        assert not set(f["test"]) & set(f["val"]) and not set(f["train"]) & (set(f["test"]) | set(f["val"]))
        assert len(f["val"]) == 1 and f["val"][0].startswith("full")
        assert {"pair0", "pair1", "t1only", "full6"} <= set(f["train"])
        assert "nolabel" not in f["train"] + f["test"] + f["val"]
    assert fold_plan(find_cases(folder), k=3, seed=1, train_only=["full6"]) == plan    # deterministic
    assert fold_plan(find_cases(folder), k=3, seed=2, train_only=["full6"]) != plan


def test_write_plan_gives_split_files_training_and_evaluation_read(folder, tmp_path):
    plan = fold_plan(find_cases(folder), k=2)
    paths = write_plan(plan, tmp_path)
    assert json.loads((tmp_path / "plan.json").read_text()) == plan
    for fold, path in zip(plan["folds"], paths):
        split = load_split(path)
        assert {k: sorted(v) for k, v in split.items()} == {k: sorted(fold[k]) for k in ("train", "val", "test")}


def test_too_few_complete_cases_for_k_is_refused(folder):
    with pytest.raises(InputError, match="7 complete labelled case"):
        fold_plan(find_cases(folder), k=8)


def _report(values: dict, cases: list) -> dict:
    from lckd.research.evaluate import summarise

    rows = [{"case_id": c, "subset": s, "ET": v, "TC": v, "WT": v, "HD95_ET": 10 * v, "HD95_TC": 1.0,
             "HD95_WT": 2.0} for s, v in values.items() for c in cases]
    return summarise(rows, list(values))


def test_aggregate_is_the_mean_and_sd_over_folds(tmp_path):
    folds = [_report({"T1": 0.2, "FLAIR": 0.8}, ["a", "b"]), _report({"T1": 0.4, "FLAIR": 0.6}, ["c"])]
    rep = aggregate(folds)
    assert rep["per_subset"]["T1"]["ET"] == pytest.approx(0.3)
    assert rep["per_subset"]["T1"]["ET_sd"] == pytest.approx(np.std([0.2, 0.4], ddof=1))
    assert rep["per_subset"]["T1"]["cases"] == 3 and rep["per_subset"]["T1"]["folds"] == 2
    assert rep["mean"]["WT"] == pytest.approx(0.5) and rep["mean"]["WT_sd"] == pytest.approx(0.0)
    assert rep["cases"] == ["a", "b", "c"]
    assert "0.300 ± 0.141" in format_table(rep)
    assert "0.300 +/- 0.141" in format_table(rep, markdown=False, pm="+/-")
    names = sorted(p.name for p in write_report(rep, tmp_path))
    assert names == ["crossval.csv", "crossval.json", "crossval.md"]
    assert "raw" not in rep                                   # no clean-up, nothing to compare
    for fold, raw in zip(folds, ([0.1, 0.7], [0.3, 0.5])):
        fold["raw"] = _report({"T1": raw[0], "FLAIR": raw[1]}, fold["cases"])
        fold["postprocess"] = {"keep_fraction": 0.1}
    both = aggregate(folds)
    assert both["raw"]["per_subset"]["T1"]["ET"] == pytest.approx(0.2)
    assert both["per_subset"]["T1"]["ET"] == pytest.approx(0.3)
    md = write_report(both, tmp_path)[1].read_text(encoding="utf-8")
    assert "without it the 15-subset mean is Dice ET 0.400" in md
    card = card_evaluation(rep, "data")
    assert card["per_subset"]["FLAIR"]["WT"] == pytest.approx(0.7) and card["folds"] == 2
    assert "per_case" not in card


def test_every_fold_trains_with_the_recipe_the_command_line_gives():
    import argparse

    from lckd.research.crossval import add_crossval_parser, crossval_config
    from lckd.research.training.command import add_train_parser, config_from_args
    from lckd.research.training.presets import DEFAULT_PRESET, PRESETS

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_crossval_parser(sub)
    add_train_parser(sub)
    default = crossval_config(parser.parse_args(["crossval", "data", "--out", "o"]))
    assert default == PRESETS[DEFAULT_PRESET].with_overrides(seed=0)
    flags = ["--preset", "cpu-real", "--init-from", "lckd-lite-phantom", "--centred-fraction", "0.33", "--seed", "3",
             "--lr", "1e-3", "--missing-steps", "10", "--patch", "32"]
    cfg = crossval_config(parser.parse_args(["crossval", "data", "--out", "o"] + flags))
    assert (cfg.preset, cfg.init_from, cfg.centred_fraction, cfg.seed, cfg.lr, cfg.missing_steps, cfg.patch) == \
        ("cpu-real", "lckd-lite-phantom", 0.33, 3, 1e-3, 10, (32, 32, 32))
    # one recipe parser: `lckd train` reads the same flags into the same recipe
    assert config_from_args(parser.parse_args(["train", "data", "--out", "o"] + flags)) == cfg
    random_start = crossval_config(parser.parse_args(["crossval", "data", "--out", "o", "--init-from", "none"]))
    assert random_start.init_from == "" and default.init_from == "lckd-lite-phantom"
