"""Calibrate the per-run quality estimate on a cross-validation report (`lckd calibrate`).

Input: the folder `lckd crossval` wrote, whose reports hold one row per run (case x subset)
with the true Dice and the run's quality features (`lckd.inference.quality.run_features`), for the
test cases and the validation cases of every fold, at 1 mm and on clinical 2D series.

What is fitted where, so that no number is judged on what chose it:
- The expected-Dice model (ridge regression of WT Dice on standardised features) is fitted
  on the test runs. Its scores below are cross-fitted: fold k's runs are predicted by a model
  fitted on the other folds' test runs only.
- The interval is a central band of the cross-fitted residuals (true - predicted): the
  narrowest of INTERVAL_LEVELS that holds at least 80 % of the validation runs, and no
  narrower than the conformal correction for the number of test cases asks (a nominal 80 %
  band under-covers new cases: 0.74-0.78 in the first 2-fold calibrations).
  Its coverage is measured nested: fold k's runs are judged with the band taken from the
  other folds' residuals only.
- The low-confidence threshold is chosen on the validation runs (each fold's validation case,
  predicted by a model that never saw that case), never on test runs. Rule, fixed before any
  calibration ran: the highest catch rate of runs with WT Dice < 0.5 while flagging at most
  20 % of runs with Dice >= 0.7 (the middle of the thresholds that tie on it).
- The targets are then measured on the cross-fitted test runs.
The card stores the model fitted on all test runs, the interval from all cross-fitted
residuals and the validation-chosen threshold.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..base.errors import InputError
from ..inference.quality import FEATURES, predict_dice
from .crossval import report_name

#: Ridge penalty on standardised features (runs number in the hundreds; keeps the signs sane).
RIDGE = 1.0
#: Interval: central bands of the cross-fitted residuals tried, narrowest first; the first that
#: holds COVERAGE of the validation runs is kept (the widest if none does). None is 80 %: the
#: conformal correction always asks for a little more.
INTERVAL_LEVELS = (0.825, 0.85, 0.875, 0.9, 0.925, 0.95)
COVERAGE = 0.8
#: Flag rule: catch runs under LOW, fire on at most MAX_FALSE of the runs at or above GOOD.
LOW, GOOD, MAX_FALSE = 0.5, 0.7, 0.2

REPORTS = {(split, condition): report_name(split, condition)
           for split in ("test", "val") for condition in ("1mm", "clinical")}


def load_runs(cv_dir: str | Path) -> list[dict]:
    """Every run of a cross-validation folder: per-case rows tagged with split and condition."""
    runs = []
    for (split, condition), name in REPORTS.items():
        path = Path(cv_dir) / name
        if not path.is_file():
            raise InputError(f"{path} not found: run `lckd crossval` to the end on this folder first "
                             f"(the calibration needs {', '.join(REPORTS.values())})")
        for row in json.loads(path.read_text(encoding="utf-8"))["per_case"]:
            if "features" not in row or "fold" not in row:
                raise InputError(f"{path}: rows without quality features or fold: a report from before "
                                 "lckd 0.2; score the folds again (delete fold-*/eval*)")
            runs.append({**row, "split": split, "condition": condition})
    return runs


def _matrix(runs: Sequence[Mapping]) -> tuple[np.ndarray, np.ndarray]:
    x = np.array([[r["features"][f] for f in FEATURES] for r in runs], dtype=float)
    y = np.array([r["WT"] for r in runs], dtype=float)
    return x, y


def fit(runs: Sequence[Mapping], ridge: float = RIDGE) -> dict:
    """Ridge regression of WT Dice on standardised features; the calibration's model part."""
    x, y = _matrix(runs)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    z = (x - mean) / scale
    intercept = float(y.mean())
    coef = np.linalg.solve(z.T @ z + ridge * np.eye(z.shape[1]), z.T @ (y - intercept))
    return {"features": list(FEATURES), "mean": mean.round(6).tolist(), "scale": scale.round(6).tolist(),
            "coef": coef.round(6).tolist(), "intercept": round(intercept, 6)}


def choose_threshold(pred: np.ndarray, true: np.ndarray) -> float:
    """The flag threshold (flag when predicted < t) by the rule in the module docstring.

    Several thresholds often reach the best catch rate on the few validation runs; the middle
    of that range is kept, neither the most timid nor the one that spends the whole
    false-flag budget on these runs.
    """
    good = true >= GOOD
    low = true < LOW
    cuts = np.unique(np.clip(pred, 0.0, 1.0))
    # candidate thresholds halfway between neighbouring predictions (and at the ends)
    candidates = np.concatenate([[0.0], (cuts[:-1] + cuts[1:]) / 2, [1.0]])
    allowed = []
    for t in candidates:
        false = float((pred[good] < t).mean()) if good.any() else 0.0
        catch = float((pred[low] < t).mean()) if low.any() else 0.0
        if false <= MAX_FALSE:
            allowed.append((catch, float(t)))
    best = max(c for c, _ in allowed)
    tied = [t for c, t in allowed if c == best]
    return round((min(tied) + max(tied)) / 2, 4)


