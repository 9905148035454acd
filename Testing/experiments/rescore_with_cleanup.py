"""A cross-validation scored again with another clean-up rule, on the same fold models.

    python Testing/experiments/rescore_with_cleanup.py CV OUT --rule '{"thick_slices": {...}}' [--keep 1mm] [--fold K]
    lckd crossval DATA --out OUT ... --fold K        # scores what OUT lacks, then the tables

OUT gets CV's plan, splits and fold models (checkpoints left out), each fold card's
`postprocessing` updated with `--rule` (keys given replace the card's, the rest stay), and CV's
reports for the conditions named by `--keep`: only where the new rule cannot change a run (the
thick-slice threshold leaves 1 mm runs alone, whose scans are all thinner than its limit). Then
`lckd crossval` with the same fold plan scores only the missing reports and writes the tables,
so the comparison with CV is the same fold models, cases and runs with one rule changed.
`--fold` (repeatable) prepares only those folds (the others may still be training in CV).
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from lckd.research.crossval import CONDITIONS, PLAN, SCORED_SPLITS, fold_card, fold_dir, report_path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cv", type=Path, help="a cross-validation folder whose folds have trained")
    p.add_argument("out", type=Path, help="the new folder (a fold already in it is refused)")
    p.add_argument("--rule", required=True, help="JSON object merged into each fold card's postprocessing")
    p.add_argument("--keep", nargs="*", default=[], choices=CONDITIONS,
                   help="conditions whose reports the rule cannot change (copied, not scored again)")
    p.add_argument("--fold", type=int, action="append", default=None, metavar="K", help="only fold K")
    args = p.parse_args(argv)
    rule = json.loads(args.rule)
    plan = json.loads((args.cv / PLAN).read_text(encoding="utf-8"))
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copy(args.cv / PLAN, args.out / PLAN)
    for k in args.fold if args.fold is not None else range(len(plan["folds"])):
        source = fold_card(args.cv, k)
        model = fold_dir(args.out, k) / "model"
        model.mkdir(parents=True)
        shutil.copy(fold_dir(args.cv, k) / "split.csv", fold_dir(args.out, k) / "split.csv")
        card = json.loads(source.read_text(encoding="utf-8"))
        card["postprocessing"] = {**card.get("postprocessing", {}), **rule}
        shutil.copy(source.with_name(card["weights"]["file"]), model / card["weights"]["file"])
        (model / source.name).write_text(json.dumps(card, indent=2), encoding="utf-8")
        for split in SCORED_SPLITS:
            for condition in args.keep:
                old = report_path(args.cv, k, split, condition)
                new = report_path(args.out, k, split, condition)
                new.parent.mkdir(parents=True, exist_ok=True)
                for f in old.parent.glob(old.stem + ".*"):
                    shutil.copy(f, new.parent / f.name)
        print(f"fold {k}: {model / source.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
