"""Does a model trained on phantoms find the tumour on a real scan? A check without labels.

    python Testing/experiments/real_case_check.py [CASE_DIR] [--model M] [--out DIR]

Runs the model on one real BraTS case (default: ../shared/data/real/BraTS-GLI-00001-000,
which has no labels) with all four scans, with T2+FLAIR and with FLAIR alone; writes an
overlay PNG per run and prints the region volumes. As a label-free reference it builds the
FLAIR hyperintensity mask (FLAIR above mean + 2 SD of the brain, its largest connected
component, holes filled): the whole tumour should lie on it, so the table reports how much
of the predicted whole tumour lies inside the mask and the Dice of the two.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from lckd.base.errors import InputError
from lckd.base.labels import CONVENTIONS, labels_to_regions
from lckd.base.metrics import mask_dice as dice
from lckd.base.segments import SEGMENTS
from lckd.inference import Segmenter
from lckd.io.atomicwrite import atomic_path
from lckd.io.datasets import find_cases

DEFAULT_CASE = Path(__file__).resolve().parents[3] / "shared" / "data" / "real" / "BraTS-GLI-00001-000"
SUBSETS = (("T1", "T1ce", "T2", "FLAIR"), ("T2", "FLAIR"), ("FLAIR",))


def flair_hyperintensity(flair: np.ndarray) -> np.ndarray:
    """Largest connected FLAIR-bright region of the brain (mean + 2 SD), holes filled."""
    brain = flair > 0
    values = flair[brain]
    bright = brain & (flair > values.mean() + 2 * values.std())
    bright = ndimage.binary_opening(bright, iterations=1)
    comps, n = ndimage.label(bright)
    if n == 0:
        return bright
    sizes = ndimage.sum_labels(np.ones_like(comps), comps, index=np.arange(1, n + 1))
    return ndimage.binary_fill_holes(comps == (int(np.argmax(sizes)) + 1))


def save_overlay_png(image: np.ndarray, label: np.ndarray, path: Path, title: str = "",
                     convention: str = "brats2018") -> Path:
    """Axial, coronal and sagittal slices through the tumour's centre with filled regions
    (an overview for this experiment; `lckd demo` and `--preview` draw `lckd.frontends.preview` outlines)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        raise InputError("the overlay picture needs matplotlib: pip install matplotlib") from None

    tumour = np.argwhere(label > 0)
    centre = tumour.mean(0).round().astype(int) if len(tumour) else np.array(label.shape) // 2
    values = CONVENTIONS[convention]
    rgba = np.zeros(label.shape + (4,), dtype=np.float32)
    for info in SEGMENTS:
        rgba[label == values[info.key]] = (*info.color, 0.55)
    lo, hi = np.percentile(image[image > 0], (0.5, 99.5)) if (image > 0).any() else (0, 1)
    views = [("axial", lambda a: a[centre[0]]), ("coronal", lambda a: a[:, centre[1]][::-1]),
             ("sagittal", lambda a: a[:, :, centre[2]][::-1])]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.6), facecolor="black")
    for ax, (name, cut) in zip(axes, views):
        ax.imshow(cut(image), cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        ax.imshow(cut(rgba), interpolation="nearest")
        ax.set_title(name, color="white")
        ax.axis("off")
    handles = [Patch(color=info.color, label=info.name) for info in SEGMENTS]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False, labelcolor="white")
    fig.suptitle(title, color="white")
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), dpi=100, facecolor="black", format="png")
    plt.close(fig)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("case", nargs="?", default=str(DEFAULT_CASE))
    p.add_argument("--model", default=None)
    p.add_argument("--out", default="real-case-check")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    cases = find_cases(args.case)
    if not cases:
        print(f"no BraTS case under {args.case}", file=sys.stderr)
        return 1
    case = cases[0]
    seg = Segmenter.load(args.model, device="cpu", threads=args.threads)
    flair = sitk.GetArrayFromImage(sitk.ReadImage(str(case.images["FLAIR"])))
    hyper = flair_hyperintensity(flair)
    print(f"{case.case_id}: FLAIR hyperintensity mask {hyper.sum() / 1000:.1f} mL "
          f"(model {seg.card.name} {seg.card.version})")
    print(f"{'inputs':<22}{'NCR':>8}{'ED':>8}{'ET':>8}{'WT mL':>8}{'WT in mask':>12}{'Dice(WT, mask)':>16}{'s':>6}")
    for subset in SUBSETS:
        res = seg.segment({m: case.images[m] for m in subset})
        label = sitk.GetArrayFromImage(res.labelmap)
        wt = labels_to_regions(label)[2]
        inside = float((wt & hyper).sum() / max(wt.sum(), 1))
        v = res.volumes_ml
        print(f"{'+'.join(subset):<22}{v['NCR']:>8.1f}{v['ED']:>8.1f}{v['ET']:>8.1f}{v['WT']:>8.1f}"
              f"{inside:>12.2f}{dice(wt, hyper):>16.2f}{res.timings['total']:>6.1f}")
        save_overlay_png(flair, label, Path(args.out) / f"{case.case_id}_{'+'.join(subset)}.png",
                         title=f"{case.case_id} (real, no labels): {'+'.join(subset)} (background: FLAIR)")
    print(f"overlays in {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
