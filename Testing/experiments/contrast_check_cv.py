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


def cross_validate(rows: dict, l2: float) -> np.ndarray:
    """(N, K) probabilities of every non-augmented row from a check fitted without its case."""
    from lckd.inference.contrastcheck import fit

    probs = np.full((len(rows["labels"]), 4), np.nan)
    for g in np.unique(rows["groups"]):
        held = rows["groups"] == g
        model = fit(rows["features"][~held], rows["labels"][~held], l2=l2)
        judged = held & (rows["kinds"] != "aug")
        probs[judged] = model.probabilities(rows["features"][judged])
    return probs


def levels(probs: np.ndarray, labels: np.ndarray, ok: np.ndarray, max_false: float = 0.01) -> tuple[float, float]:
    """(warning level, refusal level) from cross-validated probabilities of correctly flagged scans."""
    own = probs[ok, labels[ok]]
    own = np.sort(own)
    allowed = int(np.floor(max_false * len(own)))      # correctly flagged scans that may fall under
    warn = float(own[allowed]) if allowed < len(own) else 0.5
    warn = min(warn, 0.5)
    return warn, float(own[0]) / 10.0


def table(probs: np.ndarray, rows: dict, warn: float) -> str:
    """Markdown: catches per true contrast x wrong flag, per condition; false alarms."""
    from lckd.inference.contrastcheck import CLASSES

    lines = []
    for kind in ("1mm", "clinical"):
        sel = rows["kinds"] == kind
        lab = rows["labels"][sel]
        p = probs[sel]
        lines.append(f"\n{kind}: caught / wrong-flag runs (true contrast in rows, flag given in columns)\n")
        lines.append("| true \\ flag | " + " | ".join(CLASSES) + " | all wrong flags | false alarms |")
        lines.append("|---|" + "---:|" * (len(CLASSES) + 2))
        for k, name in enumerate(CLASSES):
            pk = p[lab == k]
            cells, caught, total = [], 0, 0
            for f in range(len(CLASSES)):
                if f == k:
                    cells.append("-")
                    continue
                c = int(np.sum((pk[:, f] < warn) & (np.argmax(pk, 1) != f)))
                cells.append(f"{c}/{len(pk)}")
                caught += c
                total += len(pk)
            fa = int(np.sum((pk[:, k] < warn) & (np.argmax(pk, 1) != k)))
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {caught}/{total} ({caught / max(total, 1):.1%}) "
                         f"| {fa}/{len(pk)} |")
        wrong = [(p[i, f] < warn) and (np.argmax(p[i]) != f) for i in range(len(lab)) for f in range(4) if f != lab[i]]
        false = [(p[i, lab[i]] < warn) and (np.argmax(p[i]) != lab[i]) for i in range(len(lab))]
        lines.append(f"\n{kind}: {np.mean(wrong):.1%} of {len(wrong)} wrong flags caught, "
                     f"{np.mean(false):.1%} of {len(false)} correct flags falsely reported; "
                     f"top-1 accuracy {np.mean(np.argmax(p, 1) == lab):.1%}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", type=Path)
    p.add_argument("--cache", type=Path, required=True, help="features file (made once, reused)")
    p.add_argument("--augment", type=int, default=2, help="augmented copies per training case")
    p.add_argument("--l2", type=float, default=1.0)
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
    rows = with_features(rows)
    real = np.array([not g.startswith("PHANTOM-") for g in rows["groups"]])
    probs = cross_validate(rows, args.l2)
    ok = real & (rows["kinds"] != "aug")
    warn, refuse = levels(probs, rows["labels"], ok)
    print(f"levels from {int(ok.sum())} correctly flagged real scans (cross-validated): warn below {warn:.4f}, "
          f"refuse below {refuse:.2e}")
    sub = {k: v[real] for k, v in rows.items() if k != "scans"}
    print(table(probs[real], sub, warn))
    ph = rows["kinds"] == "phantom"
    lab = rows["labels"][ph]
    print(f"\nphantoms: {int(np.sum(probs[ph][np.arange(ph.sum()), lab] < warn))} of {int(ph.sum())} "
          f"correctly flagged phantom scans would be reported")
    if args.write:
        from lckd.inference.contrastcheck import DEFAULT_PATH, fit

        model = fit(rows["features"], rows["labels"], l2=args.l2)
        dist = model.distance(rows["features"])
        model.warn_below, model.refuse_below = warn, refuse
        model.far_above = float(np.ceil(2.0 * np.nanmax(dist)))
        model.fitted_on = {"cases": int(len(set(rows["groups"][real]))), "rows": int(len(rows["labels"])),
                           "l2": args.l2, "script": "Testing/experiments/contrast_check_cv.py"}
        DEFAULT_PATH.write_text(json.dumps(model.to_dict(), indent=1) + "\n", encoding="utf-8")
        print(f"wrote {DEFAULT_PATH} (far_above {model.far_above})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
