"""`--register` cannot hide a mixed-patient study (issue 31): after co-registration each scan's fit is
judged (`lckd.prep.samehead`); scans of another head are reported by name, the quality estimate
says so and sets the low-confidence flag, and so does the batch summary.

The real-data test runs one batch of two BraTS-size cases (about 20 s each on a CPU core): a
study mixing two shared cases (T1ce of one patient, FLAIR of another) and one patient's T1ce and
FLAIR, the FLAIR moved by a known rigid motion.
"""
from __future__ import annotations

import csv
import math
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import needs_shared_data, shared_data
from lckd.inference.quality import FEATURES, estimate, summary_line

DATA = shared_data("brats-labelled")
#: Two patients of the shared data: one's T1ce and the other's FLAIR make the mixed study.
PATIENT, OTHER = "BraTS2021_00000", "Brats18_2013_2_1"


def _features() -> dict:
    return {f: 0.5 for f in FEATURES} | {"log_wt_ml": 3.0, "symmetry": 0.0, "largest_fraction": 1.0,
                                         "uncertain_ratio": 0.1, "wt_brain_fraction": 0.05, "slice_mm": 1.0}


def test_a_doubt_is_a_reason_and_sets_the_flag_with_or_without_a_calibration():
    doubt = "FLAIR and T1ce may be from different patients"
    cal = {"features": list(FEATURES), "mean": [0.0] * len(FEATURES), "scale": [1.0] * len(FEATURES),
           "coef": [0.0] * len(FEATURES), "intercept": 0.9, "interval": [-0.1, 0.05], "flag_below": 0.7}
    assert estimate(_features(), cal)["low_confidence"] is False
    flagged = estimate(_features(), cal, [doubt])
    assert flagged["low_confidence"] is True and doubt in flagged["reasons"]
    assert flagged["expected_wt_dice"] == pytest.approx(0.9)          # the estimate itself is unchanged
    bare = estimate(_features(), None, [doubt])
    assert bare["low_confidence"] is True and doubt in bare["reasons"]
    assert summary_line(bare).startswith("LOW CONFIDENCE: not calibrated") and doubt in summary_line(bare)
    assert estimate(_features(), None)["low_confidence"] is None


def _scan(case: str, suffix: str):
    return next((DATA / case).glob(f"{case}_{suffix}.nii*"))


@needs_shared_data("brats-labelled")
def test_register_reports_scans_of_two_patients_and_not_one_patients_moved_scan(tmp_path, capsys):
    from lckd.frontends.cli import main
    from lckd.prep.geometry import resample_onto

    root = tmp_path / "in"
    for cid in ("MIXED", "ONE"):
        (root / cid).mkdir(parents=True)
        shutil.copy(_scan(PATIENT, "t1ce"), root / cid / f"{cid}-t1c.nii.gz")
    shutil.copy(_scan(OTHER, "flair"), root / "MIXED" / "MIXED-t2f.nii.gz")
    flair = sitk.ReadImage(str(_scan(PATIENT, "flair")))
    centre = flair.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in flair.GetSize()])
    motion = sitk.Euler3DTransform(centre, math.radians(2), math.radians(-1.5), math.radians(3), (4.0, -3.0, 2.0))
    sitk.WriteImage(resample_onto(flair, flair, motion), str(root / "ONE" / "ONE-t2f.nii.gz"))

    code = main(["batch", str(root), str(tmp_path / "out"), "--register", "-q", "--threads", "1"])
    assert code == 0, capsys.readouterr().err[-800:]
    with open(tmp_path / "out" / "summary.csv", newline="") as f:
        rows = {r["case"]: r for r in csv.DictReader(f)}
    mixed, one = rows["MIXED"], rows["ONE"]
    assert "FLAIR and T1ce: these scans may be from different patients" in mixed["message"], mixed
    assert mixed["low_confidence"] == "yes", mixed
    assert "FLAIR and T1ce may be from different patients" in mixed["quality_reasons"], mixed
    assert one["status"] == "ok" and "different patients" not in one["message"] + one["quality_reasons"], one
    # the co-registration still moved the FLAIR back (its note is information, not a warning)
    assert "looks misaligned" not in one["message"]


@needs_shared_data("brats-labelled")
def test_the_judgement_itself_on_real_scans():
    """The numbers behind the rule (Testing/experiments/samehead_measure.py measures 14 pairs)."""
    from lckd.prep.registration import register_rigid
    from lckd.prep.samehead import MIN_SHARPNESS, compare_heads

    def read(case, suffix):
        return sitk.Cast(sitk.ReadImage(str(_scan(case, suffix))), sitk.sitkFloat32)

    ref = read(PATIENT, "t1ce")
    for moving, same in ((read(PATIENT, "t2"), True), (read(OTHER, "t2"), False)):
        c = compare_heads(ref, moving, register_rigid(ref, moving))
        assert c.judged and c.same_head is same, c
        assert (c.sharpness > 2 * MIN_SHARPNESS) if same else (c.sharpness < MIN_SHARPNESS / 2), c
    assert np.isfinite(c.outline_dice)
