"""Enhanced multi-frame MR and compressed transfer syntaxes through the study path: a phantom on an
oblique, anisotropic grid written as Enhanced MR Image Storage files (per-frame functional groups)
uncompressed, RLE Lossless (pydicom's encoder), JPEG 2000 Lossless and JPEG Lossless (GDCM's
encoders) reads back voxel for voxel and with the geometry of the single-frame version; frames
stored in reverse order are put in order; a multi-frame study segments into a valid DICOM SEG."""
from __future__ import annotations

import dataclasses
import datetime
import json
import math

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import JPEG2000Lossless, JPEGLosslessSV1, RLELossless

from conftest import TEST_MODEL
from lckd.frontends.cli import main
from lckd.io.dicomseg import read_dicom_seg, segment_numbers, write_dicom_seg
from lckd.io.dicomstudy import read_study, recognise
from lckd.io.imageio import read_dicom_files
from lckd.research import dicomphantom as dp
from lckd.research.dicomphantom import PATIENT, slice_geometry, write_dicom_study, write_enhanced_series
from lckd.research.phantom import make_phantom
from test_dicom_seg import dciodvfy, dciodvfy_errors

SYNTAX = {None: pydicom.uid.ExplicitVRLittleEndian, "rle": RLELossless, "jpeg2000": JPEG2000Lossless,
          "jpeg-lossless": JPEGLosslessSV1}


@pytest.fixture(scope="module")
def case():
    """A phantom on a grid tilted 15 degrees about x, 0.9 x 0.8 x 2.5 mm voxels, origin off zero."""
    a = math.radians(15)
    rotation = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    return dataclasses.replace(make_phantom(7, (16, 36, 40)), spacing=(0.9, 0.8, 2.5), origin=(-90.5, -120.25, 30.0),
                               direction=tuple(float(v) for v in rotation.ravel()))


@pytest.fixture(scope="module")
def single(tmp_path_factory, case):
    """The single-frame, uncompressed study of the case and its four scans as read."""
    folder = write_dicom_study(tmp_path_factory.mktemp("single") / "s", vendor="siemens", case=case, extras=False)
    return read_study(recognise(folder))


@pytest.mark.parametrize("compression", [None, *dp.COMPRESSIONS])
def test_enhanced_study_reads_as_the_single_frame_one(tmp_path, case, single, compression):
    folder = write_dicom_study(tmp_path / "s", vendor="siemens", case=case, extras=False, multiframe=True,
                               compression=compression)
    study = recognise(folder)
    assert {m: s.number for m, s in study.chosen.items()} == {"T1": 1, "T2": 2, "FLAIR": 3, "T1ce": 4}
    assert all(s.multiframe and len(s.files) == 1 and s.slices == 16 for s in study.chosen.values())
    assert study.roles["3"].reason == "acquisition contrast FLAIR (enhanced header)"
    assert study.roles["4"].reason.endswith("contrast agent in the header (ContrastBolusAgent)")
    ds = pydicom.dcmread(study.chosen["T2"].files[0])
    assert ds.SOPClassUID == dp.ENHANCED_MR_STORAGE and ds.file_meta.TransferSyntaxUID == SYNTAX[compression]
    assert "PixelSpacing" not in ds and "ImagePositionPatient" not in ds     # the geometry is in the groups only
    images = read_study(study)
    truth = case.to_sitk(integer=True)[0]
    for mod, image in images.items():
        assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(single[mod])), mod
        assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(truth[mod])), mod
        for get in ("GetOrigin", "GetSpacing", "GetDirection"):
            assert np.allclose(getattr(image, get)(), getattr(single[mod], get)(), atol=1e-4), (mod, get)
            assert np.allclose(getattr(image, get)(), getattr(truth[mod], get)(), atol=1e-4), (mod, get)
    if dciodvfy:
        assert dciodvfy_errors(study.chosen["T1ce"].files[0]) == []


