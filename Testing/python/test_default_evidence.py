"""The bundled default's card is what its committed cross-validation reports say.

`LCKDSegmentation/Resources/models/lckd-lite-brats/crossval/` holds every cross-validation run
(case x subset, 1 mm and clinical slices, test and validation cases, each tagged with its fold)
and the quality calibration. The card's expected-Dice tables and its calibration must be
recomputable from them, and the folds must be what the plan says: every four-scan case tested
exactly once, by a model that did not train on it.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from lckd.model.registry import resolve_model
from lckd.research.calibration import calibrate, load_runs

ROOT = Path(__file__).resolve().parents[2]
EVIDENCE = ROOT / "LCKDSegmentation" / "Resources" / "models" / "lckd-lite-brats" / "crossval"


def _cv_tables():
    spec = importlib.util.spec_from_file_location("cv_tables", ROOT / "Testing" / "experiments" / "cv_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads(Path(resolve_model("lckd-lite-brats")).read_text(encoding="utf-8"))


def _rows(name: str) -> list[dict]:
    return json.loads((EVIDENCE / name).read_text(encoding="utf-8"))["per_case"]


@pytest.mark.parametrize("condition, report", [("1mm", "crossval.json"), ("clinical", "crossval-clinical.json")])
def test_the_cards_tables_are_recomputed_from_the_committed_runs(card, condition, report):
    table = _cv_tables().recompute(_rows(report))
    stored = card["evaluation"] if condition == "1mm" else card["evaluation"]["clinical"]
    assert stored["folds"] == table["folds"] == 5
    for subset, row in stored["per_subset"].items():
        for region in ("ET", "TC", "WT"):
            assert row[region] == pytest.approx(table["per_subset"][subset][region], abs=1e-9), (subset, region)
    assert stored["mean"]["WT"] == pytest.approx(table["mean"]["WT"], abs=1e-9)


def test_each_case_is_tested_once_by_a_fold_that_did_not_train_on_it():
    plan = json.loads((EVIDENCE / "plan.json").read_text(encoding="utf-8"))
    rows = _rows("crossval.json")
    fold_of = {}
    for r in rows:
        assert fold_of.setdefault(r["case_id"], r["fold"]) == r["fold"], r["case_id"]
    assert len(fold_of) == 22 and len(rows) == 22 * 15
    for case, k in fold_of.items():
        fold = plan["folds"][k]
        assert case in fold["test"] and case not in fold["train"] and case not in fold["val"]
    for r in _rows("crossval-val.json"):
        assert r["case_id"] in plan["folds"][r["fold"]]["val"]


def test_the_cards_calibration_is_recomputed_from_the_committed_runs(card):
    result = calibrate(load_runs(EVIDENCE))
    stored = json.loads((EVIDENCE / "quality-calibration.json").read_text(encoding="utf-8"))
    assert card["quality"]["coef"] == result["calibration"]["coef"] == stored["calibration"]["coef"]
    assert card["quality"]["flag_below"] == result["calibration"]["flag_below"]
    assert card["quality"]["interval"] == result["calibration"]["interval"]
    assert result["scores"]["test_cross_fitted"] == stored["scores"]["test_cross_fitted"]
