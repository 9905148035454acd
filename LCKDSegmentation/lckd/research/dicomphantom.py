"""A phantom case written as a scanner's DICOM study: four MR series in one vendor's naming
conventions, plus what a real study also holds (a three-plane localizer, a derived reformat, a
diffusion series, a screen save) and a non-DICOM file.

Made for the DICOM tests, the DICOM benchmark and the worked example (`lckd phantom --dicom`):
no real patient data, every identifying attribute is made up. Headers follow each vendor's
usual series names and acquisition physics (TR, TE, inversion time, contrast agent), so the
study recogniser (`lckd.io.dicomroles`) sees what it would see on a scanner's export.
"""
from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..base.errors import InputError
from .phantom import PhantomCase, make_phantom

#: Per vendor: manufacturer, model and each scan's series header (description, sequence name,
#: scanning sequence, 2D/3D, TR / TE / TI in ms, contrast agent). `None` leaves an attribute out.
VENDORS: dict[str, dict[str, Any]] = {
    "siemens": {"manufacturer": "SIEMENS", "model": "Prisma", "series": {
        "T1": dict(description="t1_mprage_sag_p2", sequence="*tfl3d1_16ns", scanning="GR\\IR", acquisition="3D",
                   tr=2300.0, te=2.98, ti=900.0),
        "T2": dict(description="t2_tse_tra_p2", sequence="*tse2d1_15", scanning="SE", acquisition="2D",
                   tr=5000.0, te=95.0),
        "FLAIR": dict(description="t2_tirm_tra_dark-fluid", sequence="*tir2d1_16", scanning="SE\\IR",
                      acquisition="2D", tr=9000.0, te=81.0, ti=2500.0),
        "T1ce": dict(description="t1_mprage_sag_p2_KM", sequence="*tfl3d1_16ns", scanning="GR\\IR",
                     acquisition="3D", tr=2300.0, te=2.98, ti=900.0, agent="Gadovist"),
    }},
    "ge": {"manufacturer": "GE MEDICAL SYSTEMS", "model": "SIGNA Premier", "series": {
        "T1": dict(description="Ax T1 FLAIR", sequence="", scanning="SE\\IR", acquisition="2D",
                   tr=2200.0, te=9.0, ti=800.0),
        "T2": dict(description="AX T2 FRFSE", sequence="frfse", scanning="SE", acquisition="2D",
                   tr=6000.0, te=102.0),
        "FLAIR": dict(description="AX T2 FLAIR", sequence="", scanning="SE\\IR", acquisition="2D",
                      tr=9500.0, te=120.0, ti=2400.0),
        "T1ce": dict(description="Ax 3D BRAVO +C", sequence="efgre3d", scanning="GR", acquisition="3D",
                     tr=8.2, te=3.2, ti=450.0, agent="GADAVIST 7ML"),
    }},
    "philips": {"manufacturer": "Philips", "model": "Ingenia", "series": {
        "T1": dict(description="T1W_SE", sequence="SE", scanning="SE", acquisition="2D", tr=550.0, te=10.0),
        "T2": dict(description="T2W_TSE", sequence="TSE", scanning="SE", acquisition="2D", tr=4500.0, te=100.0),
        "FLAIR": dict(description="3D_Brain_VIEW_FLAIR", sequence="TSE", scanning="IR", acquisition="3D",
                      tr=4800.0, te=310.0, ti=1650.0),
        "T1ce": dict(description="T1W_3D_TFE_GD", sequence="T1TFE", scanning="GR", acquisition="3D",
                     tr=8.1, te=3.7),
    }},
    "canon": {"manufacturer": "CANON_MEDICAL_SYSTEMS", "model": "Vantage Orian", "series": {
        "T1": dict(description="T1WI_SE_AX", sequence="SE", scanning="SE", acquisition="2D", tr=500.0, te=12.0),
        "T2": dict(description="T2WI_FSE_AX", sequence="FSE", scanning="SE", acquisition="2D", tr=4000.0, te=96.0),
        "FLAIR": dict(description="FLAIR_AX", sequence="FLAIR", scanning="IR", acquisition="2D",
                      tr=10000.0, te=100.0, ti=2600.0),
        "T1ce": dict(description="Gd-T1WI_SE_AX", sequence="SE", scanning="SE", acquisition="2D",
                     tr=500.0, te=12.0, agent="Magnevist"),
    }},
    # No words to go by: the recogniser has only the physics, the agent and the acquisition order.
    "unnamed": {"manufacturer": "ACME", "model": "MR", "series": {
        "T1": dict(description="", sequence="", scanning="SE", acquisition="2D", tr=600.0, te=14.0),
        "T2": dict(description="", sequence="", scanning="SE", acquisition="2D", tr=5200.0, te=110.0),
        "FLAIR": dict(description="", sequence="", scanning="IR", acquisition="2D", tr=9000.0, te=90.0, ti=2500.0),
        "T1ce": dict(description="", sequence="", scanning="SE", acquisition="2D", tr=600.0, te=14.0),
    }},
}