def band(residual: np.ndarray, level: float) -> list[float]:
    """The central `level` band of residuals as (low, high) offsets from the prediction."""
    return [round(float(np.quantile(residual, q)), 4) for q in ((1 - level) / 2, (1 + level) / 2)]


def choose_level(residual: np.ndarray, pred_val: np.ndarray, true_val: np.ndarray, cases: int) -> float:
    """The narrowest INTERVAL_LEVELS band of `residual` that holds COVERAGE of the validation runs.

    Bands below COVERAGE * (cases + 1) / cases are not tried: the residuals come from `cases`
    patients (a case's 30 runs move together), and a band taken from n exchangeable units
    holds a new one with probability level * (n + 1) / n at best (the conformal correction).
    """
    floor = COVERAGE * (cases + 1) / cases
    for level in INTERVAL_LEVELS:
        if level < floor - 1e-9:
            continue
        lo, hi = band(residual, level)
        inside = (true_val >= np.clip(pred_val + lo, 0, 1)) & (true_val <= np.clip(pred_val + hi, 0, 1))
        if inside.mean() >= COVERAGE:
            return level
    return INTERVAL_LEVELS[-1]


def scores(pred: np.ndarray, true: np.ndarray, interval, threshold: float) -> dict:
    """Rank correlation, flag catch/false rates and interval coverage of predictions.

    `interval`: (low, high) offsets from the prediction, numbers or one pair per run (arrays).
    """
    from scipy.stats import spearmanr

    low, good = true < LOW, true >= GOOD
    lo, hi = np.asarray(interval[0], dtype=float), np.asarray(interval[1], dtype=float)
    inside = (true >= np.clip(pred + lo, 0, 1)) & (true <= np.clip(pred + hi, 0, 1))
    rho = spearmanr(pred, true).statistic if len(pred) > 2 and np.ptp(pred) > 0 else float("nan")
    return {"runs": int(len(pred)), "spearman": round(float(rho), 3),
            "catch_below_0.5": None if not low.any() else round(float((pred[low] < threshold).mean()), 3),
            "runs_below_0.5": int(low.sum()),
            "false_flags_at_0.7": None if not good.any() else round(float((pred[good] < threshold).mean()), 3),
            "runs_at_0.7": int(good.sum()),
            "interval_coverage": round(float(inside.mean()), 3),
            "mean_abs_error": round(float(np.abs(pred - true).mean()), 3)}


def calibrate(runs: Sequence[Mapping]) -> dict:
    """The card's calibration and the honest scores behind it (see the module docstring)."""
    test = [r for r in runs if r["split"] == "test"]
    val = [r for r in runs if r["split"] == "val"]
    folds = sorted({int(r["fold"]) for r in test})
    fold_of_case = {r["case_id"]: int(r["fold"]) for r in test}
    models = {k: fit([r for r in test if int(r["fold"]) != k]) for k in folds}

    def cross_pred(rows: Sequence[Mapping]) -> np.ndarray:
        # each run predicted by a model that never saw its case among the fitted test runs
        return np.array([predict_dice(r["features"], models[fold_of_case.get(r["case_id"], int(r["fold"]))])
                         for r in rows])

    pv, tv = cross_pred(val), _matrix(val)[1]
    threshold = choose_threshold(pv, tv)
    pt, tt = cross_pred(test), _matrix(test)[1]
    residual = tt - pt
    level = choose_level(residual, pv, tv, cases=len(fold_of_case))
    interval = band(residual, level)
    # nested: each fold's runs get the band of the other folds' residuals
    fold = np.array([int(r["fold"]) for r in test])
    nested = {k: band(residual[fold != k], level) for k in folds}
    per_run = (np.array([nested[k][0] for k in fold]), np.array([nested[k][1] for k in fold]))
    by_condition = {}
    for condition in sorted({r["condition"] for r in test}):
        sel = np.array([r["condition"] == condition for r in test])
        by_condition[condition] = scores(pt[sel], tt[sel], (per_run[0][sel], per_run[1][sel]), threshold)
    by_subset = {}
    for subset in dict.fromkeys(r["subset"] for r in test):
        sel = np.array([r["subset"] == subset for r in test])
        by_subset[subset] = scores(pt[sel], tt[sel], (per_run[0][sel], per_run[1][sel]), threshold)
    calibration = fit(test)
    calibration.update(interval=interval, interval_level=level, flag_below=threshold,
                       fitted_on=f"{len(test)} cross-validation test runs ({len(folds)} folds, 1 mm and "
                                 "clinical-slice)",
                       chosen_on=f"interval: central {level * 100:g} % band of the cross-fitted residuals, the "
                                 f"narrowest of {', '.join(f'{v * 100:g}' for v in INTERVAL_LEVELS)} % holding "
                                 f"{COVERAGE:.0%} of the validation runs, at least {COVERAGE:.0%} x (n + 1) / n "
                                 f"for the n = {len(fold_of_case)} test cases; flag: "
                                 f"{len(val)} validation runs, most runs under WT Dice {LOW} caught with at most "
                                 f"{MAX_FALSE:.0%} of runs at {GOOD} or more flagged")
    return {"calibration": calibration,
            "scores": {"test_cross_fitted": scores(pt, tt, per_run, threshold),
                       "test_by_condition": by_condition, "test_by_subset": by_subset,
                       "validation": scores(pv, tv, interval, threshold)},
            "targets": {"spearman": 0.6, "catch_below_0.5": 0.8, "false_flags_at_0.7": 0.2,
                        "interval_coverage": 0.8}}


