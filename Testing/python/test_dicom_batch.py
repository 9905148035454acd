"""`lckd batch` over a folder of DICOM studies: each sub-folder a study, recognised from its headers
with the listing printed per study; a broken study or an explicit series choice a study lacks is
that study's error row and the batch goes on; `--format dicom-seg` writes a SEG per study that
reads back and validates; NIfTI layouts are refused for dicom-seg in one line. Studies are
generated phantoms in two vendors' conventions (`lckd.research.dicomphantom`)."""
from __future__ import annotations

import csv
import datetime
import json
import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from conftest import TEST_MODEL
from lckd.frontends.batch import find_batch_cases, find_study_cases
from lckd.frontends.cli import main
from lckd.io.dicomseg import read_dicom_seg
from lckd.io.dicomstudy import recognise
from lckd.research.dicomphantom import PATIENT, write_dicom_study, write_series
from lckd.research.phantom import make_phantom
from test_dicom_seg import dciodvfy, dciodvfy_errors
from test_dicom_study import _study_keys

SHAPE = (20, 40, 40)
RUN = ["--model", TEST_MODEL, "--device", "cpu", "--threads", "2"]


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """A folder of studies: GE (with localizer, reformat, DWI/ADC, screen save), Philips, and a broken
    one holding only a diffusion series and a localizer; beside them a folder with no DICOM file."""
    root = tmp_path_factory.mktemp("batch") / "studies"
    write_dicom_study(root / "ge-case", vendor="ge", case=make_phantom(11, SHAPE))
    write_dicom_study(root / "philips-case", vendor="philips", case=make_phantom(12, SHAPE), extras=False)
    full = write_dicom_study(tmp_path_factory.mktemp("spare") / "s", vendor="siemens", case=make_phantom(13, SHAPE))
    for series in ("S0001", "S0007"):                 # localizer and DWI: nothing to segment
        shutil.copytree(full / series, root / "broken-case" / series)
    (root / "notes").mkdir()
    (root / "notes" / "README.txt").write_text("not a study\n")
    return root


def _rows(path) -> dict:
    with open(path, newline="") as f:
        return {r["case"]: r for r in csv.DictReader(f)}


def test_a_folder_of_studies_is_found_without_a_flag(studies):
    cases = {c.case_id: c for c in find_batch_cases(studies)}
    assert set(cases) == {"broken-case", "ge-case", "notes", "philips-case"}
    assert cases["ge-case"].study == studies / "ge-case" and not cases["ge-case"].images
    assert cases["notes"].study is None and "no DICOM file" in cases["notes"].problem
    # a study given as the input folder itself (its sub-folders are series of one study) is one case
    (one,) = find_study_cases(studies / "ge-case")
    assert (one.case_id, one.study) == ("ge-case", studies / "ge-case")


