"""Recompute a model's cross-validation tables from its committed reports, and what they hide.

    python Testing/experiments/cv_tables.py LCKDSegmentation/Resources/models/lckd-wide-brats/crossval [--card CARD]

Reads the per-run rows of `crossval.json` (1 mm) and `crossval-clinical.json` (clinical 2D
series), each tagged with the fold whose model made it, and prints as Markdown:
- the per-subset Dice table (mean +- SD over folds) for each condition, recomputed from the
  rows alone; with `--card`, checks that the card's expected-Dice table is exactly this;
- predicted / reference whole-tumour volume per run: the share of runs between 0.67 and 1.5,
  the median, and the runs that drew three times the tumour or more;
- per-case whole-tumour Dice (mean over the 15 subsets) against the tumour's size and grade
  (low grade: the BraTS 2018 LGG cases of the TCIA10 collection; the others high grade or
  not stated by their source);
- issue #32's targets, met or missed;
- with `--against OLD`: OLD's and these per-subset tables side by side.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from lckd.base.modalities import MODALITIES, all_subsets, subset_key
from lckd.research.crossval import aggregate, format_table, report_name
from lckd.research.evaluate import summarise

SUBSETS = [subset_key(s) for s in all_subsets(MODALITIES)]
RATIO_BAND = (0.67, 1.5)


def low_grade(case_id: str) -> bool:
    """Known low-grade cases: BraTS 2018's TCIA10 collection is part of its LGG set."""
    return "TCIA10" in case_id


def read_rows(reports: Path) -> dict[str, list[dict]]:
    """Every test run's row of a reports folder, per condition (1mm, clinical)."""
    return {c: json.loads((reports / report_name("test", c)).read_text())["per_case"] for c in ("1mm", "clinical")}


def recompute(rows: list[dict]) -> dict:
    """The cross-validation report (lckd.research.crossval.aggregate) from per-run rows with their fold."""
    folds = sorted({r["fold"] for r in rows})
    return aggregate([summarise([r for r in rows if r["fold"] == k], SUBSETS) for k in folds])


def volume_ratios(rows: list[dict]) -> np.ndarray:
    """Each run's predicted / reference WT volume (runs without a reference tumour left out)."""
    return np.array([r["wt_volume_ratio"] for r in rows if r.get("wt_volume_ratio") is not None])


def volume_lines(rows: list[dict], name: str) -> list[str]:
    ratios = volume_ratios(rows)
    inside = (ratios >= RATIO_BAND[0]) & (ratios <= RATIO_BAND[1])
    big = [f"{r['case_id']} {r['subset']} ({r['wt_volume_ratio']:.1f}x)" for r in rows
           if (r.get("wt_volume_ratio") or 0) >= 3]
    return [f"- {name}: predicted / reference WT volume between {RATIO_BAND[0]} and {RATIO_BAND[1]} in "
            f"{inside.mean():.1%} of {len(ratios)} runs (median {np.median(ratios):.2f}; under 0.67: "
            f"{(ratios < RATIO_BAND[0]).mean():.1%}, over 1.5: {(ratios > RATIO_BAND[1]).mean():.1%}); "
            f"3x or more: {len(big)} run(s)" + (f": {', '.join(big[:8])}" + (" ..." if len(big) > 8 else "")
                                                if big else "")]


def case_lines(one: list[dict], clinical: list[dict]) -> list[str]:
    out = ["| case | grade | reference WT (mL) | WT Dice 1 mm (mean of 15 subsets) | clinical | all four 1 mm |",
           "|---|---|---:|---:|---:|---:|"]
    cases = sorted({r["case_id"] for r in one}, key=lambda c: min(r["ref_wt_ml"] for r in one if r["case_id"] == c))
    for c in cases:
        a = [r for r in one if r["case_id"] == c]
        b = [r for r in clinical if r["case_id"] == c]
        four = next(r["WT"] for r in a if r["subset"] == SUBSETS[-1])
        out.append(f"| {c} | {'low (LGG)' if low_grade(c) else 'high / not stated'} | {a[0]['ref_wt_ml']:.1f} | "
                   f"{np.mean([r['WT'] for r in a]):.3f} | {np.mean([r['WT'] for r in b]):.3f} | {four:.3f} |")
    return out


def in_band(rows: list[dict]) -> float:
    """The share of runs whose predicted / reference WT volume lies in RATIO_BAND."""
    ratios = volume_ratios(rows)
    return float(((ratios >= RATIO_BAND[0]) & (ratios <= RATIO_BAND[1])).mean())


