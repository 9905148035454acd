"""Fit and cross-validate the contrast check (lckd.contrastcheck) on the shared labelled cases.

    python Testing/experiments/contrast_check_cv.py DATA --cache FEATURES.npz [--write]

Every scan of every shared case is read as inference reads it (reference grid, 1 mm, brain crop,
z-score), at 1 mm and as clinical 2D series (lckd.degrade, the cross-validation's degradation);
phantoms of the sizes the tests use are added (they train the check, they are not in the
table). Training rows also get intensity-augmented copies (contrast, gamma, bias, noise, thick
slices: the training augmentation) so the check does not learn one scanner's look.

Cross-validation by case (leave one case out): for each case, the check is fitted on the
others' rows and judges the case's scans under their own flag (a warning there is a false
alarm) and under every wrong flag (a warning there is a catch). The decision levels are then
chosen on those cross-validated probabilities: the warning level is the highest that keeps
false alarms at or under 1 % of correctly flagged scans; the refusal level is a tenth of the
lowest flagged-contrast probability any correctly flagged scan got. The table prints catches
per true contrast and wrong flag, at 1 mm and on clinical series, and the false-alarm rate.
`--write` fits on every row and writes the package's contrastcheck.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def scan_rows(data: Path, n_aug: int, seed: int = 0) -> dict:
    """Every scan as the features read it (`subsampled`): 1 mm, clinical, augmented copies, phantoms."""
    import torch

    from lckd.base.modalities import MODALITIES
    from lckd.inference.contrastcheck import CLASSES, subsampled
    from lckd.prep.modelgrid import load_case, select_cases
    from lckd.prep.preprocess import prepare_case
    from lckd.research.degrade import clinical_slices
    from lckd.research.phantom import make_phantom
    from lckd.research.training.augment import augment_intensities

    order = list(MODALITIES)
    scans, labels, groups, kinds = [], [], [], []

    def add(x: np.ndarray, present: np.ndarray, group: str, kind: str) -> None:
        for c in np.flatnonzero(present):
            scans.append(subsampled(x[c]).astype(np.float16))
            labels.append(CLASSES.index(order[c]))
            groups.append(group)
            kinds.append(kind)

    cases = select_cases(data, None, "train")
    rng = np.random.default_rng(seed)
    for i, case in enumerate(cases):
        t = time.time()
        lc = load_case(case, order, (1.0, 1.0, 1.0))
        add(lc.x, lc.present, case.case_id, "1mm")
        degraded, _ = clinical_slices(lc, order, seed=0)
        add(degraded.x, degraded.present, case.case_id, "clinical")
        for _ in range(n_aug):
            x = augment_intensities(torch.from_numpy(lc.x.astype(np.float32)), lc.present, rng,
                                    thick_slice_prob=0.5).numpy()
            add(x, lc.present, case.case_id, "aug")
        print(f"{i + 1}/{len(cases)} {case.case_id} {time.time() - t:.1f} s", file=sys.stderr)
    for seed_, shape in [(s, (155, 240, 240)) for s in range(900, 906)] + \
                        [(s, (64, 80, 80)) for s in range(910, 914)] + [(s, (48, 64, 64)) for s in range(920, 924)]:
        ph = make_phantom(seed_, shape)
        prepared = prepare_case(ph.images, order)
        add(prepared.x, prepared.present, f"PHANTOM-{seed_}", "phantom")
    return {"scans": scans, "labels": np.array(labels), "groups": np.array(groups), "kinds": np.array(kinds)}


def with_features(rows: dict) -> dict:
    """`rows` with the features of every scan (recomputed: the cache holds the scans)."""
    from lckd.inference.contrastcheck import contrast_features

    feats = np.array([contrast_features(s.astype(np.float32), presampled=True) for s in rows["scans"]])
    return {**rows, "features": feats}


SCENARIOS = ("correct, all given", "correct, alone", "wrong flag, alone", "two flags swapped",
             "one wrong flag beside correct ones")


def scenario_runs(feats: np.ndarray, labels: np.ndarray, model) -> list[tuple[str, str, float, float]]:
    """(scenario, what, lowest P(flag) among scans that look like another contrast, lowest P(pair
    right way round)) for every run the scans of one case allow (real scans' features, true labels)."""
    from lckd.inference.contrastcheck import CLASSES

    probs = model.probabilities(feats)

    def run(flags: dict) -> tuple[float, float]:
        a, pp = 1.0, 1.0
        items = list(flags.items())
        for flag, i in items:
            k = CLASSES.index(flag)
            if int(np.argmax(probs[i])) != k:
                a = min(a, float(probs[i, k]))
        for x in range(len(items)):
            for y in range(x + 1, len(items)):
                (fa, ia), (fb, ib) = items[x], items[y]
                pp = min(pp, model.pair_probability(feats[ia], fa, feats[ib], fb))
        return a, pp

    out = []
    truth = {CLASSES[labels[i]]: i for i in range(len(labels))}
    out.append((SCENARIOS[0], "+".join(truth), *run(truth)))
    for c, i in truth.items():
        out.append((SCENARIOS[1], c, *run({c: i})))
        for f in CLASSES:
            if f != c:
                out.append((SCENARIOS[2], f"{c} as {f}", *run({f: i})))
    names = list(truth)
    for x in range(len(names)):
        for y in range(x + 1, len(names)):
            a, b = names[x], names[y]
            flags = dict(truth)
            flags[a], flags[b] = truth[b], truth[a]
            out.append((SCENARIOS[3], f"{a}<->{b}", *run(flags)))
    for c, i in truth.items():
        for f in CLASSES:
            if f != c and f in truth and len(truth) > 2:
                flags = {g: j for g, j in truth.items() if g not in (c, f)}
                flags[f] = i
                out.append((SCENARIOS[4], f"{c} as {f}", *run(flags)))
    return out


def cross_validate(rows: dict, l2: float) -> list[tuple]:
    """Every run of every real case, judged by a check fitted without that case:
    (case, condition, scenario, what, lowest P(flag), lowest pair P)."""
    from lckd.inference.contrastcheck import fit

    results = []
    real = np.array([not g.startswith("PHANTOM-") for g in rows["groups"]])
    for g in np.unique(rows["groups"][real]):
        held = rows["groups"] == g
        model = fit(rows["features"][~held], rows["labels"][~held], rows["groups"][~held], l2=l2)
        for kind in ("1mm", "clinical"):
            sel = held & (rows["kinds"] == kind)
            for r in scenario_runs(rows["features"][sel], rows["labels"][sel], model):
                results.append((g, kind, *r))
    return results


def caught(results: list[tuple], warn: float, pair_warn: float) -> np.ndarray:
    return np.array([(r[4] < warn) or (r[5] < pair_warn) for r in results])


def levels(results: list[tuple], max_false: float = 0.01) -> tuple[float, float]:
    """The most sensitive (warning level, pair level) whose false alarms on correctly flagged runs
    stay at or under `max_false`, chosen on the cross-validated runs."""
    correct = [r for r in results if r[2].startswith("correct")]
    wrong = [r for r in results if not r[2].startswith("correct")]
    best = (0.0, 0.0, -1.0)
    for warn in (1e-4, 1e-3, 3e-3, 0.01, 0.03, 0.05, 0.1, 0.2):
        for pair_warn in (0.05, 0.1, 0.2, 0.3, 0.4, 0.5):
            if caught(correct, warn, pair_warn).mean() <= max_false:
                rate = caught(wrong, warn, pair_warn).mean()
                if rate > best[2]:
                    best = (warn, pair_warn, rate)
    return best[0], best[1]


def table(results: list[tuple], warn: float, pair_warn: float, refuse: float, pair_refuse: float) -> str:
    """Markdown: per scenario and condition, runs reported (warned) and refused."""
    lines = ["| scenario | condition | runs | reported | refused |", "|---|---|---:|---:|---:|"]
    for scenario in SCENARIOS:
        for kind in ("1mm", "clinical"):
            rs = [r for r in results if r[1] == kind and r[2] == scenario]
            if not rs:
                continue
            w, f = caught(rs, warn, pair_warn), caught(rs, refuse, pair_refuse)
            lines.append(f"| {scenario} | {kind} | {len(rs)} | {w.sum()} ({w.mean():.1%}) "
                         f"| {f.sum()} ({f.mean():.1%}) |")
    lines.append("\nWrong flag alone, per true contrast (rows) and flag given (columns), 1 mm / clinical, reported:\n")
    from lckd.inference.contrastcheck import CLASSES
    lines.append("| true \\ given | " + " | ".join(CLASSES) + " |")
    lines.append("|---|" + "---:|" * len(CLASSES))
    for c in CLASSES:
        cells = []
        for f in CLASSES:
            if f == c:
                cells.append("-")
                continue
            parts = []
            for kind in ("1mm", "clinical"):
                rs = [r for r in results if r[1] == kind and r[2] == SCENARIOS[2] and r[3] == f"{c} as {f}"]
                parts.append(f"{caught(rs, warn, pair_warn).sum()}/{len(rs)}")
            cells.append(" / ".join(parts))
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", type=Path)
    p.add_argument("--cache", type=Path, required=True,
                   help="scans file (made once, reused; the features are kept beside it as CACHE.features.npz)")
    p.add_argument("--augment", type=int, default=2, help="augmented copies per training case")
    p.add_argument("--l2", type=float, default=10.0,
                   help="L2 weight (10: the best of 0.1-300 on the cross-validated runs)")
    p.add_argument("--write", action="store_true", help="fit on every row and write lckd/contrastcheck.json")
    args = p.parse_args()
    if args.cache.is_file():
        loaded = np.load(args.cache, allow_pickle=False)
        n = len(loaded["labels"])
        rows = {k: loaded[k] for k in ("labels", "groups", "kinds")}
        rows["scans"] = [loaded[f"scan{i}"] for i in range(n)]
    else:
        rows = scan_rows(args.data, args.augment)
        np.savez(args.cache, labels=rows["labels"], groups=rows["groups"], kinds=rows["kinds"],
                 **{f"scan{i}": s for i, s in enumerate(rows["scans"])})
    features_file = args.cache.with_suffix(".features.npz")
    from lckd.inference.contrastcheck import FEATURES
    saved = np.load(features_file) if features_file.is_file() else None
    if saved is not None and list(saved["names"]) == list(FEATURES) and len(saved["features"]) == len(rows["labels"]):
        rows["features"] = saved["features"]
    else:
        rows = with_features(rows)
        np.savez(features_file, features=rows["features"], names=np.array(FEATURES))
    results = cross_validate(rows, args.l2)
    warn, pair_warn = levels(results)
    correct = [r for r in results if r[2].startswith("correct")]
    # refusal: strong evidence only, a tenth of the lowest value any correctly flagged run reached
    refuse = min([r[4] for r in correct] + [warn]) / 10.0
    pair_refuse = min([r[5] for r in correct] + [pair_warn]) / 10.0
    print(f"levels chosen on {len(correct)} correctly flagged cross-validated runs (false alarms <= 1 %): "
          f"report below P(flag) {warn:g} or P(pair) {pair_warn:g}; refuse below {refuse:.2e} or {pair_refuse:.2e}")
    print(table(results, warn, pair_warn, refuse, pair_refuse))
    if args.write:
        from lckd.inference.contrastcheck import DEFAULT_PATH, fit

        real = np.array([not g.startswith("PHANTOM-") for g in rows["groups"]])
        model = fit(rows["features"], rows["labels"], rows["groups"], l2=args.l2)
        model.warn_below, model.pair_warn_below = warn, pair_warn
        model.refuse_below, model.pair_refuse_below = refuse, pair_refuse
        model.far_above = float(np.ceil(2.0 * np.nanmax(model.distance(rows["features"]))))
        # texture without anatomy: neighbours less alike than half the least alike scan fitted on
        corr = rows["features"][:, FEATURES.index("neighbour_corr")]
        model.min_neighbour_corr = round(0.5 * float(np.nanmin(corr)), 3)
        model.fitted_on = {"cases": int(len(set(rows["groups"][real]))), "scans": int(len(rows["labels"])),
                           "l2": args.l2, "script": "Testing/experiments/contrast_check_cv.py"}
        DEFAULT_PATH.write_text(json.dumps(model.to_dict(), indent=1) + "\n", encoding="utf-8")
        print(f"wrote {DEFAULT_PATH} (far_above {model.far_above})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
