"""Assemble the bundled default model from a final training run and its cross-validation.

    python Testing/experiments/build_default_model.py FINAL_DIR CV_DIR
        [--out LCKDSegmentation/Resources/models/lckd-lite-brats]

FINAL_DIR is `lckd train ... --out FINAL_DIR` on all cases (the weights that ship); CV_DIR is
`lckd crossval ... --out CV_DIR` with the same preset (the numbers that ship; every fold scored).
Testing/experiments/train_default.sh `finish` runs it, then `lckd calibrate`. The card gets:
- `evaluation`: the cross-validation tables (mean and SD over folds; never training cases), at
  1 mm and, under "clinical", on the test cases degraded to clinical 2D series,
- `postprocessing`: the recipe's clean-up rule, with which that table was measured,
- `teachers["cross_validation"]`: each fold's last election (table and elected teachers),
  from which the final run's fixed teachers were taken,
- `evaluation["sample_case"]`: Dice on the bundled phantom sample for all 15 subsets, which
  `lckd demo` reproduces (a regression check, not an accuracy claim),
- `scope`: the one line shown at every run,
- `training["init_from"]`: the starting model's name, version and weights sha256 when the
  run began from one (`--init-from`) and its card does not say it yet.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from lckd.base.modalities import all_subsets, subset_key
from lckd.frontends.demo import sample_case, sample_dice
from lckd.inference import Segmenter
from lckd.model.modelcard import read_card, save_model
from lckd.model.registry import resolve_model
from lckd.research.crossval import card_tables, report_name
from lckd.research.training.presets import PRESETS
from lckd.research.training.pretrained import source_identity

SCOPE = ("research use only, not for clinical use; trained on 28 real glioma cases (BraTS 2013-2021, TCGA), "
         "expects skull-stripped, co-registered scans")
DATA_NAME = "28 real glioma cases with reference labels from public BraTS, BRATS and TCGA example sets"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("final_dir")
    p.add_argument("cv_dir")
    p.add_argument("--out", default="LCKDSegmentation/Resources/models/lckd-lite-brats")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--version", default=None,
                   help="the card's version (default: the final run's); a new version for the same weights "
                        "is a new clean-up or new tables, e.g. 2.1.0 = 2.0.0's weights with the thick-slice rule")
    p.add_argument("--data-name", default=DATA_NAME, help="what the cross-validation data is, as a user reads it")
    args = p.parse_args(argv)
    cv = Path(args.cv_dir)
    reports = {c: json.loads((cv / report_name("test", c)).read_text()) for c in ("1mm", "clinical")}
    report = reports["1mm"]
    seg = Segmenter.load(str(resolve_model(args.final_dir)), device="cpu", threads=args.threads)
    card = seg.card
    preset = PRESETS[card.training["preset"]]
    card.postprocessing = dict(preset.postprocessing)
    card.version = args.version or card.version
    card.scope = SCOPE
    start = card.training.get("config", {}).get("init_from")
    if start and "init_from" not in card.training:   # runs from before cards pinned the starting weights
        card.training["init_from"] = source_identity(read_card(resolve_model(start, allow_download=False)))
    card.evaluation = card_tables(reports, args.data_name)
    folds = []
    for k in range(report["folds"]):
        fold_card = json.loads(next((cv / f"fold-{k}" / "model").glob("*-fold*.json")).read_text())
        folds.append({"fold": k, "validation_case": fold_card["training"].get("validation_cases"),
                      "elected": fold_card["teachers"]["elected"], "table": fold_card["teachers"]["table"]})
    card.teachers["cross_validation"] = folds
    case_id = sample_case()[0]
    per_subset = {}
    for sub in all_subsets(card.modalities):
        res = seg.segment({m: sample_case()[1][m] for m in sub})
        per_subset[subset_key(sub)] = {r: round(v, 4) for r, v in sample_dice(res.labelmap).items()}
        print(subset_key(sub), per_subset[subset_key(sub)])
    card.evaluation["sample_case"] = {"case": case_id, "note": "bundled synthetic phantom; regression check of "
                                      "`lckd demo`, not an accuracy estimate", "per_subset": per_subset}
    print(f"wrote {save_model(seg.net, card, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
