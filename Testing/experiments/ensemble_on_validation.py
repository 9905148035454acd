"""Score an ensemble of cross-validation fold models on cases none of its members trained on.

    python Testing/experiments/ensemble_on_validation.py DATA OUT --members CV_A CV_B [CV_C ...] --folds 0 1

Each member is one `lckd crossval --out` folder of the same plan (the script refuses folds whose
split files differ). For every fold K the members' fold-K models (each trained without that
fold's test and validation cases) are averaged (`Segmenter.add_member`) and scored as
`lckd crossval` scores one model, with `lckd segment`'s default options (the first member's
card's clean-up): OUT/fold-K/eval-val/evaluation.json and -clinical.json (and eval/ with
`--split test`), so `compare_arms.py` reads OUT as one more arm.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--members", type=Path, nargs="+", required=True)
    p.add_argument("--folds", type=int, nargs="+", required=True)
    p.add_argument("--split", choices=("val", "test"), default="val")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    from lckd.inference.options import SegmentOptions
    from lckd.inference.segmenter import Segmenter
    from lckd.research.crossval import CONDITIONS, fold_card, report_path
    from lckd.research.evaluate import evaluate_model, write_report

    for k in args.folds:
        splits = {(m / f"fold-{k}" / "split.csv").read_text(encoding="utf-8") for m in args.members}
        if len(splits) != 1:
            raise SystemExit(f"fold {k}: the members' split files differ; an ensemble needs one plan")
        todo = [c for c in CONDITIONS if not report_path(args.out, k, args.split, c).is_file()]
        if not todo:
            continue
        seg = Segmenter.load(str(fold_card(args.members[0], k)), threads=args.threads)
        for m in args.members[1:]:
            seg.add_member(fold_card(m, k))
        reports = evaluate_model(seg, args.data, args.members[0] / f"fold-{k}" / "split.csv", args.split,
                                 options=SegmentOptions(), show_progress=False, conditions=todo)
        for condition, report in reports.items():
            path = report_path(args.out, k, args.split, condition)
            report["ensemble"] = [str(m) for m in args.members]
            write_report(report, path.parent, stem=path.stem)
            print(f"fold {k} {condition}: wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
