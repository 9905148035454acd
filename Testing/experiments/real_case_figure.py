"""README picture: a real case the model did not train on, all four scans against FLAIR only.

    python Testing/experiments/real_case_figure.py CV_DIR DATA_DIR CASE_ID [--out PNG]

Takes the cross-validation fold whose test set holds CASE_ID (so the model never saw the
case), segments it with all four scans and with FLAIR alone (the card's clean-up applied, as
`lckd segment` does), and draws both on the FLAIR slice with the most tumour: prediction
outlines solid, the reference label dashed. Prints the Dice of both runs.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import SimpleITK as sitk

from lckd.base.labels import labels_to_regions
from lckd.base.metrics import region_metrics
from lckd.frontends.preview import Panel, save_outline_figure, tumour_slice
from lckd.inference import Segmenter
from lckd.io.datasets import find_cases, read_label
from lckd.research.training.presets import PRESETS

RUNS = (("all four scans", ("T1", "T1ce", "T2", "FLAIR")), ("FLAIR only", ("FLAIR",)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cv_dir")
    p.add_argument("data")
    p.add_argument("case_id")
    p.add_argument("--out", default="Resources/Screenshots/real-case-cv.png")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    plan = json.loads((Path(args.cv_dir) / "plan.json").read_text())
    fold = next(k for k, f in enumerate(plan["folds"]) if args.case_id in f["test"])
    card = next((Path(args.cv_dir) / f"fold-{fold}" / "model").glob("*-fold*.json"))
    seg = Segmenter.load(str(card), device="cpu", threads=args.threads)
    # fold models were trained before the recipe's clean-up rule was fixed: apply it as the card would
    seg.card.postprocessing = dict(PRESETS[seg.card.training["preset"]].postprocessing)
    case = next(c for c in find_cases(args.data) if c.case_id == args.case_id)
    truth = read_label(case.label, case.layout)
    flair = sitk.GetArrayFromImage(sitk.ReadImage(str(case.images["FLAIR"])))
    results = []
    for name, subset in RUNS:
        res = seg.segment({m: case.images[m] for m in subset})
        lab = sitk.GetArrayFromImage(res.labelmap)
        dice = region_metrics(labels_to_regions(lab), labels_to_regions(truth), hd95=False)
        print(f"{name}: Dice ET {dice['ET']:.3f} TC {dice['TC']:.3f} WT {dice['WT']:.3f}")
        results.append((name, lab, dice))
    z = tumour_slice(truth)
    panels = [Panel(flair[z], f"{name}: Dice WT {d['WT']:.2f}, TC {d['TC']:.2f}, ET {d['ET']:.2f}",
                    [(lab[z], "solid", "prediction"), (truth[z], "dashed", "reference")])
              for name, lab, d in results]
    out = save_outline_figure(panels, args.out,
                              title=f"{args.case_id} (never trained on: fold {fold} test case), FLAIR, slice {z}",
                              footer=f"model {seg.card.name}; {seg.card.intended_use}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
