"""Uneven slice spacing in DICOM (`lckd.io.dicomseries.slice_gaps`, one rule for the recogniser and
the reader): gaps within 10 % of the median are even; a stack whose gaps stay under 1.5 x the median
(and over 0.5 x) is resampled onto even spacing with a warning naming the spacings; a gap of 1.5 x the
median or more is a missing slice, refused naming the gap; crowded slices are refused. Single- and
multi-frame; the warning reaches `lckd segment --study`'s output and record."""
from __future__ import annotations

import datetime
import json

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import TEST_MODEL
from lckd.base.errors import InputError
from lckd.frontends.cli import main
from lckd.inference.inputchecks import read_and_check
from lckd.io.dicomseries import slice_gaps
from lckd.io.dicomstudy import read_study, recognise
from lckd.io.imageio import read_note
from lckd.research.dicomphantom import write_dicom_study, write_series
from lckd.research.phantom import make_phantom
from test_dicom_study import _study_keys

SHAPE = (16, 32, 32)
T2 = dict(description="T2W_TSE", sequence="TSE", scanning="SE", acquisition="2D", tr=4500.0, te=100.0, contrast="T2")
#: 1 mm steps with three steps of 1.3 mm: uneven, every gap under 1.5 x the median
UNEVEN = np.cumsum([0.0] + [1.3 if k in (3, 8, 12) else 1.0 for k in range(SHAPE[0] - 1)])


@pytest.fixture(scope="module")
def case():
    return make_phantom(9, SHAPE)


def ramp(positions) -> np.ndarray:
    """Slices whose values are linear in their position (10 per mm) plus an in-plane pattern: linear
    interpolation between slices reproduces them exactly at any position."""
    y, x = np.mgrid[0:SHAPE[1], 0:SHAPE[2]]
    return np.stack([np.rint(100 + 10 * p + 5 * (x + y)) for p in positions]).astype(np.int16)


def _study(tmp_path, case, positions, *, multiframe=False, skip=()):
    """A study of a Philips T1ce plus one T2 series (number 7) at `positions` (mm along the normal)."""
    folder = write_dicom_study(tmp_path / "s", vendor="philips", case=case, extras=False, modalities=("T1ce",))
    write_series(folder / "S0007", _study_keys(folder), case, ramp(positions), 7, datetime.datetime(2026, 1, 1, 9),
                 T2, positions=positions, multiframe=multiframe, skip=skip)
    return folder


def test_the_rule():
    assert slice_gaps([0, 1, 2, 3.05, 4.05]) == ("even", "")
    assert slice_gaps(UNEVEN)[0] == "uneven"
    assert slice_gaps([0, 1, 2, 3.4, 4.4, 5.4]) == ("uneven", "a gap of 1.4 mm where the others are 1 mm")
    assert slice_gaps([0, 1, 2, 3.5, 4.5, 5.5]) == ("missing", "a gap of 1.5 mm where the others are 1 mm")
    assert slice_gaps([0, 1, 2, 2.4, 3.4, 4.4]) == ("crowded", "a gap of 0.4 mm where the others are 1 mm")


@pytest.mark.parametrize("multiframe", [False, True], ids=["single-frame", "multi-frame"])
def test_uneven_slices_are_resampled_onto_even_spacing_with_a_warning(tmp_path, case, multiframe):
    study = recognise(_study(tmp_path, case, UNEVEN, multiframe=multiframe))
    assert study.chosen["T2"].number == 7                     # readable: not set aside
    image = read_study(study)["T2"]
    step = UNEVEN[-1] / (SHAPE[0] - 1)
    assert image.GetSize() == (32, 32, 16) and image.GetSpacing()[2] == pytest.approx(step)
    assert np.allclose(image.GetOrigin(), case.origin, atol=1e-4)
    expected = ramp(step * np.arange(SHAPE[0])).astype(np.float32)   # the ramp at the even positions
    assert np.allclose(sitk.GetArrayFromImage(image), expected, atol=0.51)   # the stored values were rounded
    assert read_note(image) == ("has unevenly spaced slices (a gap of 1.3 mm where the others are 1 mm; gaps of 1, "
                                f"1.3 mm): resampled onto an even {step:.3g} mm spacing")
    checked = read_and_check({"T2": image}, names={"T2": study.source_name("T2")})
    assert ("T2 '<DICOM series 7 'T2W_TSE'>' has unevenly spaced slices (a gap of 1.3 mm where the others are 1 mm"
            in "\n".join(checked.warnings))


@pytest.mark.parametrize("multiframe", [False, True], ids=["single-frame", "multi-frame"])
@pytest.mark.parametrize("gap", [1.6, 2.0, 0.4])
def test_a_missing_slice_or_crowded_slices_are_refused_naming_the_gap(tmp_path, case, gap, multiframe):
    positions = np.cumsum([0.0] + [gap if k == 6 else 1.0 for k in range(SHAPE[0] - 1)])
    folder = _study(tmp_path, case, positions, multiframe=multiframe)
    study = recognise(folder)
    assert "T2" not in study.chosen
    reason = study.roles["7"].reason
    assert f"a gap of {gap:g} mm where the others are 1 mm" in reason
    assert reason.startswith("uneven slices" if gap < 1 else "1 slice(s) missing")
    with pytest.raises(InputError, match=rf"T2 series 7 'T2W_TSE' has unevenly spaced slices \(a gap of {gap:g} mm "
                                         "where the others are 1 mm\\): a slice is missing"):
        read_study(recognise(folder, {"T2": "7"}))


def test_the_warning_reaches_the_run_and_its_record(tmp_path, case, capsys):
    folder = _study(tmp_path, case, UNEVEN)
    code = main(["segment", "--study", str(folder), "-o", str(tmp_path / "seg.nii.gz"), "--json", "--model",
                 TEST_MODEL, "--threads", "2", "-q"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "warning: T2 '<DICOM series 7 'T2W_TSE'>' has unevenly spaced slices" in captured.err
    record = json.loads((tmp_path / "seg.json").read_text())
    assert any("resampled onto an even" in w for w in record["warnings"])
