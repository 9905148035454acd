"""Mirrored test-time averaging (`--mirrors N`) on the cross-validation folds' models.

    python Testing/experiments/mirrors_on_cv.py CV_DIR DATA_DIR --cases val --mirrors 1 --mirrors 2 --mirrors 4
    python Testing/experiments/mirrors_on_cv.py CV_DIR DATA_DIR --cases test --mirrors 2 [--fold K ...]

`--cases val` scores each fold's validation case (never trained on, never a test case): the
place to choose N. `--cases test` then scores the fold's test cases, as `lckd crossval` does
(with the clean-up rule recorded in CV_DIR/crossval.json), for the N chosen; with `--mirrors 1` it reproduces the
cross-validation table. Prints each fold's 15-subset mean Dice and HD95 and, per N, the mean
and SD over the folds run; `--out FILE` keeps every fold's per-subset report as JSON. Folds
can run in separate processes (`--fold K`) and be pooled with `--pool FILE ...`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lckd.base.labels import REGIONS
from lckd.inference import Segmenter, SegmentOptions
from lckd.prep.modelgrid import load_cases, select_cases
from lckd.research.evaluate import evaluate_cases

KEYS = list(REGIONS) + [f"HD95_{r}" for r in REGIONS]


def run_fold(cv: Path, data: str, fold: int, which: str, mirrors: list[int], threads: int,
             rule: dict | None) -> dict:
    """{N: report} for one fold's validation or test cases, cleaned up with `rule` (None: the card's)."""
    card = next((cv / f"fold-{fold}" / "model").glob("*-fold*.json"))
    seg = Segmenter.load(str(card), device="cpu", threads=threads)
    files = [c for c in select_cases(data, cv / f"fold-{fold}" / "split.csv", which) if c.label is not None]
    cases = load_cases(files, list(seg.net.modalities), seg.card.spacing,
                       seg.card.preprocessing.get("clip_percentiles", (0.5, 99.5)), dtype=np.float32)
    if rule is not None:
        seg.card.postprocessing = dict(rule)   # the rule under test, applied as the card's
    out = {}
    for n in mirrors:
        rep = evaluate_cases(seg, cases, options=SegmentOptions(mirrors=n))
        out[n] = {"cases": [c.case_id for c in cases], "per_subset": rep["per_subset"], "mean": rep["mean"]}
        print(f"fold {fold} mirrors {n}: " + "  ".join(f"{k} {rep['mean'][k]:.3f}" for k in KEYS), flush=True)
    return out


def summary(results: dict) -> None:
    """Mean and SD over folds of the 15-subset means, per mirror count ({fold: {"N": report}}, as JSON)."""
    for n in sorted({n for r in results.values() for n in r}, key=int):
        rows = [r[n]["mean"] for r in results.values() if n in r]
        sd = (lambda v: float(np.std(v, ddof=1))) if len(rows) > 1 else (lambda v: 0.0)
        m = {k: (float(np.mean([x[k] for x in rows])), sd([x[k] for x in rows])) for k in KEYS}
        print(f"mirrors {n} ({len(rows)} folds): " + "  ".join(f"{k} {v[0]:.3f} ± {v[1]:.3f}" for k, v in m.items()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cv_dir")
    p.add_argument("data")
    p.add_argument("--cases", choices=["val", "test"], default="val")
    p.add_argument("--mirrors", type=int, action="append", default=None)
    p.add_argument("--fold", type=int, action="append", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, metavar="FILE")
    p.add_argument("--pool", nargs="+", default=None, metavar="FILE", help="only print the summary of these outputs")
    args = p.parse_args(argv)
    if args.pool:
        results = {}
        for f in args.pool:
            results.update(json.loads(Path(f).read_text()))
        summary(results)
        return 0
    cv = Path(args.cv_dir)
    plan = json.loads((cv / "plan.json").read_text())
    folds = args.fold if args.fold is not None else range(len(plan["folds"]))
    # the clean-up the cross-validation table was scored with (the recipe's; a fold's own card may
    # predate it), so `--cases test --mirrors 1` reproduces that table
    # (before the report exists, each fold's card's own rule)
    report = cv / "crossval.json"
    rule = json.loads(report.read_text()).get("postprocess") if report.is_file() else None
    results = {}
    for k in folds:
        reports = run_fold(cv, args.data, k, args.cases, args.mirrors or [1, 2], args.threads, rule)
        results[str(k)] = {str(n): r for n, r in reports.items()}
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1))
    summary(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
