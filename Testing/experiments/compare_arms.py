"""Judge two training recipes on the same cross-validation folds' validation cases.

    python Testing/experiments/compare_arms.py CV_A CV_B --folds 0 1 [--split val|test]

Each CV folder is one `lckd crossval --out` (same plan, same folds), or a shipped model's `crossval/`
folder (its pooled reports, rows tagged with their fold). Pools every run of the
chosen folds' validation cases (`fold-K/eval-val/evaluation.json` and `-clinical.json`: 1 mm and
clinical 2D series) and prints the 15-subset mean Dice ET / TC / WT of each arm and B - A, per
condition and pooled. The decision rule it serves is written in docs/JOURNAL.md before the runs
were scored; `--split test` exists for the journal's after-the-fact report only.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

REGIONS = ("ET", "TC", "WT")
CONDITIONS = {"1mm": "evaluation.json", "clinical": "evaluation-clinical.json"}


def runs(cv: Path, folds: list[int], split: str) -> dict[str, list[dict]]:
    """Per-run rows of the folds, by condition; refuses a fold that was not scored."""
    folder = "eval-val" if split == "val" else "eval"
    out: dict[str, list[dict]] = {}
    for condition, name in CONDITIONS.items():
        rows = []
        for k in folds:
            path = cv / f"fold-{k}" / folder / name
            # a shipped model's crossval/ folder keeps only the pooled reports, every row tagged with its fold
            pooled = cv / name.replace("evaluation", "crossval-val" if split == "val" else "crossval")
            if path.is_file():
                rows += json.loads(path.read_text(encoding="utf-8"))["per_case"]
            elif pooled.is_file():
                rows += [r for r in json.loads(pooled.read_text(encoding="utf-8"))["per_case"] if r["fold"] == k]
            else:
                raise SystemExit(f"{path} not found: score fold {k} first")
        out[condition] = rows
    return out


def means(rows: list[dict]) -> dict[str, float]:
    """Mean Dice per region over runs (every case x subset counts once)."""
    return {r: float(np.mean([row[r] for row in rows])) for r in REGIONS}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("arm_a", type=Path)
    p.add_argument("arm_b", type=Path)
    p.add_argument("--folds", type=int, nargs="+", required=True)
    p.add_argument("--split", choices=("val", "test"), default="val")
    args = p.parse_args()
    a, b = runs(args.arm_a, args.folds, args.split), runs(args.arm_b, args.folds, args.split)
    print(f"| {args.split} runs, folds {args.folds} | runs | A: {args.arm_a.name} ET / TC / WT "
          f"| B: {args.arm_b.name} ET / TC / WT | B - A |")
    print("|---|---:|---|---|---|")
    for condition in list(CONDITIONS) + ["pooled"]:
        ra = sum(a.values(), []) if condition == "pooled" else a[condition]
        rb = sum(b.values(), []) if condition == "pooled" else b[condition]
        ma, mb = means(ra), means(rb)
        fmt = lambda m: " / ".join(f"{m[r]:.3f}" for r in REGIONS)  # noqa: E731
        diff = " / ".join(f"{mb[r] - ma[r]:+.3f}" for r in REGIONS)
        print(f"| {condition} | {len(ra)} / {len(rb)} | {fmt(ma)} | {fmt(mb)} | {diff} |")
        # reported beside the rule, never deciding: the four single-scan subsets
        sa = [r for r in ra if "+" not in r["subset"]]
        sb = [r for r in rb if "+" not in r["subset"]]
        if condition == "pooled" and sa and sb:
            ma, mb = means(sa), means(sb)
            diff = " / ".join(f"{mb[r] - ma[r]:+.3f}" for r in REGIONS)
            print(f"| pooled, single scans | {len(sa)} / {len(sb)} | {fmt(ma)} | {fmt(mb)} | {diff} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
