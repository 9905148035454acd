"""k-fold cross-validation (`lckd crossval`): fold plan, per-fold training and evaluation, pooled table.

The honest measure of a model trained on a few real cases. Only cases with every scan and a
label rotate into the test folds (so each fold can be scored on all 15 subsets); cases with
missing scans, and any case named with `--train-only` (e.g. a patient who also appears under
another BraTS year), are on the training side of every fold. Each fold also holds out one
validation case (for the teacher election), taken from another fold's test cases, so a fold's
training, validation and test cases are disjoint.

Layout of the output folder::

    OUT/plan.json                 the folds (test / val / train case ids), seed, k
    OUT/fold-K/split.csv          the fold's split file (lckd train / lckd evaluate read it)
    OUT/fold-K/model/             lckd train --out (checkpoint, log, card)
    OUT/fold-K/eval/              the test cases: evaluation.* (1 mm), evaluation-clinical.* (clinical 2D series)
    OUT/fold-K/eval-val/          the same for the fold's validation case
    OUT/crossval.{json,md,csv}    mean and spread over folds, per subset, and every run's row (tagged
                                  with its fold); crossval-clinical.*, crossval-val.*, crossval-val-clinical.*

Every step skips what is already done and training resumes from its checkpoint, so an
interrupted run continues where it stopped; folds can run in separate processes (`--fold`).
"""
from __future__ import annotations

import argparse
import fnmatch
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..base.errors import InputError
from ..base.modalities import MODALITIES
from ..io.datasets import CaseFiles, find_cases, write_split

PLAN = "plan.json"


def fold_plan(cases: Sequence[CaseFiles], k: int = 5, seed: int = 0,
              train_only: Sequence[str] = ()) -> dict:
    """Folds of the complete labelled cases; everything else trains in every fold.

    Returns {"k", "seed", "train_only", "folds": [{"test": [...], "val": [...], "train": [...]}]}.
    The rotating cases are shuffled with `seed` and dealt into k folds of near-equal size;
    fold K's validation case is the first test case of fold K+1 (mod k).
    """
    def pinned(case_id: str) -> bool:
        return any(fnmatch.fnmatchcase(case_id, pat) for pat in train_only)

    rotating = sorted(c.case_id for c in cases
                      if c.label is not None and set(MODALITIES) <= set(c.images) and not pinned(c.case_id))
    if k < 2:
        raise InputError(f"cross-validation needs at least 2 folds, got {k}")
    if len(rotating) < k:
        raise InputError(f"{len(rotating)} complete labelled case(s) (all four scans and a label) for "
                         f"{k} folds: need at least {k}")
    order = [rotating[i] for i in np.random.default_rng(seed).permutation(len(rotating))]
    tests = [sorted(order[i::k]) for i in range(k)]
    labelled = sorted(c.case_id for c in cases if c.label is not None)
    folds = []
    for i, test in enumerate(tests):
        val = [tests[(i + 1) % k][0]]
        train = [c for c in labelled if c not in test and c not in val]
        folds.append({"test": test, "val": val, "train": train})
    return {"k": k, "seed": seed, "train_only": list(train_only), "folds": folds}


def write_plan(plan: dict, out: str | Path) -> list[Path]:
    """OUT/plan.json and OUT/fold-K/split.csv for every fold; returns the split paths."""
    from ..io.imageio import atomic_path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / PLAN, what="cross-validation plan") as tmp:
        Path(tmp).write_text(json.dumps(plan, indent=1), encoding="utf-8")
    paths = []
    for i, fold in enumerate(plan["folds"]):
        path = fold_dir(out, i) / "split.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_split(path, fold)
        paths.append(path)
    return paths


def fold_dir(out: str | Path, fold: int) -> Path:
    """The folder of fold `fold` (0-based)."""
    return Path(out) / f"fold-{fold}"


def fold_card(out: str | Path, fold: int) -> Path:
    """The model card of fold `fold`'s trained model; InputError until the fold has trained."""
    from ..base.errors import InputError
    cards = sorted((fold_dir(out, fold) / "model").glob("*.json"))
    if len(cards) != 1:
        raise InputError(f"{fold_dir(out, fold) / 'model'}: expected one model card, found {len(cards)} "
                         "(train the fold first)")
    return cards[0]