#: Acquisition order of the scans (the contrast agent is given before the last).
ORDER = ("T1", "T2", "FLAIR", "T1ce")
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
#: The made-up patient every generated study belongs to (tests check none of it is printed).
PATIENT = {"PatientName": "Phantom^Paula", "PatientID": "PHANTOM-0042", "PatientBirthDate": "19700101",
           "PatientSex": "F"}


def write_dicom_study(folder: str | Path, seed: int = 0, shape: Sequence[int] = (24, 48, 48), *,
                      vendor: str = "siemens", modalities: Sequence[str] = ORDER, extras: bool = True,
                      compressed: bool = False, case: PhantomCase | None = None) -> Path:
    """Write a phantom as a DICOM study under `folder` (one sub-folder per series, files without
    extension) and return `folder`.

    `extras` adds a three-plane localizer, a derived reformat, a diffusion series with its ADC
    map, a screen save and a text file; `compressed` writes the MR slices RLE Lossless.
    """
    from pydicom.uid import generate_uid

    if vendor not in VENDORS:
        raise InputError(f"unknown vendor '{vendor}': use one of {', '.join(VENDORS)}")
    case = case or make_phantom(seed, shape)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    spec = VENDORS[vendor]
    study = {"StudyInstanceUID": generate_uid(), "FrameOfReferenceUID": generate_uid(),
             "StudyDate": "20260101", "StudyTime": "080000", "AccessionNumber": "ACC0042", "StudyID": "1",
             "ReferringPhysicianName": "", "Manufacturer": spec["manufacturer"],
             "ManufacturerModelName": spec["model"], **PATIENT}
    start = datetime.datetime(2026, 1, 1, 8, 0, 0)
    scans, _ = case.to_sitk(integer=True)
    number = 1
    if extras:
        _write_localizer(out / "S0001", study, case, start)
        number = 2
    for i, mod in enumerate(m for m in ORDER if m in modalities):
        header = dict(spec["series"][mod])
        when = start + datetime.timedelta(minutes=5 * (i + 1) + (10 if mod == "T1ce" else 0))
        array = np.asarray(_array(scans[mod]))
        write_series(out / f"S{number:04d}", study, case, array, number, when, header, compressed=compressed)
        number += 1
    if extras:
        ref = scans["T1ce"] if "T1ce" in modalities else next(iter(scans.values()))
        array = np.asarray(_array(ref))
        write_series(out / f"S{number:04d}", study, case, array, number, start + datetime.timedelta(minutes=40),
                     dict(description="t1_mprage_sag_p2_KM_MPR_tra", sequence="*tfl3d1_16ns", scanning="GR\\IR",
                          acquisition="3D", tr=2300.0, te=2.98, ti=900.0),
                     image_type="DERIVED\\SECONDARY\\MPR")
        write_series(out / f"S{number + 1:04d}", study, case, array, number + 1, start + datetime.timedelta(minutes=3),
                     dict(description="ep2d_diff_3scan_trace", sequence="*ep_b1000t", scanning="EP",
                          acquisition="2D", tr=6000.0, te=80.0, b_value=1000.0),
                     image_type="ORIGINAL\\PRIMARY\\DIFFUSION\\TRACEW")
        write_series(out / f"S{number + 2:04d}", study, case, array, number + 2, start + datetime.timedelta(minutes=3),
                     dict(description="ep2d_diff_3scan_trace_ADC", sequence="*ep_b0_1000", scanning="EP",
                          acquisition="2D", tr=6000.0, te=80.0),
                     image_type="DERIVED\\PRIMARY\\DIFFUSION\\ADC")
        _write_screen_save(out / "S0099" / "IM0001", study, start)
        (out / "S0099" / "README.txt").write_text("exported by a phantom scanner; not DICOM\n", encoding="utf-8")
    return out


def _array(image) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(image)


