"""The per-run quality estimate: its features, reasons and calibration, and the real path from a
cross-validation folder to a calibrated card to the estimate in a segmentation's record."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from lckd.inference.quality import FEATURES, estimate, predict_dice, reasons, run_features, summary_line
from lckd.research.calibration import (
    COVERAGE,
    GOOD,
    LOW,
    MAX_FALSE,
    band,
    calibrate,
    choose_level,
    choose_threshold,
    fit,
)

SHAPE = (40, 60, 80)          # (z, y, x); x runs right -> left on the model grid


def _brain() -> np.ndarray:
    z, y, x = np.ogrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    return ((z - 20) / 18) ** 2 + ((y - 30) / 27) ** 2 + ((x - 40) / 36) ** 2 <= 1


def _ball(centre, r=6) -> np.ndarray:
    z, y, x = np.ogrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= r * r


def _features(wt: np.ndarray, prob_inside=0.95, modalities=("T1ce", "FLAIR"), slice_mm=1.0) -> dict:
    probs = np.zeros((3,) + SHAPE, dtype=np.float32)
    probs[2][wt] = prob_inside
    return run_features(probs, wt, _brain(), (1.0, 1.0, 1.0), modalities, slice_mm)


def test_a_one_sided_tumour_is_not_symmetric_and_a_bilateral_drawing_is():
    one = _ball((20, 30, 20))
    both = one | _ball((20, 30, 60))         # its mirror image across the brain's mid-plane (x = 40)
    f_one, f_both = _features(one), _features(both)
    assert f_one["symmetry"] == 0.0
    assert f_both["symmetry"] > 0.9
    assert "tumour drawn in both hemispheres" in reasons(f_both)
    assert "tumour drawn in both hemispheres" not in reasons(f_one)
    assert f_both["largest_fraction"] == pytest.approx(0.5, abs=0.01)        # two equal pieces
    assert f_one["largest_fraction"] == 1.0
    assert f_one["log_wt_ml"] == pytest.approx(np.log1p(one.sum() / 1000.0))
    assert f_one["wt_brain_fraction"] == pytest.approx(one.sum() / _brain().sum())


def test_confidence_thickness_and_scans_are_measured():
    wt = _ball((20, 30, 20))
    sure, unsure = _features(wt, 0.97), _features(wt, 0.6)
    assert sure["mean_prob"] == pytest.approx(0.97) and unsure["mean_prob"] == pytest.approx(0.6)
    assert unsure["uncertain_ratio"] == pytest.approx(1.0) and sure["uncertain_ratio"] == 0.0
    assert "the network is unsure at the tumour's edges" in reasons(unsure)
    thick = _features(wt, slice_mm=5.5, modalities=("FLAIR",))
    assert [thick[f"has_{m}"] for m in ("T1", "T1ce", "T2", "FLAIR")] == [0, 0, 0, 1]
    assert {"scan slices 5.5 mm thick", "one scan only"} <= set(reasons(thick))
    empty = _features(np.zeros(SHAPE, dtype=bool))
    assert empty["mean_prob"] == 0.0 and "no tumour drawn" in reasons(empty)
    assert set(sure) == set(FEATURES)


def test_without_a_calibration_the_record_says_so_and_keeps_the_reasons():
    record = estimate(_features(_ball((20, 30, 20)) | _ball((20, 30, 60))), None)
    assert record["expected_wt_dice"] is None and record["low_confidence"] is None
    assert "no quality calibration" in record["note"]
    assert record["kind"] == "estimate, not a measurement"
    line = summary_line(record)
    assert line.startswith("quality: not calibrated") and "both hemispheres" in line


def _synthetic_runs(n_cases=10, folds=5, seed=0) -> list[dict]:
    """Runs whose WT Dice falls with symmetry and rises with confidence, plus noise."""
    rng = np.random.default_rng(seed)
    runs = []
    for case in range(n_cases):
        for split in ("test", "val"):
            for k in range(8):
                sym, conf = rng.uniform(0, 0.6), rng.uniform(0.5, 1.0)
                feats = {f: float(rng.uniform(0, 1)) for f in FEATURES}
                feats.update(symmetry=sym, mean_prob=conf)
                dice = float(np.clip(0.9 - 1.2 * sym + 0.4 * (conf - 0.75) + rng.normal(0, 0.05), 0, 1))
                fold = case % folds if split == "test" else (case + folds - 1) % folds
                runs.append({"case_id": f"c{case}", "subset": f"s{k}", "WT": dice, "features": feats,
                             "fold": fold, "split": split, "condition": "1mm" if k % 2 else "clinical"})
    return runs


def test_calibration_recovers_a_real_relation_and_keeps_its_choices_off_the_test_runs():
    runs = _synthetic_runs()
    result = calibrate(runs)
    cal, scores = result["calibration"], result["scores"]
    assert cal["features"] == list(FEATURES)
    sym, conf = FEATURES.index("symmetry"), FEATURES.index("mean_prob")
    assert cal["coef"][sym] < -0.1 and cal["coef"][conf] > 0.02
    assert scores["test_cross_fitted"]["spearman"] > 0.8
    assert set(scores["test_by_condition"]) == {"1mm", "clinical"}
    # the threshold obeys the flag rule on the validation runs it was chosen on
    val = [r for r in runs if r["split"] == "val"]
    v = scores["validation"]
    assert v["false_flags_at_0.7"] <= MAX_FALSE and v["runs"] == len(val)
    lo, hi = cal["interval"]
    assert lo < 0 < hi
    # the card's model predicts with the stored numbers
    good = dict(runs[0]["features"], symmetry=0.0, mean_prob=1.0)
    bad = dict(runs[0]["features"], symmetry=0.6, mean_prob=0.5)
    assert predict_dice(good, cal) > 0.8 > 0.4 > predict_dice(bad, cal)
    assert estimate(bad, cal)["low_confidence"] is True and estimate(good, cal)["low_confidence"] is False


def test_threshold_rule_catches_most_bad_runs_within_the_false_flag_budget():
    pred = np.array([0.1, 0.2, 0.3, 0.45, 0.6, 0.65, 0.75, 0.8, 0.85, 0.9])
    true = np.array([0.1, 0.3, 0.2, 0.8, 0.4, 0.75, 0.8, 0.9, 0.85, 0.95])
    t = choose_threshold(pred, true)
    assert ((pred < t) & (true >= GOOD)).sum() / (true >= GOOD).sum() <= MAX_FALSE
    assert ((pred < t) & (true < LOW)).sum() == (true < LOW).sum()          # all three bad runs caught
    fitted = fit(_synthetic_runs())
    assert len(fitted["coef"]) == len(FEATURES) and all(s > 0 for s in fitted["scale"])


def test_threshold_is_the_middle_of_those_that_tie_on_the_catch_rate():
    # every threshold between 0.45 and 0.75 catches both bad runs; above 0.75 one good run
    # of four (25 %) would be flagged, over the budget
    pred = np.array([0.3, 0.4, 0.5, 0.8, 0.85, 0.9])
    true = np.array([0.2, 0.3, 0.6, 0.9, 0.8, 0.95])
    assert choose_threshold(pred, true) == pytest.approx((0.45 + 0.65) / 2)


def test_interval_band_holds_the_validation_runs_and_respects_the_case_count():
    rng = np.random.default_rng(0)
    residual = rng.normal(0, 0.1, 2000)
    pred_val = np.full(400, 0.7)
    # validation runs as spread as the residuals: the narrowest band holding 80 % of them
    true_val = np.clip(pred_val + rng.normal(0, 0.1, 400), 0, 1)
    assert choose_level(residual, pred_val, true_val, cases=100) == 0.825
    # wider validation errors need a wider band
    wide = np.clip(pred_val + rng.normal(0, 0.14, 400), 0, 1)
    level = choose_level(residual, pred_val, wide, cases=100)
    lo, hi = band(residual, level)
    assert level > 0.825 and ((wide >= pred_val + lo) & (wide <= pred_val + hi)).mean() >= COVERAGE
    # ten cases: a band from ten patients needs at least 0.8 * 11 / 10 = 0.88
    assert choose_level(residual, pred_val, true_val, cases=10) == 0.9


def _lckd(*args, cwd=None) -> subprocess.CompletedProcess:
    # lckd prints a plus-minus sign where its stdout can take one: read it as UTF-8 whatever the locale
    return subprocess.run([sys.executable, "-m", "lckd.frontends.cli", *map(str, args)], capture_output=True,
                          encoding="utf-8", errors="replace", cwd=cwd, timeout=900)


@pytest.fixture(scope="module")
def tiny_cv(tmp_path_factory):
    """A real 2-fold cross-validation on 4 phantom cases (a few training steps from the phantom model)."""
    from conftest import SMALL
    from lckd.research.phantom import write_phantom_dataset

    root = tmp_path_factory.mktemp("quality_cv")
    write_phantom_dataset(root / "data", 4, seed=70, shape=SMALL)
    out = root / "cv"
    res = _lckd("crossval", root / "data", "--out", out, "--folds", "2", "--preset", "cpu", "--init-from",
                "lckd-lite-phantom", "--warmup-steps", "1", "--missing-steps", "1", "--patch", "32",
                "--election-every", "0", "--lr", "1e-7", "--threads", "2", "-q")
    assert res.returncode == 0, res.stderr[-2000:]
    return root, out


def test_crossval_scores_both_conditions_and_calibrate_puts_the_estimate_into_every_record(tiny_cv, tmp_path):
    import shutil

    root, out = tiny_cv
    one = json.loads((out / "crossval.json").read_text())
    clinical = json.loads((out / "crossval-clinical.json").read_text())
    val = json.loads((out / "crossval-val.json").read_text())
    assert len(one["per_case"]) == len(clinical["per_case"]) == 4 * 15 and len(val["per_case"]) == 2 * 15
    row = one["per_case"][0]
    assert row["fold"] in (0, 1) and set(row["features"]) == set(FEATURES)
    assert row["ref_wt_ml"] > 0 and row["wt_volume_ratio"] == pytest.approx(row["pred_wt_ml"] / row["ref_wt_ml"],
                                                                            rel=0.01)
    # clinical series: the degraded scans report their slice thickness, T1ce alone stays at 1 mm
    thick = {r["subset"]: r["features"]["slice_mm"] for r in clinical["per_case"]}
    assert thick["T1ce"] == 1.0 and 5.0 <= thick["FLAIR"] <= 6.0 and thick["T1+T1ce+T2+FLAIR"] >= 5.0
    assert {r["features"]["slice_mm"] for r in one["per_case"]} == {1.0}

    model = tmp_path / "model"
    shutil.copytree(out / "fold-0" / "model", model, ignore=shutil.ignore_patterns("checkpoint"))
    card = next(p for p in model.glob("*.json"))
    res = _lckd("calibrate", out, "--update-card", card)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "spearman" in res.stdout and (out / "quality-calibration.json").is_file()
    stored = json.loads(card.read_text())["quality"]
    assert stored["features"] == list(FEATURES) and 0 <= stored["flag_below"] <= 1

    case = sorted((root / "data").iterdir())[0]
    scans = {m: next(case.glob(f"*-{s}.nii.gz")) for m, s in (("t1ce", "t1c"), ("flair", "t2f"))}
    res = _lckd("segment", "--model", card, "--t1ce", scans["t1ce"], "--flair", scans["flair"], "-o",
                tmp_path / "seg.nii.gz", "--json", "--threads", "2", "-q")
    assert res.returncode == 0, res.stderr[-2000:]
    record = json.loads((tmp_path / "seg.json").read_text())["quality"]
    assert 0.0 <= record["expected_wt_dice"] <= 1.0 and isinstance(record["low_confidence"], bool)
    lo, hi = record["interval"]
    assert lo <= record["expected_wt_dice"] <= hi
    assert "expected whole-tumour Dice" in res.stdout and "not a measurement" in res.stdout