def aggregate(reports: Sequence[dict]) -> dict:
    """Mean and spread over folds of per-fold `evaluate_cases` reports.

    Per subset: each metric's mean over the folds that scored it and its SD over those folds
    (`<metric>_sd`), the number of folds and of test cases. `mean` is the 15-subset mean of
    each fold, averaged over folds, with the SD over folds; `per_fold` keeps those fold means.
    """
    from ..base.metrics import EMPTY_RULE, METRIC_KEYS

    keys = list(dict.fromkeys(k for r in reports for k in r["per_subset"]))
    # each run row says which fold's model made it (so the tables and the quality calibration
    # can be recomputed from the report alone); rows already tagged keep their fold
    per_case = [{"fold": i, **row} for i, r in enumerate(reports) for row in r.get("per_case", [])]
    per_subset = {}
    for key in keys:
        rows = [r["per_subset"][key] for r in reports if key in r["per_subset"]]
        entry: dict = {}
        for m in METRIC_KEYS:
            vals = np.array([row[m] for row in rows], dtype=float)
            entry[m] = float(vals.mean())
            entry[f"{m}_sd"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        entry["folds"] = len(rows)
        entry["cases"] = int(sum(row["cases"] for row in rows))
        per_subset[key] = entry
    fold_means = [r["mean"] for r in reports]
    mean: dict = {}
    for m in METRIC_KEYS:
        vals = np.array([f[m] for f in fold_means], dtype=float)
        mean[m] = float(vals.mean())
        mean[f"{m}_sd"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
    cases = sorted({c for r in reports for c in r.get("cases", [])})
    out = {"per_subset": per_subset, "mean": mean, "per_fold": fold_means, "folds": len(reports),
           "cases": cases, "per_case": per_case,
           "empty_rule": EMPTY_RULE, "hd95_unit": "mm", "spread": "SD over folds",
           "postprocess": reports[0].get("postprocess")}
    if all("raw" in r for r in reports):            # the same predictions without the clean-up
        raw = aggregate([r["raw"] for r in reports])
        out["raw"] = {k: raw[k] for k in ("per_subset", "mean", "per_fold")}
    return out


def format_table(report: dict, markdown: bool = True, pm: str = "\u00b1") -> str:
    """Per-subset table with mean ± SD over folds (and the 15-subset mean); `pm` is the sign used."""
    from ..base.labels import REGIONS

    head = ["subset", "Dice ET", "Dice TC", "Dice WT", "HD95 ET", "HD95 TC", "HD95 WT"]
    items = list(report["per_subset"].items()) + [("mean", report["mean"])]
    body = [[k] + [f"{v[r]:.3f} {pm} {v[r + '_sd']:.3f}" for r in REGIONS]
            + [f"{v['HD95_' + r]:.1f} {pm} {v['HD95_' + r + '_sd']:.1f}" for r in REGIONS] for k, v in items]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * 6) + "|"]
        return "\n".join(lines + ["| " + " | ".join(b) + " |" for b in body])
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    return "\n".join(["  ".join(h.ljust(w) for h, w in zip(head, widths))]
                     + ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body])


def write_report(report: dict, out: str | Path, stem: str = "crossval") -> list[Path]:
    """OUT/<stem>.json, .md and .csv (atomically)."""
    import csv
    import io

    from ..base.labels import REGIONS
    from ..io.imageio import atomic_path

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    metrics = list(REGIONS) + [f"HD95_{r}" for r in REGIONS]
    w.writerow(["subset", "folds", "cases"] + [h for m in metrics for h in (m.lower(), m.lower() + "_sd")])
    for key, v in list(report["per_subset"].items()) + [("mean", report["mean"])]:
        w.writerow([key, v.get("folds", report["folds"]), v.get("cases", len(report["cases"]))]
                   + [f"{v[h]:.4f}" for m in metrics for h in (m, m + "_sd")])
    note = (f"\n\n{report['folds']}-fold cross-validation, {len(report['cases'])} test cases; "
            f"mean ± SD over folds. Empty regions: {report['empty_rule']}. HD95 in mm.\n")
    if report.get("raw"):
        raw = report["raw"]["mean"]
        note += (f"Clean-up {report['postprocess']}; without it the 15-subset mean is "
                 + ", ".join(f"Dice {r} {raw[r]:.3f}" for r in REGIONS) + ", "
                 + ", ".join(f"HD95 {r} {raw['HD95_' + r]:.1f}" for r in REGIONS) + ".\n")
    texts = {f"{stem}.json": json.dumps(report, indent=1) + "\n", f"{stem}.md": format_table(report) + note,
             f"{stem}.csv": buf.getvalue()}
    paths = []
    for name, text in texts.items():
        path = Path(out) / name
        with atomic_path(path, what="cross-validation report") as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def card_evaluation(report: dict, data: str) -> dict:
    """The model card's `evaluation` field from a cross-validation report (no per-case rows)."""
    return {"description": f"{report['folds']}-fold cross-validation on {data}: each value is the mean over "
                           f"folds of the test cases the fold's model did not train on (± SD over folds)",
            "cases": len(report["cases"]), "folds": report["folds"], "per_subset": report["per_subset"],
            "mean": report["mean"], "empty_rule": report["empty_rule"], "case_ids": report["cases"]}


