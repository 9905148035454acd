"""Region metrics (Dice, HD95) of ET / TC / WT with the BraTS rule for empty regions.

One module for what evaluation (`lckd.research.evaluate`), cross-validation and the teacher
election during training (`lckd.research.training.election`) score with, so training never has to
import the evaluation command and the evaluation never the training package.

Empty regions (BraTS rule): reference and prediction both empty -> Dice 1, HD95 0; exactly
one empty -> Dice 0, HD95 = `HD95_PENALTY` (373.13 mm, the diagonal of the BraTS volume).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from .segments import REGIONS

HD95_PENALTY = 373.13
EMPTY_RULE = ("both empty: Dice 1, HD95 0; one empty: Dice 0, HD95 "
              f"{HD95_PENALTY} mm (BraTS convention)")
#: Keys of one row of metrics: Dice per region, then HD95 per region.
METRIC_KEYS = list(REGIONS) + [f"HD95_{r}" for r in REGIONS]


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two masks (non-zero = inside); 1.0 when both are empty. No torch needed."""
    a, b = np.asarray(a) != 0, np.asarray(b) != 0
    denom = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if denom == 0 else 2.0 * int(np.count_nonzero(a & b)) / denom


def region_metrics(pred: np.ndarray, true: np.ndarray, spacing_zyx: Sequence[float] | None = None,
                   hd95: bool = True) -> dict[str, float]:
    """Dice (and HD95 in mm when `hd95`) per region for boolean (3, z, y, x) arrays.

    Args:
        pred, true: region masks ET, TC, WT of the same shape.
        spacing_zyx: voxel size in mm (array axis order); 1 mm if None.
        hd95: also compute the 95th-percentile Hausdorff distance (slower).
    """
    import torch  # imported here: reading this module stays light
    from monai.metrics import compute_dice, compute_hausdorff_distance

    p = torch.from_numpy(np.ascontiguousarray(pred, dtype=np.float32))[None]
    t = torch.from_numpy(np.ascontiguousarray(true, dtype=np.float32))[None]
    dice = compute_dice(p, t, include_background=True, ignore_empty=False)[0]
    out = {r: float(dice[i]) for i, r in enumerate(REGIONS)}
    if hd95:
        for i, r in enumerate(REGIONS):
            pe, te = not pred[i].any(), not true[i].any()
            if pe and te:
                out[f"HD95_{r}"] = 0.0
            elif pe or te:
                out[f"HD95_{r}"] = HD95_PENALTY
            else:
                with warnings.catch_warnings():   # MONAI 1.5+ warns about its own internal argument
                    warnings.simplefilter("ignore", FutureWarning)
                    hd = compute_hausdorff_distance(p[:, i:i + 1], t[:, i:i + 1], include_background=True,
                                                    percentile=95, spacing=list(spacing_zyx or (1, 1, 1)))
                out[f"HD95_{r}"] = float(hd.flatten()[0])
    return out
