"""DICOM SEG out: segments with the Slicer terminology's codes, on the reference series' frames and
Frame of Reference, patient and study copied, a research-use-only series naming the algorithm and
the quality estimate; valid for dciodvfy (dicom3tools; skipped when absent) and read back voxel for
voxel, from the library and through `lckd segment --study ... -o result.dcm`."""
from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from conftest import TEST_MODEL
from lckd.base.segments import SEGMENTS, TERMINOLOGY_CATEGORY
from lckd.frontends.cli import main
from lckd.io.dicomseg import SERIES_DESCRIPTION, read_dicom_seg, segment_numbers, write_dicom_seg
from lckd.io.dicomstudy import read_study, recognise
from lckd.research.dicomphantom import PATIENT, write_dicom_study
from lckd.research.phantom import make_phantom

SHAPE = (24, 48, 48)
MODEL = {"name": "lckd-test", "version": "9.9.9", "weights_sha256": "ab" * 32}
dciodvfy = shutil.which("dciodvfy")


def dciodvfy_errors(path) -> list[str]:
    """The error lines dciodvfy reports for a file (warnings are allowed)."""
    run = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
    return [ln for ln in (run.stdout + run.stderr).splitlines() if ln.startswith("Error")]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    case = make_phantom(2, SHAPE)
    folder = write_dicom_study(tmp_path_factory.mktemp("seg") / "study", vendor="siemens", case=case, extras=False)
    return folder, case


def test_seg_reads_back_as_the_labelmap_with_codes_and_provenance(study, tmp_path):
    folder, case = study
    found = recognise(folder)
    reference = read_study(found)["T1ce"]
    label = sitk.GetImageFromArray(case.label)
    label.CopyInformation(reference)
    path = write_dicom_seg(label, found.chosen["T1ce"].files, tmp_path / "out" / "seg.dcm", model=MODEL,
                           description="quality: expected whole-tumour Dice 0.81 (0.70-0.88)")
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in found.chosen["T1ce"].files]
    back = read_dicom_seg(path, sources)
    assert back is not None and np.array_equal(back, segment_numbers(case.label, "brats2018"))
    assert set(np.unique(back)) == {0, 1, 2, 3}                          # every class present in this phantom
    ds = pydicom.dcmread(path)
    assert ds.Modality == "SEG" and ds.SeriesDescription == SERIES_DESCRIPTION
    assert "RESEARCH USE ONLY" in SERIES_DESCRIPTION
    assert ds.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert ds.StudyInstanceUID == sources[0].StudyInstanceUID and ds.PatientID == PATIENT["PatientID"]
    assert ds.SeriesInstanceUID != sources[0].SeriesInstanceUID
    refs = {r.ReferencedSOPInstanceUID for r in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert refs == {s.SOPInstanceUID for s in sources}
    assert ds.ContentDescription.startswith("quality: expected whole-tumour Dice 0.81")
    for item, info in zip(ds.SegmentSequence, SEGMENTS):
        assert item.SegmentLabel == info.name and item.TrackingID == info.key
        code = item.SegmentedPropertyTypeCodeSequence[0]
        assert (code.CodingSchemeDesignator, code.CodeValue, code.CodeMeaning) == info.type_code
        category = item.SegmentedPropertyCategoryCodeSequence[0]
        assert (category.CodingSchemeDesignator, category.CodeValue, category.CodeMeaning) == TERMINOLOGY_CATEGORY
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("lckd-test", "9.9.9")
        assert "ab" * 32 in algorithm.AlgorithmParameters
    if dciodvfy:
        assert dciodvfy_errors(path) == []
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["seg.dcm"]   # no temporary file left


@pytest.mark.skipif(dciodvfy is None, reason="dciodvfy (Debian's dicom3tools) is not installed")
def test_dciodvfy_reports_errors_it_finds(study, tmp_path):
    """The check is not vacuous: a SEG stripped of its Segment Sequence is an error for dciodvfy."""
    folder, case = study
    found = recognise(folder)
    label = sitk.GetImageFromArray(case.label)
    label.CopyInformation(read_study(found)["T1ce"])
    path = write_dicom_seg(label, found.chosen["T1ce"].files, tmp_path / "seg.dcm", model=MODEL)
    ds = pydicom.dcmread(path)
    del ds.SegmentSequence
    ds.save_as(tmp_path / "broken.dcm")
    assert dciodvfy_errors(tmp_path / "broken.dcm")


def test_segment_study_to_dicom_seg_through_the_cli(study, tmp_path, capsys):
    folder, _ = study
    code = main(["segment", "--study", str(folder), "-o", str(tmp_path / "result"), "--format", "dicom-seg",
                 "--json", "--model", TEST_MODEL, "--threads", "2", "-q"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "scans: T1 = series 1 't1_mprage_sag_p2', T1ce = series 4 't1_mprage_sag_p2_KM'" in captured.out
    record = json.loads((tmp_path / "result.json").read_text())
    assert record["dicom_study"]["chosen"] == {"T1": "1", "T1ce": "4", "T2": "2", "FLAIR": "3"}
    assert record["inputs"] == {"T1": None, "T1ce": None, "T2": None, "FLAIR": None}
    text = captured.out + captured.err + json.dumps(record)
    assert not any(v in text for v in PATIENT.values() if len(v) > 1)
    files = recognise(folder).chosen["T1ce"].files
    back = read_dicom_seg(tmp_path / "result.dcm", [pydicom.dcmread(f, stop_before_pixels=True) for f in files])
    assert back is not None
    for number, key in enumerate(("NCR", "ED", "ET"), start=1):   # 1 mm voxels: mL = voxels / 1000
        assert record["volumes_ml"][key] == pytest.approx(np.count_nonzero(back == number) / 1000, abs=1e-3)
    assert pydicom.dcmread(tmp_path / "result.dcm").ContentDescription.startswith("quality:")
    if dciodvfy:
        assert dciodvfy_errors(tmp_path / "result.dcm") == []


def test_dicom_seg_needs_a_dicom_reference(small_case, tmp_path, capsys):
    paths, _ = small_case
    assert main(["segment", "--t2", str(paths["T2"]), "-o", str(tmp_path / "x.dcm"), "--model", TEST_MODEL]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "the reference scan (T2) is not a DICOM series" in err
    assert main(["segment", "--t2", str(paths["T2"]), "-o", str(tmp_path / "x.nii.gz"), "--format", "dicom-seg"]) == 1
    assert "disagree" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