def card_tables(reports: Mapping[str, dict], data: str) -> dict:
    """The card's `evaluation`: the 1 mm table with the clinical-slice one under "clinical"."""
    evaluation = card_evaluation(reports["1mm"], data)
    evaluation["clinical"] = card_evaluation(reports["clinical"], data + " degraded to clinical 2D series")
    return evaluation


# --------------------------------------------------------------------------- running the folds

def _train_fold(data: str, fold: int, out: Path, cfg, name: str, device: str, threads: int | None,
                progress: bool) -> Path:
    """Train (or resume, or reuse) fold `fold`'s model; returns its card path."""
    from .training.trainer import RunOptions, Trainer, close_distributed

    model_dir = fold_dir(out, fold) / "model"
    card = model_dir / f"{name}-fold{fold}.json"
    if card.is_file():
        return card
    resume = (model_dir / "checkpoint" / "checkpoint.json").is_file()
    opts = RunOptions(data=data, out=str(model_dir), split=str(fold_dir(out, fold) / "split.csv"),
                      name=f"{name}-fold{fold}", description=f"cross-validation fold {fold}",
                      device=device, threads=threads, resume=resume, progress=progress)
    try:
        path = Trainer(cfg, opts).train()
    finally:
        close_distributed()
    return Path(path) if path else card


#: What each fold is scored on: its test cases (the cross-validated tables) and its validation
#: case (for choices that must not see the test cases, e.g. the quality flag's threshold), each
#: at 1 mm and degraded to clinical 2D series (`lckd.research.degrade`).
SCORED_SPLITS = ("test", "val")
CONDITIONS = ("1mm", "clinical")


def report_name(split: str = "test", condition: str = "1mm") -> str:
    """The aggregated report's file name in OUT: crossval.json is the test cases at 1 mm."""
    return ("crossval" + ("" if split == "test" else f"-{split}")
            + ("" if condition == "1mm" else f"-{condition}") + ".json")


def report_path(out: str | Path, fold: int, split: str = "test", condition: str = "1mm") -> Path:
    """Where fold `fold`'s report for one split and condition lives (eval/evaluation.json is the
    test cases at 1 mm, as before the clinical condition existed)."""
    folder = "eval" if split == "test" else f"eval-{split}"
    stem = "evaluation" if condition == "1mm" else f"evaluation-{condition}"
    return fold_dir(out, fold) / folder / f"{stem}.json"


def _evaluate_fold(data: str, fold: int, out: Path, card: Path, device: str, threads: int | None,
                   progress: bool) -> None:
    """Score the fold's model on its test and validation cases, 1 mm and clinical (skips what is written),
    with the options `lckd segment` uses by default: the fold card's clean-up (the recipe's), overlap."""
    from ..inference.options import SegmentOptions
    from ..inference.segmenter import Segmenter
    from .evaluate import evaluate_model
    from .evaluate import write_report as write_eval

    seg = None
    for split in SCORED_SPLITS:
        todo = [c for c in CONDITIONS if not report_path(out, fold, split, c).is_file()]
        if not todo:
            continue
        seg = seg or Segmenter.load(str(card), device=device, threads=threads)
        reports = evaluate_model(seg, data, fold_dir(out, fold) / "split.csv", split, options=SegmentOptions(),
                                 show_progress=progress, conditions=todo)
        for condition, report in reports.items():
            path = report_path(out, fold, split, condition)
            write_eval(report, path.parent, stem=path.stem)


