"""Why single scans lag: where a fold model's single-scan drawings go wrong, on cases it never saw.

    python Testing/experiments/single_scan_diagnosis.py CV DATA --folds 0 1 [--split test|val]

For every case of the chosen folds' split, the fold's model (CV/fold-K/model/*.json, trained
without those cases) segments each single scan (T1, T1ce, T2, FLAIR) and all four, on the model
grid (raw probabilities > 0.5, no clean-up). Per subset it prints the mean WT Dice, the median
predicted / reference WT volume, and where the errors lie:
- false positives (FP) in CSF: voxels the case's own T2 shows bright (z > 1) and its FLAIR dark
  (z < 0), away from the tumour (more than 5 mm from the reference WT): ventricles and sulci;
- FP in the other hemisphere (the side of the brain's midline without the tumour's centre);
- the reference oedema (WT minus TC) missed, and the reference core (TC) missed.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

from lckd.base.metrics import mask_dice
from lckd.base.modalities import MODALITIES
from lckd.prep.modelgrid import load_case, select_cases

SUBSETS = ("T1", "T1ce", "T2", "FLAIR", "T1+T1ce+T2+FLAIR")


def where_wrong(pred: np.ndarray, ref: np.ndarray, x: np.ndarray) -> dict:
    """Error locations of one WT drawing (pred, ref: (3, ...) bool regions; x: the case's scans)."""
    wt, rwt = pred[2], ref[2]
    brain = np.any(x != 0, axis=0)
    far = ndimage.distance_transform_edt(~rwt) > 5.0
    t2, flair = x[MODALITIES.index("T2")], x[MODALITIES.index("FLAIR")]
    csf = brain & far & (t2 > 1.0) & (flair < 0.0)
    fp = wt & ~rwt
    centre_x = np.argwhere(brain)[:, 2].mean()
    tumour_left = np.argwhere(rwt)[:, 2].mean() < centre_x if rwt.any() else True
    xs = np.arange(wt.shape[2])[None, None, :]
    other = (xs >= centre_x) if tumour_left else (xs < centre_x)
    oedema = rwt & ~ref[1]
    n_fp = max(int(fp.sum()), 1)
    return {"WT": mask_dice(wt, rwt), "ratio": float(wt.sum() / max(int(rwt.sum()), 1)),
            "fp_ml": fp.sum() / 1000.0, "fp_csf": float((fp & csf).sum() / n_fp),
            "fp_other_side": float((fp & other).sum() / n_fp),
            "oedema_missed": float((oedema & ~wt).sum() / max(int(oedema.sum()), 1)),
            "core_missed": float((ref[1] & ~wt).sum() / max(int(ref[1].sum()), 1))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cv", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("--folds", type=int, nargs="+", required=True)
    p.add_argument("--split", choices=("test", "val"), default="test")
    args = p.parse_args()
    from lckd.inference import Segmenter
    from lckd.research.crossval import fold_card

    rows: dict = {s: [] for s in SUBSETS}
    for k in args.folds:
        card = fold_card(args.cv, k)
        seg = Segmenter.load(card, device="cpu", threads=1)
        order = list(seg.net.modalities)
        for case in select_cases(args.data, args.cv / f"fold-{k}" / "split.csv", args.split):
            lc = load_case(case, order, seg.card.spacing)
            for subset in SUBSETS:
                present = np.array([m in subset.split("+") for m in order])
                x = lc.x * present[:, None, None, None]
                probs = seg.predict(x, present)
                rows[subset].append(where_wrong(probs > 0.5, lc.regions, lc.x))
            print(f"fold {k} {case.case_id} done", flush=True)
    keys = ("WT", "ratio", "fp_ml", "fp_csf", "fp_other_side", "oedema_missed", "core_missed")
    print("| subset | runs | WT Dice | median volume ratio | FP mL | FP in CSF | FP other side | oedema missed "
          "| core missed |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for subset, rs in rows.items():
        v = {key: np.array([r[key] for r in rs]) for key in keys}
        print(f"| {subset} | {len(rs)} | {v['WT'].mean():.3f} | {np.median(v['ratio']):.2f} | {v['fp_ml'].mean():.1f} "
              f"| {v['fp_csf'].mean():.0%} | {v['fp_other_side'].mean():.0%} | {v['oedema_missed'].mean():.0%} "
              f"| {v['core_missed'].mean():.0%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
