"""Would a higher whole-tumour threshold stop thick-slice runs from over-drawing?

    python Testing/experiments/thick_slice_threshold.py CV DATA OUT.json --folds 0 1

For every validation and test case of the chosen folds, degraded to clinical 2D series as the
clinical-slice table degrades them (`lckd.research.degrade.clinical_slices`), the fold's model
(CV/fold-K/model, trained without those cases) predicts each subset once; the labels are then made
as `lckd segment` makes them (the card's clean-up, `quality.case_features`) with the clean-up's
thick-slice rule (`lckd.base.labels.labels_for_run`) set to each of THRESHOLDS for every run. Prints, per
threshold, the mean WT Dice and the share of runs whose predicted / reference WT volume lies in
0.67-1.5, for validation runs (where a threshold may be chosen) and test runs (reported only).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

THRESHOLDS = (0.5, 0.6, 0.7, 0.8)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cv", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--folds", type=int, nargs="+", required=True)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    from lckd.base.labels import THICK_SLICES, labels_to_regions
    from lckd.base.metrics import mask_dice
    from lckd.base.modalities import all_subsets, subset_key
    from lckd.inference.quality import case_features
    from lckd.inference.segmenter import Segmenter
    from lckd.prep.modelgrid import load_case, select_cases
    from lckd.research.crossval import fold_card
    from lckd.research.degrade import clinical_slices

    rows = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else []
    done = {(r["fold"], r["case_id"], r["subset"]) for r in rows}
    for k in args.folds:
        seg = Segmenter.load(str(fold_card(args.cv, k)), threads=args.threads)
        order = list(seg.net.modalities)
        rule = seg.postprocess_rule()
        for split in ("val", "test"):
            for files in select_cases(args.data, args.cv / f"fold-{k}" / "split.csv", split):
                case = load_case(files, order, seg.card.spacing,
                                 seg.card.preprocessing.get("clip_percentiles", (0.5, 99.5)))
                case, thick = clinical_slices(case, order)
                for sub in all_subsets(order):
                    if (k, case.case_id, subset_key(sub)) in done or not all(case.present[order.index(m)] for m in sub):
                        continue
                    present = np.array([m in sub for m in order], dtype=bool)
                    probs = seg.predict(case.x, present)
                    ref = case.regions[2]
                    row = {"fold": k, "split": split, "case_id": case.case_id, "subset": subset_key(sub)}
                    for t in THRESHOLDS:
                        at_t = dict(rule or {}, **{THICK_SLICES: {"min_slice_mm": 0.0, "wt_threshold": t}})
                        _, label = case_features(probs, case.x, present, case.spacing, sub,
                                                 float(np.max(thick[present])), at_t)
                        wt = labels_to_regions(label)[2]
                        row[f"dice@{t}"] = round(float(mask_dice(wt, ref)), 4)
                        row[f"ratio@{t}"] = round(float(wt.sum()) / max(float(ref.sum()), 1.0), 4)
                    rows.append(row)
                args.out.write_text(json.dumps(rows), encoding="utf-8")   # resumable per case
                print(f"fold {k} {split} {case.case_id}: done", flush=True)
    print("| split | runs | " + " | ".join(f"WT Dice / volume in 0.67-1.5 @ {t}" for t in THRESHOLDS) + " |")
    print("|---|---:|" + "---|" * len(THRESHOLDS))
    for split in ("val", "test"):
        sel = [r for r in rows if r["split"] == split and r["fold"] in args.folds]
        cells = [f"{np.mean([r[f'dice@{t}'] for r in sel]):.3f} / "
                 f"{np.mean([0.67 <= r[f'ratio@{t}'] <= 1.5 for r in sel]) * 100:.0f} %" for t in THRESHOLDS]
        print(f"| {split} | {len(sel)} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
