"""Texts the module panel shows about the loaded model (no Qt, so they are tested headless).

The worker announces the model card's main fields in its ``ready`` message (see
`lckd.frontends.worker.describe`); these functions turn them into the panel's lines: which model
runs, what it is for and was trained on, and the Dice to expect for the chosen scans.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from lckd.base.modalities import subset_key
from lckd.base.segments import REGIONS


def model_text(model: Mapping) -> str:
    """'Model lckd-lite-phantom 1.1.0: research use, not for clinical use; trained on synthetic phantoms.'"""
    if not model:
        return ""
    name = f"{model.get('name', '?')} {model.get('version', '')}".strip()
    scope = str(model.get("scope") or "").strip().rstrip(".")
    return f"Model {name}" + (f": {scope}." if scope else ".")


def dice_text(row: Mapping | None, modalities: Sequence[str]) -> str:
    """The expected Dice of a subset, e.g. 'ET 0.85 ± 0.04, TC ..., WT ... (5-fold CV)'.

    `row` is the model card's `evaluation.per_subset` entry for the subset: Dice per region,
    and for a cross-validated card also `ET_sd` ... (SD over folds) and `folds`.
    """
    subset = subset_key(modalities)
    values = {r: row.get(r) for r in REGIONS} if row else {}
    if not any(isinstance(v, (int, float)) for v in values.values()):
        return f"Expected Dice for {subset}: not in the model card."
    parts, with_sd = [], False
    for r in REGIONS:
        value = values.get(r)
        if not isinstance(value, (int, float)):
            continue
        sd = row.get(f"{r}_sd")
        if isinstance(sd, (int, float)):
            with_sd = True
            parts.append(f"{r} {value:.2f} ± {sd:.2f}")
        else:
            parts.append(f"{r} {value:.2f}")
    folds = row.get("folds")
    if with_sd and isinstance(folds, int) and folds > 1:
        source = f"{folds}-fold CV"
    elif with_sd:
        source = "cross-validation"
    else:
        cases = row.get("cases")
        source = "validation" + (f", {cases} cases" if isinstance(cases, int) else "")
    return f"Expected Dice for {subset}: " + ", ".join(parts) + f" ({source})"


def quality_text(record: Mapping | None) -> str:
    """The result's quality line (`lckd.inference.quality`), e.g. 'Quality estimate: expected whole-tumour Dice
    0.78 (0.64-0.90); an estimate, not a measurement.' or 'LOW CONFIDENCE: ... tumour drawn in both
    hemispheres.' Empty when the worker sent none (an older worker)."""
    if not record:
        return ""
    reasons = list(record.get("reasons") or [])
    dice = record.get("expected_wt_dice")
    if dice is None:
        head = "Quality estimate: not calibrated for this model"
    else:
        lo, hi = record.get("interval") or (dice, dice)
        head = (("LOW CONFIDENCE: check this result. " if record.get("low_confidence") else "Quality estimate: ")
                + f"expected whole-tumour Dice {dice:.2f} ({lo:.2f}-{hi:.2f}); an estimate, not a measurement")
    return head + (f". Reasons: {', '.join(reasons)}." if reasons else ".")


def quality_cell(record: Mapping | None) -> str:
    """The quality estimate in the volumes table's whole-tumour row, e.g. 'expected Dice 0.60
    (0.45-0.70), LOW CONFIDENCE: one scan only'; empty without a record."""
    if not record:
        return ""
    reasons = ", ".join(record.get("reasons") or [])
    dice = record.get("expected_wt_dice")
    if dice is None:
        text = "not calibrated for this model"
    else:
        lo, hi = record.get("interval") or (dice, dice)
        text = f"expected Dice {dice:.2f} ({lo:.2f}-{hi:.2f})" + (", LOW CONFIDENCE" if record.get("low_confidence")
                                                                   else "")
    return text + (f": {reasons}" if reasons else "")


def selection_key(volumes: Mapping) -> tuple:
    """The selected scans as ((modality, node ID), ...): what the trust-flags box vouches for."""
    return tuple((m, n.GetID()) for m, n in volumes.items())


class TrustedFlags:
    """Remembers which selection of scans the panel's "I have checked which scan is which" box
    was seen with, so that a tick never carries over to other scans (another case)."""

    def __init__(self) -> None:
        self.selection: tuple | None = None   # None: no selection seen yet (a reopened scene keeps its tick)

    def still_trusted(self, selection: tuple) -> bool:
        """Note `selection`; False when it differs from the one seen before (clear the box)."""
        same = self.selection is None or selection == self.selection
        self.selection = selection
        return same


def apply_enabled(selected: bool, running: bool, installing: bool, problem: str | None) -> bool:
    """Whether Apply can be pressed: scans selected, no job running, no install under way (Slicer
    5.6-5.10's pip_install runs the event loop, so a second click would start a second install),
    and no known device problem."""
    return selected and not running and not installing and not problem
