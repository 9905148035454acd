"""Filling the four selectors from volume names, as the module does when volumes are loaded."""
from __future__ import annotations

from pathlib import Path

import pytest

from lckd.base.modalities import guess_modality
from LCKDSegmentationLib.selection import assign_modalities

pytestmark = pytest.mark.slicer_pythons   # also run under Slicer's Python 3.9 and 3.12 (.ci/other-pythons)

SERIES = {
    # scanner series descriptions
    "AX T1 POST GD": "T1ce", "Ax T1 FS Post Gad": "T1ce", "COR T1 +C": "T1ce", "T1 BRAVO +C": "T1ce",
    "AX T1 W/ CONTRAST": "T1ce", "3D_T1_MPRAGE_Gd": "T1ce", "T1_MPRAGE_POST": "T1ce", "t1_km": "T1ce",
    "T1 MPRAGE pre": "T1", "AX T1 PRE": "T1", "t1_mprage_sag_p2_iso": "T1", "T1W_3D_TFE": "T1",
    "T1 without contrast": "T1", "Sag T1 FLAIR": "T1",  # T1-weighted FLAIR is a T1 scan
    "t2_tse_tra": "T2", "AX T2 FRFSE": "T2", "T2W_TSE": "T2", "t2_blade_tra": "T2",
    "Sag 3D FLAIR": "FLAIR", "Ax T2 FLAIR": "FLAIR", "T2-SPACE-FLAIR": "FLAIR", "AX T2 FLAIR POST": "FLAIR",
    # dataset file names (node names are file names without extension)
    "BraTS-GLI-00000-000-t1n": "T1", "BraTS-GLI-00000-000-t1c": "T1ce",
    "BraTS-GLI-00000-000-t2w": "T2", "BraTS-GLI-00000-000-t2f": "FLAIR",
    "Brats18_x_t1": "T1", "Brats18_x_t1ce": "T1ce", "Brats18_x_t2": "T2", "Brats18_x_flair": "FLAIR",
    "BraTS20_Training_001_t1ce": "T1ce", "sub-01_ce-gadolinium_T1w": "T1ce", "sub-01_T1w": "T1",
    "sub-01_T2w": "T2", "sub-01_FLAIR": "FLAIR",
    # not one of the four
    "AX DWI": None, "ADC": None, "SWI": None, "AX T2*": None, "T2_star": None, "MRHead": None, "MR Brain": None,
}


@pytest.mark.parametrize("name,expected", SERIES.items(), ids=list(SERIES))
def test_guess_from_series_name(name, expected):
    assert guess_modality(name) == expected


def test_assign_a_typical_study():
    study = ["3-plane localizer", "AX DWI", "ADC", "Sag 3D FLAIR", "t2_tse_tra", "T1 MPRAGE pre",
             "AX T1 POST GD", "COR T1 +C"]
    picks = assign_modalities((i, n) for i, n in enumerate(study))
    assert {m: study[i] for m, i in picks.items()} == {
        "T1": "T1 MPRAGE pre", "T1ce": "AX T1 POST GD", "T2": "t2_tse_tra", "FLAIR": "Sag 3D FLAIR"}
    assert list(picks) == ["T1", "T1ce", "T2", "FLAIR"]  # canonical order


def test_assign_leaves_unknown_and_missing_modalities_empty():
    picks = assign_modalities([("a", "BraTS-GLI-00000-000-t2f"), ("b", "ADC"), ("c", "Brats18_x_t1ce")])
    assert picks == {"T1ce": "c", "FLAIR": "a"}
    assert assign_modalities([]) == {}


def test_the_bundled_sample_case_fills_all_four_selectors():
    from LCKDSegmentationLib import sampledata

    cases = sampledata.sample_cases()
    if not cases:
        pytest.skip("no bundled sample case")
    for case in cases:
        names = {m: sampledata.node_name(Path(p)) for m, p in case.images.items()}
        picks = assign_modalities((m, n) for m, n in names.items())
        assert picks == {m: m for m in case.images}, names
