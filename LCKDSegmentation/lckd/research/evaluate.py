"""15-subset evaluation: Dice and HD95 of ET, TC and WT for every modality subset (`lckd evaluate`).

Each case is read and preprocessed once (all of its scans, on the model grid, cropped to the
brain), then segmented with each of the 15 subsets by `Segmenter.predict`, so evaluation uses
exactly the sliding-window path of inference. Metrics are computed on the model grid (for
1 mm BraTS data that is the files' own grid) with MONAI's `compute_dice` and
`compute_hausdorff_distance` (95th percentile, voxel spacing in mm).

Empty regions (BraTS rule): reference and prediction both empty -> Dice 1, HD95 0; exactly
one empty -> Dice 0, HD95 = `HD95_PENALTY` (373.13 mm, the diagonal of the BraTS volume).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..base.labels import REGIONS, labels_to_regions, regions_to_labels
from ..base.metrics import EMPTY_RULE, HD95_PENALTY, METRIC_KEYS, region_metrics  # noqa: F401 (re-exported)
from ..base.modalities import all_subsets, subset_key

if TYPE_CHECKING:
    from ..inference.options import SegmentOptions


def evaluate_cases(segmenter, cases, subsets: Sequence[Sequence[str]] | None = None,
                   options: SegmentOptions | None = None, *, slice_mm: Mapping[str, np.ndarray] | None = None,
                   progress: Callable[[int, int, str], None] | None = None) -> dict:
    """Run every subset on every loaded case (lckd.prep.modelgrid.LoadedCase); returns the report dict.

    A case counts only for the subsets it can serve (every scan of the subset present): a
    FLAIR + T1ce case is scored on FLAIR, T1ce and T1ce + FLAIR, never on "all four".
    `options` (`SegmentOptions`, checked when made; default: those of `lckd segment`) say how, as
    they say it for `Segmenter.segment`: window overlap and mirrors, and the clean-up
    (`cleanup_rule`: None follows the model card, False scores the raw labels). With a clean-up
    the report scores the cleaned-up labels, and `report["raw"]` the same predictions without it.
    Each per-case row also holds the predicted and reference whole-tumour volumes (mL), their
    ratio, and the run's quality features (`lckd.inference.quality.case_features`, the function
    `Segmenter.segment` uses); `slice_mm` gives each case's per-channel slice thickness (default:
    the grid's own, for 1 mm scans).
    """
    from ..inference.options import SegmentOptions
    from ..inference.quality import case_features

    options = (options or SegmentOptions()).for_card(segmenter.card)
    postprocess = options.cleanup_rule(segmenter.card)
    order = list(segmenter.net.modalities)
    subsets = [tuple(s) for s in (subsets or all_subsets(order))]
    runs = [(case, sub) for case in cases for sub in subsets
            if all(case.present[order.index(m)] for m in sub)]
    rows, raw_rows, total, done = [], [], len(runs), 0
    for case, sub in runs:
        present = np.array([m in sub for m in order], dtype=bool)
        probs = segmenter.predict(case.x.astype(np.float32, copy=False), present, overlap=options.overlap,
                                  sw_batch_size=options.sw_batch_size, mirrors=options.mirrors)
        spacing_zyx = tuple(reversed(case.spacing))
        key = {"case_id": case.case_id, "subset": subset_key(sub)}
        if postprocess is not None:
            raw_rows.append({**key, **region_metrics(labels_to_regions(regions_to_labels(probs)), case.regions,
                                                     spacing_zyx)})
        thick = slice_mm[case.case_id] if slice_mm is not None else np.full(len(order), max(case.spacing))
        feats, label = case_features(probs, case.x, present, case.spacing, sub, float(np.max(thick[present])),
                                     postprocess)
        regions = labels_to_regions(label)
        voxel_ml = float(np.prod(case.spacing)) / 1000.0
        pred_ml, ref_ml = float(regions[2].sum()) * voxel_ml, float(case.regions[2].sum()) * voxel_ml
        rows.append({**key, **region_metrics(regions, case.regions, spacing_zyx), "pred_wt_ml": round(pred_ml, 2),
                     "ref_wt_ml": round(ref_ml, 2), "wt_volume_ratio": round(pred_ml / ref_ml, 4) if ref_ml else None,
                     "features": {k: round(v, 5) for k, v in feats.items()}})
        done += 1
        if progress:
            progress(done, total, f"{case.case_id} {subset_key(sub)}")
    keys = [subset_key(s) for s in subsets]
    report = summarise(rows, keys)
    report["postprocess"] = postprocess
    if postprocess is not None:
        report["raw"] = {k: v for k, v in summarise(raw_rows, keys).items() if k in ("per_subset", "mean")}
    return report


def summarise(rows: list[dict], subset_keys: Sequence[str]) -> dict:
    """Average per-case rows into per-subset rows and a mean over subsets."""
    per_subset = {}
    for key in subset_keys:
        sel = [r for r in rows if r["subset"] == key]
        if sel:
            per_subset[key] = {k: float(np.mean([r[k] for r in sel])) for k in METRIC_KEYS}
            per_subset[key]["cases"] = len(sel)
    mean = {k: float(np.mean([v[k] for v in per_subset.values()])) for k in METRIC_KEYS} if per_subset else {}
    return {"per_subset": per_subset, "mean": mean, "per_case": rows,
            "cases": sorted({r["case_id"] for r in rows}), "empty_rule": EMPTY_RULE,
            "metric_grid": "model grid (brain crop)", "hd95_unit": "mm"}


def format_table(report: dict, markdown: bool = True) -> str:
    """The per-subset table (plus the mean) as Markdown or plain text."""
    head = ["subset", "Dice ET", "Dice TC", "Dice WT", "HD95 ET", "HD95 TC", "HD95 WT"]
    lines = []
    items = list(report["per_subset"].items()) + ([("mean", report["mean"])] if report.get("mean") else [])
    body = [[k] + [f"{v[r]:.3f}" for r in REGIONS] + [f"{v['HD95_' + r]:.1f}" for r in REGIONS] for k, v in items]
    if markdown:
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * 6) + "|")
        lines += ["| " + " | ".join(b) + " |" for b in body]
    else:
        widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
        lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths)))
        lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


def write_report(report: dict, out_dir: str | Path, stem: str = "evaluation") -> list[Path]:
    """Write `<stem>.csv` (15 subset rows), `<stem>.md` and `<stem>.json` atomically."""
    from ..io.imageio import atomic_path

    out = Path(out_dir)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["subset", "cases"] + [f"dice_{r}" for r in REGIONS] + [f"hd95_{r}" for r in REGIONS])
    for key, v in report["per_subset"].items():
        w.writerow([key, v["cases"]] + [f"{v[r]:.4f}" for r in REGIONS] + [f"{v['HD95_' + r]:.2f}" for r in REGIONS])
    texts = {
        f"{stem}.csv": buf.getvalue(),
        f"{stem}.md": format_table(report) + f"\n\nCases: {len(report['cases'])}. Empty regions: "
                                             f"{report['empty_rule']}. HD95 in mm.\n",
        f"{stem}.json": json.dumps(report, indent=2) + "\n",
    }
    paths = []
    for name, text in texts.items():
        with atomic_path(out / name, what="evaluation report") as tmp:
            Path(tmp).write_text(text)
        paths.append(out / name)
    return paths


def card_evaluation(report: dict, description: str) -> dict:
    """The model card's `evaluation` field: per-subset Dice/HD95 without the per-case rows."""
    return {"description": description, "cases": len(report["cases"]),
            "per_subset": report["per_subset"], "mean": report["mean"], "empty_rule": report["empty_rule"]}