def test_enhanced_file_carries_the_functional_groups(tmp_path, case):
    folder = write_dicom_study(tmp_path / "s", vendor="ge", case=case, extras=False, multiframe=True,
                               modalities=("FLAIR",))
    ds = pydicom.dcmread(next(folder.rglob("IM0001")))
    shared = ds.SharedFunctionalGroupsSequence[0]
    assert shared.MRImageFrameTypeSequence[0].AcquisitionContrast == "FLAIR"
    assert float(shared.MRModifierSequence[0].InversionTimes) == 2400.0
    assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == [0.8, 0.9]
    assert np.allclose([float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient],
                       slice_geometry(case, 0)[0])
    frames = ds.PerFrameFunctionalGroupsSequence
    assert len(frames) == int(ds.NumberOfFrames) == 16
    assert np.allclose([float(v) for v in frames[5].PlanePositionSequence[0].ImagePositionPatient],
                       slice_geometry(case, 5)[1])


def test_frames_stored_in_reverse_order_are_put_in_order(tmp_path, case):
    truth = case.to_sitk(integer=True)[0]["T2"]
    array = sitk.GetArrayFromImage(truth)
    where = [slice_geometry(case, k) for k in range(array.shape[0])]
    study = {"StudyInstanceUID": pydicom.uid.generate_uid(), "FrameOfReferenceUID": pydicom.uid.generate_uid(),
             "StudyDate": "20260101", "StudyTime": "080000", "AccessionNumber": "A1", "StudyID": "1",
             "ReferringPhysicianName": "", "Manufacturer": "Philips", "ManufacturerModelName": "Ingenia", **PATIENT}
    header = dict(description="T2W_TSE", sequence="TSE", scanning="SE", acquisition="2D", tr=4500.0, te=100.0,
                  contrast="T2")
    path = write_enhanced_series(tmp_path / "IM0001", study, case, array[::-1], where[::-1], pydicom.uid.generate_uid(),
                                 3, datetime.datetime(2026, 1, 1, 8, 0), header, compression="rle")
    image = read_dicom_files([path], "T2 series 3")
    assert np.array_equal(sitk.GetArrayFromImage(image), array)
    assert np.allclose(image.GetOrigin(), truth.GetOrigin(), atol=1e-4)
    assert np.allclose(image.GetDirection(), truth.GetDirection(), atol=1e-6)
    # a SEG on it refers each slice to its own stored frame
    label = sitk.GetImageFromArray(case.label)
    label.CopyInformation(image)
    seg = write_dicom_seg(label, [path], tmp_path / "seg.dcm", model={"name": "t", "version": "1"})
    stored = read_dicom_seg(seg, [pydicom.dcmread(path, stop_before_pixels=True)])
    assert stored is not None and np.array_equal(stored[::-1], segment_numbers(case.label, "brats2018"))


def test_a_multiframe_jpeg2000_study_segments_into_a_valid_seg(tmp_path, capsys):
    assert main(["phantom", str(tmp_path), "--shape", "20,40,40", "--seed", "4", "--dicom", "philips",
                 "--multiframe", "--compression", "jpeg2000"]) == 0
    study_dir = tmp_path / "Phantom-00004"
    code = main(["segment", "--study", str(study_dir), "-o", str(tmp_path / "out.dcm"), "--json", "--model",
                 TEST_MODEL, "--threads", "2", "-q"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "series 5 'T1W_3D_TFE_GD'" in captured.out and "acquisition contrast T1 (enhanced header)" in captured.out
    source = recognise(study_dir).chosen["T1ce"].files
    back = read_dicom_seg(tmp_path / "out.dcm", [pydicom.dcmread(f, stop_before_pixels=True) for f in source])
    assert back is not None and back.shape == (20, 40, 40)
    record = json.loads((tmp_path / "out.json").read_text())
    assert record["volumes_ml"]["ED"] == pytest.approx(np.count_nonzero(back == 2) / 1000, abs=1e-3)
    if dciodvfy:
        assert dciodvfy_errors(tmp_path / "out.dcm") == []


def test_multiframe_without_dicom_is_refused(tmp_path, capsys):
    assert main(["phantom", str(tmp_path), "--multiframe"]) == 1
    assert "--multiframe is for DICOM studies: give --dicom VENDOR too" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