def _rate(value: float | None) -> str:
    return "  -  " if value is None else f"{value:.3f}"


def format_summary(result: Mapping) -> str:
    """Plain-text summary of `calibrate`'s scores against the targets."""
    s, t = result["scores"], result["targets"]
    lines = [f"flag: expected WT Dice < {result['calibration']['flag_below']:.3f}; interval: "
             f"{result['calibration']['interval'][0]:+.3f} .. {result['calibration']['interval'][1]:+.3f}"]
    for name, sc in [("test (cross-fitted)", s["test_cross_fitted"])] + \
            [(f"test, {c}", v) for c, v in s["test_by_condition"].items()] + [("validation", s["validation"])]:
        lines.append(f"{name:<22} runs {sc['runs']:>4}  spearman {sc['spearman']:.3f}  "
                     f"catch<0.5 {_rate(sc['catch_below_0.5'])}  false>=0.7 {_rate(sc['false_flags_at_0.7'])}  "
                     f"coverage {sc['interval_coverage']:.3f}  MAE {sc['mean_abs_error']:.3f}")
    lines.append("per subset (test, cross-fitted; catch / false flags are blank without such runs):")
    for subset, sc in s["test_by_subset"].items():
        lines.append(f"  {subset:<18} runs {sc['runs']:>4}  spearman {sc['spearman']:.3f}  "
                     f"catch<0.5 {_rate(sc['catch_below_0.5'])}  false>=0.7 {_rate(sc['false_flags_at_0.7'])}  "
                     f"coverage {sc['interval_coverage']:.3f}")
    overall = s["test_cross_fitted"]
    met = [f"{k} {overall[k]} (target {'>=' if k != 'false_flags_at_0.7' else '<='} {v}): "
           + ("met" if (overall[k] is not None and (overall[k] <= v if k == "false_flags_at_0.7" else overall[k] >= v))
              else "MISSED") for k, v in t.items()]
    return "\n".join(lines + met)


def add_calibrate_parser(subparsers) -> argparse.ArgumentParser:
    """Register `lckd calibrate`."""
    p = subparsers.add_parser(
        "calibrate", help="fit the per-run quality estimate on a cross-validation folder",
        description="Fit the quality estimate (expected whole-tumour Dice, interval, low-confidence flag) on the "
                    "runs of a finished `lckd crossval` folder: model on the test runs, interval and flag "
                    "threshold on the validation runs; prints cross-fitted scores against the targets and writes "
                    "CV/quality-calibration.json. --update-card stores it in a model card.")
    p.add_argument("cv_dir", metavar="CV_DIR", help="the folder of a finished `lckd crossval` run")
    p.add_argument("--update-card", metavar="CARD", default=None,
                   help="store the calibration in this model card (re-saves it with its weights)")
    p.set_defaults(func=run_calibrate)
    return p


def run_calibrate(args: argparse.Namespace) -> int:
    """`lckd calibrate`: exit status 0."""
    from ..io.imageio import atomic_path

    result = calibrate(load_runs(args.cv_dir))
    print(format_summary(result))
    out = Path(args.cv_dir) / "quality-calibration.json"
    with atomic_path(out, what="quality calibration") as tmp:
        Path(tmp).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    if args.update_card:
        from ..model.modelcard import load_model, save_model
        net, card = load_model(args.update_card)
        card.quality = result["calibration"]
        print(f"updated {save_model(net, card, Path(args.update_card).parent)}")
    return 0
