"""README picture of the raw-scan workflow: raw series in, brain mask, segmentation on the reference grid.

    python Testing/experiments/raw_case_figure.py [--seed 100] [--model lckd-lite-phantom] [--out PNG]

Builds a raw phantom (`lckd phantom --raw`: skull, scalp and neck, a 3D T1ce and 2D 4-6 mm
T1/T2/FLAIR series on their own tilted grids, bias fields), segments all four series with
`preprocess="auto"` (as `lckd segment` does) and draws, on the T1ce slice with the most tumour: the raw T1ce, the FLAIR
as acquired (resampled onto the T1ce grid for display), the brain the extractor kept, and the
segmentation (solid) against the phantom's truth (dashed). Prints the mask and WT Dice.
"""
from __future__ import annotations

import argparse

import numpy as np
import SimpleITK as sitk

from lckd.base.labels import labels_to_regions
from lckd.base.metrics import mask_dice, region_metrics
from lckd.frontends.preview import Panel, save_outline_figure, tumour_slice
from lckd.inference import Segmenter
from lckd.research.rawphantom import SERIES, make_raw_phantom


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=100)
    p.add_argument("--model", default="lckd-lite-phantom")
    p.add_argument("--out", default="Resources/Screenshots/raw-phantom.png")
    args = p.parse_args(argv)
    raw = make_raw_phantom(args.seed)
    seg = Segmenter.load(args.model, device="cpu")
    res = seg.segment(raw.series, preprocess="auto")
    ref = raw.series["T1ce"]
    arr = {m: sitk.GetArrayFromImage(sitk.Resample(img, ref, sitk.Transform(), sitk.sitkLinear, 0.0))
           for m, img in raw.series.items()}
    mask = sitk.GetArrayFromImage(res.brain_mask) > 0
    truth_mask = sitk.GetArrayFromImage(raw.brain_mask) > 0
    lab, truth = sitk.GetArrayFromImage(res.labelmap), sitk.GetArrayFromImage(raw.label)
    mask_score = mask_dice(mask, truth_mask)
    dice = region_metrics(labels_to_regions(lab), labels_to_regions(truth), hd95=False)
    print(f"seed {args.seed}: brain mask Dice {mask_score:.3f}; Dice ET {dice['ET']:.3f} TC {dice['TC']:.3f} "
          f"WT {dice['WT']:.3f}; {res.preprocessing}")
    z = tumour_slice(truth)
    flair = SERIES["FLAIR"]
    panels = [
        Panel(arr["T1ce"][z], "T1ce as acquired: 3D, 1 mm (reference)"),
        Panel(arr["FLAIR"][z], f"FLAIR as acquired: 2D, {flair.spacing[2]:g} mm slices"),
        Panel(np.where(mask, arr["T1ce"], 0)[z], f"brain kept (deepbet): mask Dice {mask_score:.2f}"),
        Panel(np.where(mask, arr["FLAIR"], 0)[z], f"segmentation: Dice WT {dice['WT']:.2f}, TC {dice['TC']:.2f}, "
                                                  f"ET {dice['ET']:.2f}",
              [(lab[z], "solid", "prediction"), (truth[z], "dashed", "phantom truth")]),
    ]
    out = save_outline_figure(panels, args.out, title=f"Raw-scan phantom (seed {args.seed}), T1ce slice {z}: "
                                                      "co-registered, brain extracted, segmented",
                              footer=f"lckd segment --preprocess auto, model {seg.card.name}: "
                                     f"{res.preprocessing.split(' (')[0]}; {res.preprocessing.rsplit('; ', 1)[-1]}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