def test_batch_of_studies_to_dicom_seg_goes_on_past_a_broken_study(studies, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["batch", str(studies), str(out), "--format", "dicom-seg", *RUN]) == 1   # a study failed
    captured = capsys.readouterr()
    rows = _rows(out / "summary.csv")
    assert [rows[c]["status"] for c in sorted(rows)] == ["error", "ok", "error", "ok"]
    assert "no T1, T1ce, T2 or FLAIR series recognised among the 4 series" in rows["broken-case"]["message"]
    assert "no DICOM file" in rows["notes"]["message"]
    # the listing of each study, under its name, with assignment and reason
    assert ("ge-case: study: 11 series; used: T1 = series 2 'Ax T1 FLAIR', T1ce = series 5 'Ax 3D BRAVO +C'"
            in captured.out)
    assert "philips-case: study: 4 series; used: T1 = series 1 'T1W_SE'" in captured.out
    assert "post-contrast name 'T1W_3D_TFE_GD'" in captured.out
    for case, vendor_t1ce in (("ge-case", "5"), ("philips-case", "4")):
        assert rows[case]["modalities"] == "T1+T1ce+T2+FLAIR"
        record = json.loads((out / f"{case}.json").read_text())
        assert record["dicom_study"]["chosen"]["T1ce"] == vendor_t1ce
        files = recognise(studies / case).chosen["T1ce"].files
        back = read_dicom_seg(out / f"{case}.dcm", [pydicom.dcmread(f, stop_before_pixels=True) for f in files])
        assert back is not None and back.shape == SHAPE
        for number, key in enumerate(("NCR", "ED", "ET"), start=1):     # 1 mm voxels: mL = voxels / 1000
            assert float(rows[case][f"{key}_ml"]) == pytest.approx(np.count_nonzero(back == number) / 1000,
                                                                   abs=0.01)
        ds = pydicom.dcmread(out / f"{case}.dcm", stop_before_pixels=True)
        assert ds.StudyInstanceUID == pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
        if dciodvfy:
            assert dciodvfy_errors(out / f"{case}.dcm") == []
    text = captured.out + captured.err + (out / "summary.json").read_text()
    assert not any(v in text for v in PATIENT.values() if len(v) > 1)
    # a second run skips the studies done (their SEGs read back) and redoes one whose SEG is cut short
    data = (out / "philips-case.dcm").read_bytes()
    (out / "philips-case.dcm").write_bytes(data[: len(data) // 2])
    main(["batch", str(studies), str(out), "--format", "dicom-seg", *RUN, "-q"])
    rows = _rows(out / "summary.csv")
    assert (rows["ge-case"]["status"], rows["philips-case"]["status"]) == ("skipped", "ok")


def test_an_explicit_series_a_study_lacks_fails_that_study_only(studies, tmp_path, capsys):
    out = tmp_path / "out"
    # series 5 is the GE study's T1ce; the Philips study has no series 5 (its scans are series 1-4)
    code = main(["batch", str(studies), str(out), "--t1ce", "5", "--t2", "none", "--studies", *RUN, "-q"])
    assert code == 1
    err = capsys.readouterr().err
    rows = _rows(out / "summary.csv")
    assert rows["ge-case"]["status"] == "ok" and rows["ge-case"]["modalities"] == "T1+T1ce+FLAIR"
    assert rows["philips-case"]["status"] == "error"
    assert rows["philips-case"]["message"] == "--t1ce 5: the study has no such series (its series: 1, 2, 3, 4)"
    assert "philips-case  -  error: --t1ce 5: the study has no such series" in err   # at once, on stderr
    assert (out / "ge-case.nii.gz").is_file() and not (out / "philips-case.nii.gz").exists()


def test_modalities_leave_series_out_and_competing_series_reach_the_row(studies, tmp_path):
    out = tmp_path / "out"
    assert main(["batch", str(studies / "ge-case"), str(out), "--modalities", "t1ce,flair", *RUN, "-q"]) == 0
    record = json.loads((out / "ge-case.json").read_text())
    assert record["modalities"] == ["T1ce", "FLAIR"]
    assert record["dicom_study"]["chosen"] == {"T1ce": "5", "FLAIR": "4"}
    # two post-contrast T1 series: the automatic choice is named in the summary row, with the flag
    study = shutil.copytree(studies / "philips-case", tmp_path / "two" / "philips-case")
    array = np.asarray(sitk.GetArrayFromImage(make_phantom(12, SHAPE).to_sitk(integer=True)[0]["T1ce"]))
    write_series(study / "S0010", _study_keys(study), make_phantom(12, SHAPE), array, 10,
                 datetime.datetime(2026, 1, 1, 8, 40), dict(description="T1W_SE_GD", sequence="SE", scanning="SE",
                                                            acquisition="2D", tr=550.0, te=10.0, agent="Dotarem"))
    assert main(["batch", str(tmp_path / "two"), str(tmp_path / "out2"), "--modalities", "t1ce", *RUN, "-q"]) == 0
    row = _rows(tmp_path / "out2" / "summary.csv")["philips-case"]
    assert row["message"].startswith("T1ce: 2 candidates, series 4 'T1W_3D_TFE_GD' used (3D")
    assert "choose with --t1ce SERIES, e.g. --t1ce 10" in row["message"]


def test_dicom_seg_and_series_flags_are_refused_for_nifti_layouts(cohort, tmp_path, capsys):
    root, _ = cohort
    for extra in (["--format", "dicom-seg"], ["--t1ce", "5"]):
        assert main(["batch", str(root), str(tmp_path / "o"), *extra, *RUN]) == 1
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert err.count("\n") == 0 and "holds NIfTI-layout cases, not DICOM studies" in err, err
        assert "model:" not in captured.out                       # refused before the model loads
    assert not any((tmp_path / "o").glob("*.dcm"))
