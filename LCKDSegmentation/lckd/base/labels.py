"""BraTS regions (ET, TC, WT) <-> label values, post-processing, and region volumes."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage

# Re-exported: training, evaluation and scripts import REGIONS from here; the label values
# per convention live with the class names (no numpy needed to check a convention's name,
# e.g. in lckd.inference.options inside Slicer's GUI process).
from .segments import CONVENTIONS as CONVENTIONS
from .segments import REGIONS as REGIONS
from .segments import check_convention as check_convention


def labels_to_regions(label: np.ndarray, convention: str = "brats2018") -> np.ndarray:
    """(3, ...) bool array of the nested regions ET, TC = ET + NCR, WT = TC + ED."""
    v = check_convention(convention)
    et = label == v["ET"]
    tc = et | (label == v["NCR"])
    wt = tc | (label == v["ED"])
    return np.stack([et, tc, wt])


def regions_to_labels(probs: np.ndarray, convention: str = "brats2018", threshold: float = 0.5,
                      wt_threshold: float | None = None) -> np.ndarray:
    """Labels from (3, ...) region probabilities, enforcing the nesting ET in TC in WT;
    `wt_threshold` (default `threshold`) is the whole tumour's own."""
    v = check_convention(convention)
    wt = probs[2] > (threshold if wt_threshold is None else wt_threshold)
    tc = wt & (probs[1] > threshold)
    et = tc & (probs[0] > threshold)
    out = np.zeros(probs.shape[1:], dtype=np.uint8)
    out[wt] = v["ED"]
    out[tc] = v["NCR"]
    out[et] = v["ET"]
    return out


def postprocess(label: np.ndarray, convention: str = "brats2018", *, min_component_voxels: int = 50,
                min_et_voxels: int = 500, keep_fraction: float = 0.0) -> np.ndarray:
    """Optional clean-up as BraTS entries do: drop tumour components smaller than
    `min_component_voxels`, and (with `keep_fraction` > 0) those smaller than that fraction
    of the largest one; if fewer than `min_et_voxels` ET voxels remain, call them core
    (small ET predictions are mostly false positives, and an empty ET scores Dice 1 on cases
    without enhancement).

    The fraction rule removes the scattered false positives a network trained on few
    cases leaves far from the tumour (they cost little Dice but dominate HD95), while a
    second lesion of comparable size survives.
    """
    v = check_convention(convention)
    out = label.copy()
    tumour = out > 0
    comps, n = ndimage.label(tumour)
    if n:
        # counted over the tumour voxels only: ndimage.sum_labels over the whole BraTS-size
        # volume took 0.3 s, a sixth of the time outside the network
        inside = comps[tumour]
        sizes = np.bincount(inside, minlength=n + 1)[1:]
        limit = max(float(min_component_voxels), keep_fraction * float(sizes.max()))
        drop = np.zeros(n + 1, dtype=bool)
        drop[1:] = sizes < limit
        out[tumour] = np.where(drop[inside], 0, out[tumour])
    et = out == v["ET"]
    if 0 < int(et.sum()) < min_et_voxels:
        out[et] = v["NCR"]
    return out


#: The clean-up rule's key for the whole-tumour threshold of thick-slice runs (a card's
#: `postprocessing.thick_slices`: {"min_slice_mm", "wt_threshold"}); the other keys are
#: `postprocess`'s arguments.
THICK_SLICES = "thick_slices"


def labels_for_run(probs: np.ndarray, rule: Mapping | None, slice_mm: float,
                   convention: str = "brats2018") -> np.ndarray:
    """The labels of one run as `lckd segment` makes them, from its region probabilities.

    With a clean-up `rule` (a card's `postprocessing`, None for none), a run whose thickest
    scan has slices of `thick_slices.min_slice_mm` or more takes the whole tumour where its
    probability exceeds `thick_slices.wt_threshold` instead of 0.5 (thick slices blur dark CSF
    and bright tissue into what reads as tumour, so such runs over-draw), then `postprocess`.
    """
    if rule is None:
        return regions_to_labels(probs, convention)
    rest = {k: v for k, v in rule.items() if k != THICK_SLICES}
    labels = regions_to_labels(probs, convention, wt_threshold=thick_slice_wt_threshold(rule, slice_mm))
    return postprocess(labels, convention, **rest)


def thick_slice_wt_threshold(rule: Mapping | None, slice_mm: float) -> float | None:
    """The whole-tumour threshold a clean-up `rule` sets for a run whose thickest scan has
    `slice_mm` slices, or None where the usual 0.5 holds."""
    thick = (rule or {}).get(THICK_SLICES)
    if thick is None or slice_mm < float(thick["min_slice_mm"]):
        return None
    return float(thick["wt_threshold"])


def region_volumes_ml(label: np.ndarray, spacing, convention: str = "brats2018") -> dict[str, float]:
    """Volumes in mL of NCR, ED, ET and the nested regions TC and WT."""
    v = check_convention(convention)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts = {k: int((label == val).sum()) for k, val in v.items()}
    out = {k: counts[k] * voxel_ml for k in ("NCR", "ED", "ET")}
    out["TC"] = (counts["NCR"] + counts["ET"]) * voxel_ml
    out["WT"] = (counts["NCR"] + counts["ET"] + counts["ED"]) * voxel_ml
    return out
