"""Share of missing-modality training samples per subset: case first, subset first, single scan first.

    python Testing/experiments/subset_sampling_shares.py ../shared/data/brats-labelled [--split SPLIT_CSV]

Exact probabilities (no sampling) from the training cases' scans, as `PatchSampler` draws them
after the warm-up: case first (a case uniformly, then a subset of its own scans) or subset
first (`balanced_subsets`: a subset, then a case that has its scans) or single scan first
(`single_first`: a third of the samples a single scan drawn first, then a case that has it; the
rest 2-3 of a case's scans, a partial case's full set). Also prints how much of
each subset's share comes from the partial cases (those without all four scans).
"""
from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from lckd.base.modalities import MODALITIES
from lckd.prep.modelgrid import select_cases
from lckd.research.training.data import subset_choices


def _name(mask: np.ndarray) -> str:
    return "+".join(m for m, b in zip(MODALITIES, mask) if b)


def _per_size(choices: list[np.ndarray], mask: np.ndarray) -> float:
    """P(mask | its size) x P(size) under draw_subset: sizes uniform, then subsets uniform."""
    sizes = {int(c.sum()) for c in choices}
    same = sum(int(c.sum()) == int(mask.sum()) for c in choices)
    return 1.0 / len(sizes) / same


def shares(present: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """({subset: (share, share from partial cases)} case first, the same subset first)."""
    case_first: dict = defaultdict(lambda: [0.0, 0.0])
    for p in present.values():
        choices = subset_choices(p, full=False)
        for c in choices:
            w = _per_size(choices, c) / len(present)
            case_first[_name(c)][0] += w
            case_first[_name(c)][1] += w * (p.sum() < len(p))
    union = np.any(list(present.values()), axis=0)
    servable = [c for c in subset_choices(union, full=False) if any(np.all(p[c]) for p in present.values())]
    subset_first: dict = defaultdict(lambda: [0.0, 0.0])
    for c in servable:
        w = _per_size(servable, c)
        who = [p for p in present.values() if np.all(p[c])]
        subset_first[_name(c)][0] += w
        subset_first[_name(c)][1] += w * sum(p.sum() < len(p) for p in who) / len(who)
    return dict(case_first), dict(subset_first)


def single_first_shares(present: dict[str, np.ndarray]) -> dict:
    """{subset: [share, share from partial cases]} under `single_first` (data.SINGLE_SHARE)."""
    from lckd.research.training.data import SINGLE_SHARE

    out: dict = defaultdict(lambda: [0.0, 0.0])
    union = np.any(list(present.values()), axis=0)
    singles = [c for c in subset_choices(union, full=False) if c.sum() == 1
               and any(np.all(p[c]) for p in present.values())]
    for c in singles:
        who = [p for p in present.values() if np.all(p[c])]
        w = SINGLE_SHARE / len(singles)
        out[_name(c)][0] += w
        out[_name(c)][1] += w * sum(p.sum() < len(p) for p in who) / len(who)
    for p in present.values():
        several = [c for c in subset_choices(p, full=False) if c.sum() >= 2] or [p]
        for c in several:
            w = (1 - SINGLE_SHARE) / len(present) * _per_size(several, c)
            out[_name(c)][0] += w
            out[_name(c)][1] += w * (p.sum() < len(p))
    return dict(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--split", default=None, help="split CSV: use its training cases (default: all cases)")
    args = ap.parse_args(argv)
    cases = select_cases(args.data, args.split, "train")
    present = {c.case_id: np.array([m in c.images for m in MODALITIES]) for c in cases}
    old, new = shares(present)
    single = single_first_shares(present)
    print(f"{len(present)} training cases; share of missing-modality samples (from partial cases)")
    print(f"{'subset':18s} {'case first':>18s} {'subset first':>18s} {'single first':>18s}")
    for key in sorted(set(old) | set(new), key=lambda k: (k.count("+"), MODALITIES.index(k.split("+")[0]), k)):
        cells = [d.get(key, [0.0, 0.0]) for d in (old, new, single)]
        print(f"{key:18s} " + "    ".join(f"{v[0]:7.3f} ({v[1] / max(v[0], 1e-12):4.0%})" for v in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
