"""Choose the clean-up rule on the cross-validation *validation* cases, never on the test folds.

    python Testing/experiments/postprocess_on_validation.py CV_DIR DATA_DIR [--keep-fraction 0.1 ...]

Each fold of `lckd crossval` holds out one validation case (used for the teacher election,
never trained on, never in the fold's test set). This script segments every fold's
validation case with its fold's model, all 15 subsets, and prints the 15-subset mean Dice
and HD95 without clean-up and with each candidate rule (`labels.postprocess` with the given
`keep_fraction`: components smaller than that fraction of the largest are dropped).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lckd.base.labels import REGIONS
from lckd.inference import Segmenter, SegmentOptions
from lckd.research.evaluate import evaluate_cases
from lckd.research.training.data import load_case, select_cases


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cv_dir")
    p.add_argument("data")
    p.add_argument("--keep-fraction", type=float, action="append", default=None)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    fractions = args.keep_fraction or [0.0, 0.05, 0.1, 0.2]
    plan = json.loads((Path(args.cv_dir) / "plan.json").read_text())
    results: dict = {"raw": []}
    for k, fold in enumerate(plan["folds"]):
        cards = sorted((Path(args.cv_dir) / f"fold-{k}" / "model").glob("*-fold*.json"))
        if not cards:
            print(f"fold {k}: no model yet, skipped")
            continue
        seg = Segmenter.load(str(cards[0]), device="cpu", threads=args.threads)
        files = [c for c in select_cases(args.data, None, "train") if c.case_id in fold["val"]]
        cases = [load_case(c, seg.net.modalities, seg.card.spacing) for c in files]
        for f in fractions:
            # the rule under test as the card's, applied as `lckd segment --postprocess` applies it
            seg.card.postprocessing = {"min_component_voxels": 50, "min_et_voxels": 500, "keep_fraction": f}
            rep = evaluate_cases(seg, cases, options=SegmentOptions(postprocess=True))
            results.setdefault(f, []).append(rep["mean"])
            if f == fractions[0]:
                results["raw"].append(rep["raw"]["mean"])
        raw = results["raw"][-1]
        print(f"fold {k} ({fold['val'][0]}): raw WT {raw['WT']:.3f} HD95 {raw['HD95_WT']:.1f}; "
              + "; ".join(f"keep {f}: WT {results[f][-1]['WT']:.3f} HD95 {results[f][-1]['HD95_WT']:.1f}"
                          for f in fractions))
    print("\nmean over validation cases (15-subset means):")
    print("rule            " + "  ".join(f"Dice {r}" for r in REGIONS) + "  " + "  ".join(f"HD95 {r}" for r in REGIONS))
    for name, rows in results.items():
        if rows:
            m = {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
            label = name if name == "raw" else f"keep {name}"
            print(f"{label:<14}  " + "  ".join(f"{m[r]:7.3f}" for r in REGIONS) + "  "
                  + "  ".join(f"{m['HD95_' + r]:7.1f}" for r in REGIONS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
