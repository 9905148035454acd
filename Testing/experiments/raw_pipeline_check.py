"""Raw-scan pipeline against the same phantom given preprocessed (issue "Raw clinical scans in").

For each seed: the raw phantom (`lckd.research.rawphantom`: skull, scalp, neck, 2D series with 4-6 mm
slices, bias fields) through `Segmenter.segment(preprocess="on")`, and its skull-stripped
BraTS-grid twin (`make_phantom(seed)`) through the plain pipeline, with all four scans and
with FLAIR only. Prints brain-mask Dice against the truth, WT Dice of both, and stage times.

    python Testing/experiments/raw_pipeline_check.py --seeds 100 101 102 [--model lckd-lite-phantom] [--n4]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import SimpleITK as sitk

from lckd.base.metrics import mask_dice as dice
from lckd.inference import Segmenter
from lckd.research.phantom import make_phantom
from lckd.research.rawphantom import make_raw_phantom


def on(img: sitk.Image, grid: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.Resample(img, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102])
    ap.add_argument("--model", default="lckd-lite-phantom")
    ap.add_argument("--extractor", default=None)
    ap.add_argument("--n4", action="store_true", help="N4 bias-field correction in the raw pipeline")
    args = ap.parse_args()
    seg = Segmenter.load(args.model, device="cpu")
    rows = []
    for seed in args.seeds:
        raw = make_raw_phantom(seed)
        twin_images, twin_label = make_phantom(seed).to_sitk(integer=True)
        for subset in (("T1", "T1ce", "T2", "FLAIR"), ("FLAIR",)):
            t = time.perf_counter()
            res = seg.segment({m: raw.series[m] for m in subset}, preprocess="on",
                              brain_extractor=args.extractor, bias_correction=args.n4)
            took = time.perf_counter() - t
            wt_raw = dice(on(res.labelmap, raw.label), sitk.GetArrayFromImage(raw.label))
            mask = dice(on(res.brain_mask, raw.brain_mask), sitk.GetArrayFromImage(raw.brain_mask))
            twin = seg.segment({m: twin_images[m] for m in subset}, preprocess="off")
            wt_twin = dice(sitk.GetArrayFromImage(twin.labelmap), sitk.GetArrayFromImage(twin_label))
            stages = ", ".join(f"{k} {v:.1f}" for k, v in res.timings.items() if k != "total")
            rows.append((seed, "+".join(subset), mask, wt_raw, wt_twin))
            print(f"seed {seed} {'+'.join(subset):<18} mask Dice {mask:.3f}  WT raw {wt_raw:.3f}  "
                  f"WT preprocessed {wt_twin:.3f}  (diff {wt_raw - wt_twin:+.3f})  {took:.1f} s: {stages}",
                  flush=True)
    for subset in ("T1+T1ce+T2+FLAIR", "FLAIR"):
        r = np.array([row[2:] for row in rows if row[1] == subset])
        print(f"mean {subset:<18} mask Dice {r[:, 0].mean():.3f} (min {r[:, 0].min():.3f})  WT raw "
              f"{r[:, 1].mean():.3f}  WT preprocessed {r[:, 2].mean():.3f}  (diff {(r[:, 1] - r[:, 2]).mean():+.3f}, "
              f"worst {(r[:, 1] - r[:, 2]).min():+.3f})")


if __name__ == "__main__":
    main()
