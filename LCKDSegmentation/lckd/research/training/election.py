"""Teacher election: score each modality alone on validation cases, elect the best per region.

Each single modality is run through `Segmenter.predict` (the inference sliding window) with
a one-hot presence mask; Dice per region is averaged over the cases; for each region the
best modality is elected (ties go to the earlier modality in the model's order) and the
teacher set is the union (1 to 3 modalities).

Each region is scored on its own sigmoid output (thresholded at 0.5), as the authors'
election does, not through the nested labels of inference: the question is which scan
shows a region best, and nesting would let a modality's weak whole-tumour output (T1ce's,
early in training) veto the enhancing tumour it sees well.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...base.labels import REGIONS
from ...base.metrics import region_metrics
from .data import LoadedCase


def tumour_box(case: LoadedCase, size: int) -> LoadedCase:
    """The case cut to a cube of `size` voxels centred on its whole tumour (cheaper elections).

    Every modality is scored on the same box, so the comparison stays fair; false positives
    far from the tumour are not counted, which the election (a ranking) tolerates.
    """
    shape = np.asarray(case.x.shape[1:])
    pts = np.argwhere(case.regions[2])
    centre = ((pts.min(0) + pts.max(0)) // 2) if len(pts) else shape // 2
    n = np.minimum(size, shape)
    lo = np.clip(centre - n // 2, 0, shape - n)
    box = tuple(slice(int(a), int(a + b)) for a, b in zip(lo, n))
    return LoadedCase(case.case_id, case.x[(slice(None),) + box], case.present,
                      case.regions[(slice(None),) + box], case.spacing)


def single_modality_table(segmenter, cases: Sequence[LoadedCase]) -> dict[str, dict[str, float]]:
    """{modality: {ET, TC, WT}}: mean Dice over `cases` of each modality used alone."""
    order = list(segmenter.net.modalities)
    table = {}
    for i, mod in enumerate(order):
        scores = []
        for case in cases:
            if not case.present[i]:
                continue
            present = np.zeros(len(order), dtype=bool)
            present[i] = True
            probs = segmenter.predict(case.x.astype(np.float32, copy=False), present)
            scores.append(region_metrics(probs > 0.5, case.regions, hd95=False))
        table[mod] = {r: float(np.mean([s[r] for s in scores])) if scores else 0.0 for r in REGIONS}
    return table


def elect(table: dict[str, dict[str, float]], order: Sequence[str]) -> list[str]:
    """Best modality per region (ties: earliest in `order`); the union, in `order`."""
    winners = set()
    for r in REGIONS:
        best = max(order, key=lambda m: (table.get(m, {}).get(r, -1.0), -list(order).index(m)))
        winners.add(best)
    return [m for m in order if m in winners]


def format_table(table: dict[str, dict[str, float]], elected: Sequence[str]) -> str:
    """One line per modality, elected ones starred (for the training log)."""
    lines = ["modality   Dice ET  Dice TC  Dice WT"]
    for m, row in table.items():
        star = "*" if m in elected else " "
        lines.append(f"{m:<8}{star}  " + "  ".join(f"{row[r]:7.3f}" for r in REGIONS))
    return "\n".join(lines)
