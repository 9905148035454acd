"""`lckd demo`: the bundled model on the bundled sample case, with a picture.

Writes the labelmap, prints region volumes and Dice against the sample's ground truth,
and saves a PNG of the slice with the most tumour: region outlines on T1ce and FLAIR, with
the sample's ground truth dashed (`lckd.frontends.preview`). Works offline: everything it needs ships with the package.
"""
from __future__ import annotations

from pathlib import Path

from ..base.metrics import mask_dice
from ..base.modalities import MODALITIES, parse_subset
from ..model.resources import sample_case as bundled_sample_case


def sample_case() -> tuple[str, dict[str, Path], Path]:
    """(case id, modality -> file, ground-truth file) of the bundled sample case
    (`lckd.model.resources.sample_case`)."""
    case = bundled_sample_case()
    assert case.label is not None  # bundled_sample_case only returns a case with its label
    return case.case_id, case.images, case.label


def add_demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="segment the bundled sample case and save a picture",
                       description="Run the bundled default model on the bundled sample case (a synthetic "
                                   "phantom with ground truth): writes the labelmap and a PNG, prints region "
                                   "volumes and Dice.")
    p.add_argument("output_dir", nargs="?", default="lckd-demo", help="where to write (default ./lckd-demo)")
    p.add_argument("--modalities", default=",".join(MODALITIES),
                   help="subset to use, e.g. t2,flair (default: all four)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for PyTorch (default: the cores available to this process)")
    p.add_argument("-q", "--quiet", action="store_true", help="no stage progress")
    p.set_defaults(func=run_demo)


def sample_dice(labelmap) -> dict[str, float]:
    """Dice {ET, TC, WT} of a labelmap (BraTS 2018 labels, SimpleITK image) against the sample's truth."""
    import SimpleITK as sitk

    from ..base.labels import labels_to_regions
    from ..io.datasets import read_label

    pred = labels_to_regions(sitk.GetArrayFromImage(labelmap))
    truth = labels_to_regions(read_label(sample_case()[2], "brats2023"))
    return {r: mask_dice(pred[i], truth[i]) for i, r in enumerate(("ET", "TC", "WT"))}


def run_demo(args) -> int:
    import SimpleITK as sitk

    from ..base.terminal import print_volumes
    from ..inference.record import model_line
    from ..inference.resultfiles import write_labelmap
    from ..inference.segmenter import Segmenter
    from .preview import result_figure
    from .progress import StageProgress

    subset = parse_subset(args.modalities)
    case_id, images, label_path = sample_case()
    out = Path(args.output_dir)
    progress = StageProgress(quiet=args.quiet)
    try:
        progress.stage("load")
        seg = Segmenter.load(device=args.device, threads=args.threads)
        res = seg.segment({m: images[m] for m in subset}, progress=progress)
    finally:
        progress.close()
    seg_path = write_labelmap(res.labelmap, out / f"{case_id}_{'+'.join(subset)}_seg.nii.gz")
    print(f"{model_line(seg.card)}\ncase: {case_id} (synthetic phantom)")
    print_volumes(res.volumes_ml, res.modalities)

    scores = sample_dice(res.labelmap)
    key = "+".join(subset)
    print("Dice vs ground truth: " + "  ".join(f"{r} {v:.3f}" for r, v in scores.items()))
    recorded = seg.card.evaluation.get("sample_case", {}).get("per_subset", {}).get(key)
    if recorded:
        print("model card, this sample, same subset:  "
              + "  ".join(f"{r} {recorded[r]:.3f}" for r in ("ET", "TC", "WT")))
    expected = seg.card.expected_dice(key)
    if expected:
        where = "cross-validated on real cases" if seg.card.evaluation.get("folds") else "held-out cases"
        print(f"model card, {where}, same subset: "
              + "  ".join(f"{r} {v:.3f}" for r, v in expected.items() if v is not None))
    from ..inference.quality import summary_line

    print(summary_line(res.quality))      # what every run says of itself, beside the measured Dice
    # The picture a clinician reads: outlines (not fills) on T1ce and FLAIR, the reference dashed.
    png = result_figure(res, {m: sitk.ReadImage(str(p)) for m, p in images.items()},
                        out / f"{case_id}_{'+'.join(subset)}.png", seg.card,
                        reference_label=sitk.ReadImage(str(label_path)),
                        title=f"{case_id} (phantom), {'+'.join(subset)}: Dice ET {scores['ET']:.2f}, "
                              f"TC {scores['TC']:.2f}, WT {scores['WT']:.2f}")
    print(f"wrote {seg_path}\nwrote {png}")
    return 0