# --------------------------------------------------------------------------- command line

#: `--condition` choices and the conditions each scores.
CONDITIONS = {"1mm": ("1mm",), "clinical": ("clinical",), "both": ("1mm", "clinical")}

def add_evaluate_parser(subparsers) -> argparse.ArgumentParser:
    """Register `lckd evaluate`."""
    p = subparsers.add_parser(
        "evaluate", help="Dice and HD95 for all 15 modality subsets on a labelled data set",
        description="Segment every case of a BraTS-layout folder with each of the 15 modality subsets and "
                    "report Dice and HD95 (ET, TC, WT) per subset, as a table, CSV, Markdown and JSON. "
                    + EMPTY_RULE + ".")
    p.add_argument("data", metavar="DATA_DIR", help="BraTS 2018-2021 / 2023 layout folder (or phantom folder)")
    p.add_argument("--model", default=None, help="registry name, model card (.json) or folder (default: bundled)")
    p.add_argument("--split", default=None, metavar="CSV", help="split file (case_id,split); default: all cases")
    p.add_argument("--subset", default="test", choices=["train", "val", "test"], help="split to evaluate")
    p.add_argument("--cases", type=int, default=None, help="evaluate only the first N cases")
    p.add_argument("--out", default=None, metavar="DIR", help="write evaluation.csv/.md/.json here")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--overlap", type=float, default=None, help="sliding-window overlap (default: the card's)")
    p.add_argument("--mirrors", type=int, default=1, metavar="N",
                   help="average over N mirrored copies of each window (1, 2, 4 or 8), as `lckd segment --mirrors`")
    p.add_argument("--postprocess", action=argparse.BooleanOptionalAction, default=None,
                   help="score the cleaned-up labels (default: as the model card says, as `lckd segment` does)")
    p.add_argument("--condition", choices=sorted(CONDITIONS), default="1mm",
                   help="1mm: the scans as given; clinical: degraded to clinical 2D series first (T1, T2, FLAIR "
                        "as 5-6 mm tilted slices with bias fields, T1ce kept at 1 mm; README Accuracy); "
                        "both: each, written as evaluation.* and evaluation-clinical.*")
    p.add_argument("--update-card", action="store_true",
                   help="store the (first condition's) table in the model card's `evaluation` field "
                        "(re-saves the model)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_evaluate)
    return p


def evaluate_model(segmenter, data: str | Path, split: str | Path | None = None, subset: str = "test", *,
                   max_cases: int | None = None, options: SegmentOptions | None = None, show_progress: bool = True,
                   conditions: Sequence[str] = ("1mm",)) -> dict[str, dict]:
    """15-subset reports of `segmenter` on the labelled cases of `data` (one split of `split`, or all),
    segmented with `options` (`evaluate_cases`; default: as `lckd segment`).

    Cases are read by `lckd.prep.modelgrid` (as training reads them) onto the model's grid, as the
    card's spacing and clipping say, once; each of `conditions` scores them: "1mm" as read,
    "clinical" degraded to clinical 2D series first (`lckd.research.degrade.clinical_slices`).
    Returns {condition: report}. Raises InputError when no labelled case is found.
    """
    from ..prep.modelgrid import load_cases, select_cases

    t0 = time.perf_counter()
    files = [f for f in select_cases(data, split, subset) if f.label is not None]
    if not files:
        from ..base.errors import InputError
        raise InputError(f"no labelled case under {data}: evaluation needs the cases' label maps")
    files = files[:max_cases] if max_cases else files
    card = segmenter.card
    bar = None
    if show_progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(files) * 15, desc="evaluate", unit="run")
    try:
        loaded = load_cases(files, segmenter.net.modalities, card.spacing,
                            card.preprocessing.get("clip_percentiles", (0.5, 99.5)), dtype=np.float32)

        def progress(done: int, total: int, msg: str) -> None:
            if bar is not None:
                bar.total = total
                bar.n = done
                bar.set_postfix_str(msg)
                bar.refresh()

        reports: dict[str, dict] = {}
        for condition in conditions:
            t1 = time.perf_counter()
            cases, thick = loaded, None
            if condition == "clinical":
                from .degrade import clinical_slices
                pairs = [clinical_slices(c, segmenter.net.modalities) for c in loaded]
                cases, thick = [p[0] for p in pairs], {p[0].case_id: p[1] for p in pairs}
            elif condition != "1mm":
                raise ValueError(f"unknown evaluation condition {condition!r}: use 1mm or clinical")
            report = evaluate_cases(segmenter, cases, options=options, slice_mm=thick, progress=progress)
            report.update(model={"name": card.name, "version": card.version}, data=str(data), condition=condition,
                          seconds=round(time.perf_counter() - t1 + (t1 - t0 if not reports else 0), 1))
            reports[condition] = report
    finally:
        if bar is not None:
            bar.close()
    return reports


def run_evaluate(args: argparse.Namespace) -> int:
    """`lckd evaluate`: print the table, write the reports; exit status 0."""
    from ..inference.options import SegmentOptions
    from ..inference.segmenter import Segmenter

    # checked before the model loads, by the rules `lckd segment` applies
    options = SegmentOptions(overlap=args.overlap, mirrors=args.mirrors, postprocess=args.postprocess)
    seg = Segmenter.load(args.model, device=args.device, threads=args.threads)
    reports = evaluate_model(seg, args.data, args.split, args.subset, max_cases=args.cases, options=options,
                             show_progress=not args.quiet, conditions=CONDITIONS[args.condition])
    for condition, report in reports.items():
        if len(reports) > 1:
            print(f"{condition}:")
        print(format_table(report, markdown=False))
        if args.out:
            stem = "evaluation" if condition == "1mm" else f"evaluation-{condition}"
            for p in write_report(report, args.out, stem=stem):
                print(f"wrote {p}")
    report = reports[CONDITIONS[args.condition][0]]
    if args.update_card:
        from ..model.modelcard import save_model
        from ..model.registry import resolve_model
        card_path = Path(resolve_model(args.model))
        seg.card.evaluation = card_evaluation(report, f"{len(report['cases'])} cases of {args.data}"
                                              + (f" ({args.subset} split of {args.split})" if args.split else ""))
        save_model(seg.net, seg.card, card_path.parent)
        print(f"updated {card_path}")
    return 0