def add_crossval_parser(subparsers) -> argparse.ArgumentParser:
    """Register `lckd crossval`."""
    from .training.command import add_recipe_arguments

    p = subparsers.add_parser(
        "crossval", help="k-fold cross-validation: train and evaluate one model per fold",
        description="k-fold cross-validation on a BraTS-layout folder. Cases with all four scans and a label "
                    "rotate into the test folds; cases with missing scans (and --train-only ones) train in every "
                    "fold; each fold holds out one validation case for the teacher election. Each fold's model "
                    "is trained (resuming an interrupted run) and scored on its test cases with all 15 subsets; "
                    "when every fold is done the mean and SD over folds go to OUT/crossval.{md,csv,json}.")
    p.add_argument("data", metavar="DATA_DIR")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (plan, folds, report)")
    p.add_argument("--folds", type=int, default=5, help="k (default 5)")
    p.add_argument("--fold", type=int, action="append", default=None, metavar="K",
                   help="run only fold K (0-based; repeatable), e.g. one fold per process")
    p.add_argument("--train-only", action="append", default=[], metavar="PATTERN",
                   help="case ids (shell patterns) kept on the training side of every fold, "
                        "e.g. a patient who also appears under another BraTS year")
    add_recipe_arguments(p)
    p.add_argument("--name", default="lckd-cv", help="model name; fold K's model is NAME-foldK")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per process (default: all cores)")
    p.add_argument("--data-name", default=None, metavar="TEXT",
                   help="what the data is, for the card (default: the folder's name; a user reads it in lckd info)")
    p.add_argument("--update-card", metavar="CARD", default=None,
                   help="store the cross-validation table as this model card's expected Dice (re-saves it)")
    p.add_argument("--no-evaluate", action="store_true",
                   help="train the folds only (e.g. on a GPU machine); a later run without it scores them")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_crossval)
    return p


def crossval_config(args: argparse.Namespace):
    """The training recipe every fold uses: the preset with the command line's overrides."""
    from .training.command import config_from_args

    return config_from_args(args)


def run_crossval(args: argparse.Namespace) -> int:
    """`lckd crossval`: exit status 0 (also when some folds are left to other processes)."""
    out = Path(args.out)
    plan = fold_plan(find_cases(args.data), args.folds, args.seed or 0, args.train_only)
    old = out / PLAN
    if old.is_file() and json.loads(old.read_text())["folds"] != plan["folds"]:
        raise InputError(f"{old} holds a different fold plan (other data, k, seed or --train-only): "
                         f"use a new --out folder")
    write_plan(plan, out)
    cfg = crossval_config(args)
    rule = dict(cfg.postprocessing) or None       # the recipe's clean-up, as its models apply it
    folds = args.fold if args.fold is not None else range(args.folds)
    for k in folds:
        if not 0 <= k < args.folds:
            raise InputError(f"--fold {k}: folds are numbered 0 to {args.folds - 1}")
        print(f"fold {k}: test {', '.join(plan['folds'][k]['test'])}; val {plan['folds'][k]['val'][0]}; "
              f"{len(plan['folds'][k]['train'])} training cases")
        card = _train_fold(args.data, k, out, cfg, args.name, args.device, args.threads, not args.quiet)
        if args.no_evaluate:
            continue
        _evaluate_fold(args.data, k, out, card, args.device, args.threads, not args.quiet)
    missing = sorted({k for k in range(args.folds) for c in CONDITIONS if not report_path(out, k, "test", c).is_file()})
    if args.no_evaluate or missing:
        if missing:
            print(f"folds still to score: {', '.join(map(str, missing))} (the report is written when all are done)")
        return 0
    from ..base.terminal import plus_minus

    reports = {}
    for split in SCORED_SPLITS:
        for condition in CONDITIONS:
            paths = [report_path(out, k, split, condition) for k in range(args.folds)]
            if not all(p.is_file() for p in paths):
                continue
            report = aggregate([json.loads(p.read_text()) for p in paths])
            report.update(condition=condition, split=split)
            stem = Path(report_name(split, condition)).stem
            if split == "test":
                reports[condition] = report
                print(f"{condition}:")
                print(format_table(report, markdown=False, pm=plus_minus()))
            for path in write_report(report, out, stem=stem):
                print(f"wrote {path}")
    if args.update_card:
        from ..model.modelcard import load_model, save_model
        net, updated = load_model(args.update_card)
        updated.evaluation = card_tables(reports, args.data_name or Path(args.data).name)
        updated.postprocessing = dict(rule or {})     # the expected Dice holds for labels cleaned up this way
        print(f"updated {save_model(net, updated, Path(args.update_card).parent)}")
    return 0