def slice_geometry(case: PhantomCase, k: int) -> tuple[list, list]:
    """(ImageOrientationPatient, ImagePositionPatient) of slice `k` of the phantom's grid."""
    d = np.array(case.direction, dtype=float).reshape(3, 3)
    position = np.array(case.origin, dtype=float) + d[:, 2] * case.spacing[2] * k
    return [float(v) for v in (*d[:, 0], *d[:, 1])], [float(v) for v in position]


def write_series(folder: Path, study: dict, case: PhantomCase, array: np.ndarray, number: int,
                 when: datetime.datetime, header: dict, *, image_type: str = "ORIGINAL\\PRIMARY\\M\\ND",
                 compressed: bool = False, skip: Sequence[int] = ()) -> list[Path]:
    """Write one single-frame MR series (`array` is z, y, x int16) into `folder`; slices in `skip`
    are left out (a broken series). Returns the files written."""
    from pydicom.uid import RLELossless, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    files = []
    for k in range(array.shape[0]):
        if k in skip:
            continue
        ds = _base_dataset(study, MR_STORAGE, series_uid, number, k + 1, when)
        ds.ImageType = image_type.split("\\")
        ds.SeriesDescription = header["description"]
        ds.ProtocolName = header["description"]
        ds.SequenceName = header["sequence"]
        ds.ScanningSequence = header["scanning"].split("\\")
        ds.SequenceVariant = "NONE"
        ds.MRAcquisitionType = header["acquisition"]
        ds.RepetitionTime = header["tr"]
        ds.EchoTime = header["te"]
        if header.get("ti") is not None:
            ds.InversionTime = header["ti"]
        if header.get("agent"):
            ds.ContrastBolusAgent = header["agent"]
            ds.ContrastBolusRoute = "IV"
        if header.get("b_value") is not None:
            ds.DiffusionBValue = header["b_value"]
        ds.MagneticFieldStrength = 3.0
        ds.FrameOfReferenceUID = study["FrameOfReferenceUID"]
        orientation, position = slice_geometry(case, k)
        ds.ImageOrientationPatient = orientation
        ds.ImagePositionPatient = position
        ds.PixelSpacing = [float(case.spacing[1]), float(case.spacing[0])]
        ds.SliceThickness = float(case.spacing[2])
        ds.SpacingBetweenSlices = float(case.spacing[2])
        _pixels(ds, np.ascontiguousarray(array[k]).astype(np.int16))
        if compressed:
            ds.compress(RLELossless)
        path = folder / f"IM{k + 1:04d}"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def _base_dataset(study: dict, sop_class: str, series_uid: str, number: int, instance: int,
                  when: datetime.datetime):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for key, value in study.items():
        if key != "FrameOfReferenceUID":
            setattr(ds, key, value)
    ds.Modality = "MR"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = number
    ds.InstanceNumber = instance
    ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = when.strftime("%Y%m%d")
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = when.strftime("%H%M%S")
    ds.PositionReferenceIndicator = ""
    return ds


def _pixels(ds, frame: np.ndarray) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(frame.shape[0]), int(frame.shape[1])
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.PixelData = frame.tobytes()


def _write_localizer(folder: Path, study: dict, case: PhantomCase, when: datetime.datetime) -> None:
    """A three-plane localizer: one series, one slice in each of three orientations."""
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    uid = generate_uid()
    planes = ([1, 0, 0, 0, 1, 0], [1, 0, 0, 0, 0, -1], [0, 1, 0, 0, 0, -1])
    for i, orientation in enumerate(planes):
        ds = _base_dataset(study, MR_STORAGE, uid, 1, i + 1, when)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D"]
        ds.SeriesDescription = ds.ProtocolName = "localizer"
        ds.ScanningSequence = ["GR"]
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime, ds.EchoTime = 8.6, 4.0
        ds.FrameOfReferenceUID = study["FrameOfReferenceUID"]
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.ImagePositionPatient = [-120.0, -120.0, 0.0]
        ds.PixelSpacing = [1.0, 1.0]
        ds.SliceThickness = 7.0
        _pixels(ds, np.zeros((32, 32), np.int16))
        ds.save_as(folder / f"IM{i + 1:04d}", enforce_file_format=True)


def _write_screen_save(path: Path, study: dict, when: datetime.datetime) -> None:
    from pydicom.uid import generate_uid

    path.parent.mkdir(parents=True, exist_ok=True)
    ds = _base_dataset(study, SECONDARY_CAPTURE, generate_uid(), 99, 1, when)
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SeriesDescription = "Screen Save"
    _pixels(ds, np.zeros((16, 16), np.int16))
    ds.save_as(path, enforce_file_format=True)