#: Issue #32's targets (5-fold CV, mean over folds): (what, where in the 1 mm table, at least).
TARGETS = (("15-subset mean WT", "mean", "WT", 0.76), ("15-subset mean TC", "mean", "TC", 0.67),
           ("15-subset mean ET", "mean", "ET", 0.53), ("all four WT", SUBSETS[-1], "WT", 0.86),
           ("FLAIR WT", "FLAIR", "WT", 0.76), ("T2 WT", "T2", "WT", 0.65),
           ("T1ce WT", "T1ce", "WT", 0.65), ("T1 WT", "T1", "WT", 0.58))
CLINICAL_GAP = 0.03
BAND_SHARE = {"1mm": 0.80, "clinical": 0.70}


def targets(one: dict, clinical: dict, rows: dict[str, list[dict]]) -> list[str]:
    out = ["| target | measured | |", "|---|---:|---|"]
    for name, where, region, goal in TARGETS:
        value = one["mean"][region] if where == "mean" else one["per_subset"][where][region]
        verdict = "met" if value >= goal else f"missed by {goal - value:.3f}"
        out.append(f"| {name} >= {goal} | {value:.3f} | {verdict} |")
    gap = one["mean"]["WT"] - clinical["mean"]["WT"]
    out.append(f"| clinical 15-subset WT within {CLINICAL_GAP} of 1 mm | {gap:.3f} lower | "
               f"{'met' if gap <= CLINICAL_GAP else f'missed by {gap - CLINICAL_GAP:.3f}'} |")
    for condition, goal in BAND_SHARE.items():
        share = in_band(rows[condition])
        out.append(f"| WT volume ratio in 0.67-1.5 ({condition}) >= {goal:.0%} | {share:.0%} | "
                   f"{'met' if share >= goal else f'missed by {(goal - share) * 100:.0f} points'} |")
    return out


def side_by_side(old: dict[str, dict], new: dict[str, dict], names: tuple[str, str]) -> list[str]:
    """Per subset, ET / TC / WT of two models' tables, at 1 mm and on clinical slices."""
    head = " | ".join(f"{c}: {n}" for c in ("1 mm", "clinical") for n in names)
    out = [f"| subset | {head} |", "|---|" + "---|" * 4]

    def cell(row: dict) -> str:
        return " / ".join(f"{row[r]:.3f}" for r in ("ET", "TC", "WT"))

    for key in [*SUBSETS, "mean"]:
        cells = [cell(t[c]["mean"] if key == "mean" else t[c]["per_subset"][key])
                 for c in ("1mm", "clinical") for t in (old, new)]
        out.append(f"| {key} | " + " | ".join(cells) + " |")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reports", type=Path, help="folder with crossval.json and crossval-clinical.json")
    ap.add_argument("--card", type=Path, default=None, help="check this model card's tables against the reports")
    ap.add_argument("--against", type=Path, default=None, metavar="OLD",
                    help="another model's reports folder: a side-by-side table per subset (OLD, then these)")
    ap.add_argument("--names", nargs=2, default=("before", "after"), metavar=("OLD", "NEW"),
                    help="column names of the side-by-side table")
    args = ap.parse_args()
    rows = read_rows(args.reports)
    tables = {c: recompute(r) for c, r in rows.items()}
    if args.against:
        old = {c: recompute(r) for c, r in read_rows(args.against).items()}
        print("\n### ET / TC / WT per subset, side by side\n")
        print("\n".join(side_by_side(old, tables, tuple(args.names))))
    for c, t in tables.items():
        print(f"\n### {c}: {t['folds']} folds, {len(t['cases'])} test cases, mean +- SD over folds\n")
        print(format_table(t))
    print("\n### Whole-tumour volume, predicted over reference\n")
    for c, r in rows.items():
        print("\n".join(volume_lines(r, c)))
    print("\n### Per case\n")
    print("\n".join(case_lines(rows["1mm"], rows["clinical"])))
    print("\n### Targets (5-fold CV, mean over folds)\n")
    print("\n".join(targets(tables["1mm"], tables["clinical"], rows)))
    if args.card:
        card = json.loads(args.card.read_text())
        bad = [(c, k, r) for c, t in (("1mm", card["evaluation"]), ("clinical", card["evaluation"]["clinical"]))
               for k, row in t["per_subset"].items() for r in ("ET", "TC", "WT")
               if abs(row[r] - tables[c]["per_subset"][k][r]) > 1e-9]
        print(f"\ncard {args.card.name}: " + ("tables match the reports" if not bad else f"DIFFERS at {bad[:3]}"))
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
