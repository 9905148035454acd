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
- the issue's targets, met or missed.
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


def recompute(rows: list[dict]) -> dict:
    """The cross-validation report (lckd.research.crossval.aggregate) from per-run rows with their fold."""
    folds = sorted({r["fold"] for r in rows})
    return aggregate([summarise([r for r in rows if r["fold"] == k], SUBSETS) for k in folds])


def volume_lines(rows: list[dict], name: str) -> list[str]:
    ratios = np.array([r["wt_volume_ratio"] for r in rows if r.get("wt_volume_ratio") is not None])
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


def targets(one: dict, clinical: dict, one_rows: list[dict]) -> list[str]:
    m, s = one["mean"], one["per_subset"]
    ratios = np.array([r["wt_volume_ratio"] for r in one_rows if r.get("wt_volume_ratio") is not None])
    checks = [("15-subset mean WT", m["WT"], 0.80), ("15-subset mean TC", m["TC"], 0.68),
              ("15-subset mean ET", m["ET"], 0.55), ("all four WT", s[SUBSETS[-1]]["WT"], 0.88),
              ("all four TC", s[SUBSETS[-1]]["TC"], 0.85), ("all four ET", s[SUBSETS[-1]]["ET"], 0.78),
              ("FLAIR WT", s["FLAIR"]["WT"], 0.78), ("T2 WT", s["T2"]["WT"], 0.75),
              ("T1ce WT", s["T1ce"]["WT"], 0.72), ("T1 WT", s["T1"]["WT"], 0.65),
              ("clinical 15-subset WT within 0.05 of 1 mm", m["WT"] - clinical["mean"]["WT"], None),
              ("runs with WT volume ratio in 0.67-1.5 (1 mm)",
               float(((ratios >= RATIO_BAND[0]) & (ratios <= RATIO_BAND[1])).mean()), 0.90)]
    out = ["| target | measured | |", "|---|---:|---|"]
    for name, value, goal in checks:
        if goal is None:
            ok = value <= 0.05
            out.append(f"| {name} | {value:.3f} lower | {'met' if ok else f'missed by {value - 0.05:.3f}'} |")
        else:
            ok = value >= goal
            out.append(f"| {name} >= {goal} | {value:.3f} | {'met' if ok else f'missed by {goal - value:.3f}'} |")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reports", type=Path, help="folder with crossval.json and crossval-clinical.json")
    ap.add_argument("--card", type=Path, default=None, help="check this model card's tables against the reports")
    args = ap.parse_args()
    rows = {c: json.loads((args.reports / report_name("test", c)).read_text())["per_case"]
            for c in ("1mm", "clinical")}
    tables = {c: recompute(r) for c, r in rows.items()}
    for c, t in tables.items():
        print(f"\n### {c}: {t['folds']} folds, {len(t['cases'])} test cases, mean +- SD over folds\n")
        print(format_table(t))
    print("\n### Whole-tumour volume, predicted over reference\n")
    for c, r in rows.items():
        print("\n".join(volume_lines(r, c)))
    print("\n### Per case\n")
    print("\n".join(case_lines(rows["1mm"], rows["clinical"])))
    print("\n### Targets (5-fold CV, mean over folds)\n")
    print("\n".join(targets(tables["1mm"], tables["clinical"], rows["1mm"])))
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
