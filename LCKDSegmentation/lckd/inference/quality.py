"""Per-run quality estimate: how far to trust one segmentation, from what the run already has.

A model card's cross-validated Dice is an average over cases; this module says something
about the case at hand. `run_features` measures a run from its own outputs on the model
grid (no extra network pass): which scans were given, how much tumour was drawn and where,
how sure the network was, how thick the scan slices are. `estimate` maps those features to
an expected whole-tumour Dice with an interval and a low-confidence flag, using the
calibration stored in the model card (fitted on the model's cross-validation runs by
`lckd.research.calibration`). `reasons` names, in words a user understands, what looks wrong.

It is an estimate, not a measurement: it predicts the Dice the model reached on similar
cross-validation runs, and can be wrong on inputs unlike anything it was calibrated on.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from ..base.labels import labels_for_run, labels_to_regions
from ..base.modalities import MODALITIES

#: Feature names, in the order the calibration's coefficients use.
FEATURES = tuple(f"has_{m}" for m in MODALITIES) + (
    "log_wt_ml",          # log(1 + whole-tumour volume in mL)
    "wt_brain_fraction",  # share of the brain drawn as tumour
    "mean_prob",          # mean WT probability over the voxels drawn as WT (0 when none)
    "uncertain_ratio",    # voxels with WT probability in (0.2, 0.8) per voxel drawn as WT
    "symmetry",           # share of the WT that its left-right mirror image overlaps
    "largest_fraction",   # share of the WT in its largest connected component
    "slice_mm",           # thickest voxel edge of any input scan, in mm
)

# Thresholds of the plain-language reasons (not calibrated: they describe, the estimate judges).
SYMMETRY_REASON = 0.25       # real gliomas are one-sided; bilateral drawings are false positives
BRAIN_FRACTION_REASON = 0.15  # a glioma rarely reaches 15 % of the brain (WT of 200 mL in 1.3 L)
THICK_REASON_MM = 2.5
UNCERTAIN_REASON = 1.0
SCATTER_REASON = 0.7


def case_features(probs: np.ndarray, x: np.ndarray, present: np.ndarray, spacing: Sequence[float],
                  modalities: Sequence[str], slice_mm: float,
                  cleanup: Mapping | None = None) -> tuple[dict[str, float], np.ndarray]:
    """The quality features of one run on the model grid, and the labels they were measured on.

    The one place the features are built from a run: `Segmenter.segment` (what users run) and
    evaluation (`lckd.research.evaluate.evaluate_cases`, the cross-validation runs the
    calibration is fitted on) both call it, so the calibration describes the runs users make.

    Args:
        probs: (3, d, h, w) region probabilities ET, TC, WT on the model grid.
        x: (M, d, h, w) the normalised scans on that grid (0 outside the brain).
        present: (M,) bool, the channels of `x` given to the network.
        spacing: (x, y, z) voxel size of the grid in mm.
        modalities: the canonical names of the scans given.
        slice_mm: the largest voxel edge of the scans before resampling.
        cleanup: the card's clean-up rule (`lckd.base.labels.labels_for_run`), or None for none.
    Returns:
        (features, (d, h, w) uint8 labels in the BraTS 2018 convention after the clean-up).
    """
    label = labels_for_run(probs, cleanup, slice_mm)
    wt = labels_to_regions(label)[2]
    brain = np.any(x[np.asarray(present, dtype=bool)] != 0, axis=0)
    return run_features(probs, wt, brain, spacing, modalities, slice_mm), label


def run_features(probs: np.ndarray, wt: np.ndarray, brain: np.ndarray, spacing: Sequence[float],
                 modalities: Sequence[str], slice_mm: float) -> dict[str, float]:
    """Quality features of one run.

    Args:
        probs: (3, d, h, w) region probabilities ET, TC, WT on the model grid (LPS: the last
            axis runs right to left, so mirroring it mirrors the hemispheres).
        wt: (d, h, w) bool, the whole tumour as labelled (after any clean-up).
        brain: (d, h, w) bool brain mask on the same grid.
        spacing: (x, y, z) voxel size in mm of that grid.
        modalities: the canonical names of the scans given.
        slice_mm: the largest voxel edge of the input scans before resampling (thick slices).
    """
    wt = np.asarray(wt, dtype=bool)
    brain = np.asarray(brain, dtype=bool)
    n_wt = int(wt.sum())
    voxel_ml = float(np.prod(spacing)) / 1000.0
    feats: dict[str, float] = {f"has_{m}": float(m in modalities) for m in MODALITIES}
    feats["log_wt_ml"] = float(np.log1p(n_wt * voxel_ml))
    feats["wt_brain_fraction"] = n_wt / max(int(brain.sum()), 1)
    p_wt = probs[2]
    feats["mean_prob"] = float(p_wt[wt].mean()) if n_wt else 0.0
    uncertain = int(((p_wt > 0.2) & (p_wt < 0.8) & brain).sum())
    feats["uncertain_ratio"] = float(min(uncertain / max(n_wt, 1), 10.0))
    feats["symmetry"] = _symmetry(wt, brain)
    feats["largest_fraction"] = _largest_fraction(wt)
    feats["slice_mm"] = float(slice_mm)
    return feats


def _symmetry(wt: np.ndarray, brain: np.ndarray) -> float:
    """Share of the WT voxels whose mirror image across the brain's mid-plane is WT too."""
    n = int(wt.sum())
    if n == 0 or not brain.any():
        return 0.0
    xs = np.flatnonzero(brain.any(axis=(0, 1)))
    # mid-plane halfway between the brain's extreme columns: robust to a tumour's mass effect
    mirror_of = np.rint(xs[0] + xs[-1] - np.arange(wt.shape[-1])).astype(int)
    valid = (mirror_of >= 0) & (mirror_of < wt.shape[-1])
    mirrored = np.zeros_like(wt)
    mirrored[..., valid] = wt[..., mirror_of[valid]]
    return float((wt & mirrored).sum() / n)


def _largest_fraction(wt: np.ndarray) -> float:
    """Share of the WT voxels in the largest 26-connected component (1 when there is none)."""
    if not wt.any():
        return 1.0
    comps, n = ndimage.label(wt, structure=np.ones((3, 3, 3), dtype=bool))
    if n <= 1:
        return 1.0
    sizes = np.bincount(comps[comps > 0])
    return float(sizes.max() / sizes.sum())


def reasons(features: Mapping[str, float]) -> list[str]:
    """Short plain-language reasons to doubt a run (empty when nothing stands out)."""
    out = []
    if features["log_wt_ml"] == 0.0:
        out.append("no tumour drawn")
    if features["symmetry"] >= SYMMETRY_REASON:
        out.append("tumour drawn in both hemispheres")
    if features["wt_brain_fraction"] >= BRAIN_FRACTION_REASON:
        out.append(f"tumour drawn over {100 * features['wt_brain_fraction']:.0f} % of the brain")
    if features["slice_mm"] >= THICK_REASON_MM:
        out.append(f"scan slices {features['slice_mm']:.1f} mm thick")
    if features["log_wt_ml"] > 0 and features["uncertain_ratio"] >= UNCERTAIN_REASON:
        out.append("the network is unsure at the tumour's edges")
    if features["log_wt_ml"] > 0 and features["largest_fraction"] < SCATTER_REASON:
        out.append("tumour drawn in scattered pieces")
    if sum(features[f"has_{m}"] for m in MODALITIES) == 1:
        out.append("one scan only")
    return out


def predict_dice(features: Mapping[str, float], calibration: Mapping) -> float:
    """Expected WT Dice from a calibration's linear model (standardised features), clipped to [0, 1]."""
    names = calibration["features"]
    x = np.array([features[n] for n in names], dtype=float)
    z = (x - np.asarray(calibration["mean"], dtype=float)) / np.asarray(calibration["scale"], dtype=float)
    return float(np.clip(calibration["intercept"] + z @ np.asarray(calibration["coef"], dtype=float), 0.0, 1.0))


def estimate(features: Mapping[str, float], calibration: Mapping | None, doubts: Sequence[str] = ()) -> dict:
    """The quality record of a run: features, reasons and (with a calibration) the expected
    WT Dice, its interval and the low-confidence flag.

    `doubts` are reasons found outside the features, which the calibration never saw (e.g.
    "FLAIR and T1ce may be from different patients"): each is listed first among the reasons
    and sets the low-confidence flag, whatever the expected Dice, with or without a calibration.
    Without a calibration (a model card that has none) the record still carries the
    features and reasons, and says that no expected Dice can be given. `doubts` are findings
    about the inputs the calibration never saw (a scan that does not look like its flag): each
    becomes a reason and any of them sets the low-confidence flag.
    """
    doubts = [str(d) for d in doubts]
    record: dict = {"kind": "estimate, not a measurement", "reasons": doubts + reasons(features),
                    "features": {k: round(float(v), 4) for k, v in features.items()}}
    if not calibration:
        record.update(expected_wt_dice=None, interval=None, low_confidence=True if doubts else None,
                      note="this model's card has no quality calibration")
        return record
    dice = predict_dice(features, calibration)
    lo, hi = calibration["interval"]
    record.update(expected_wt_dice=round(dice, 3),
                  interval=[round(float(np.clip(dice + lo, 0, 1)), 3), round(float(np.clip(dice + hi, 0, 1)), 3)],
                  low_confidence=bool(doubts) or bool(dice < calibration["flag_below"]))
    return record


def short_line(record: Mapping) -> str:
    """The estimate in at most 64 characters (a DICOM SEG's content description)."""
    if record.get("expected_wt_dice") is None:
        return "quality: not calibrated for this model"
    lo, hi = record["interval"]
    return (("LOW CONFIDENCE: " if record["low_confidence"] else "quality: ")
            + f"expected WT Dice {record['expected_wt_dice']:.2f} ({lo:.2f}-{hi:.2f}), estimate")[:64]


def summary_line(record: Mapping) -> str:
    """One line for a terminal, a log or a caption."""
    if record.get("expected_wt_dice") is None:
        text = ("LOW CONFIDENCE: " if record.get("low_confidence") else "quality: ") + "not calibrated for this model"
    else:
        lo, hi = record["interval"]
        text = (("LOW CONFIDENCE: " if record["low_confidence"] else "quality: ")
                + f"expected whole-tumour Dice {record['expected_wt_dice']:.2f} ({lo:.2f}-{hi:.2f}; an estimate, "
                  f"not a measurement)")
    if record.get("reasons"):
        text += "; " + ", ".join(record["reasons"])
    return text
