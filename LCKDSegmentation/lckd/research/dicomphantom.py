"""A phantom case written as a scanner's DICOM study: four MR series in one vendor's naming
conventions, plus what a real study also holds (a three-plane localizer, a derived reformat, a
diffusion series, a screen save) and a non-DICOM file.

The four scans can be written as classic single-frame series (one file per slice) or as Enhanced
MR Image Storage files (`multiframe`: one file per series, geometry in the per-frame functional
groups), uncompressed or in a lossless compressed transfer syntax (`COMPRESSIONS`).

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
ENHANCED_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
#: Lossless compressed transfer syntaxes the writer produces: RLE Lossless by pydicom's own encoder;
#: JPEG 2000 Lossless and JPEG Lossless (process 14, first-order prediction) by GDCM, through
#: SimpleITK's DICOM writer (pydicom has no encoder for them without extra plugins).
COMPRESSIONS = ("rle", "jpeg2000", "jpeg-lossless")
#: AcquisitionContrast (Enhanced MR) of each scan.
ACQUISITION_CONTRAST = {"T1": "T1", "T1ce": "T1", "T2": "T2", "FLAIR": "FLAIR"}
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
#: The made-up patient every generated study belongs to (tests check none of it is printed).
PATIENT = {"PatientName": "Phantom^Paula", "PatientID": "PHANTOM-0042", "PatientBirthDate": "19700101",
           "PatientSex": "F"}


def write_dicom_study(folder: str | Path, seed: int = 0, shape: Sequence[int] = (24, 48, 48), *,
                      vendor: str = "siemens", modalities: Sequence[str] = ORDER, extras: bool = True,
                      compression: str | None = None, multiframe: bool = False,
                      case: PhantomCase | None = None) -> Path:
    """Write a phantom as a DICOM study under `folder` (one sub-folder per series, files without
    extension) and return `folder`.

    `extras` adds a three-plane localizer, a derived reformat, a diffusion series with its ADC
    map, a screen save and a text file; `compression` (one of `COMPRESSIONS`) writes the MR
    images in that lossless transfer syntax; `multiframe` writes each of the four scans as one
    Enhanced MR Image Storage file (the extras stay single-frame, as mixed studies have them).
    """
    from pydicom.uid import generate_uid

    if vendor not in VENDORS:
        raise InputError(f"unknown vendor '{vendor}': use one of {', '.join(VENDORS)}")
    if compression is not None and compression not in COMPRESSIONS:
        raise InputError(f"unknown compression '{compression}': use one of {', '.join(COMPRESSIONS)}")
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
        header = dict(spec["series"][mod], contrast=ACQUISITION_CONTRAST[mod])
        when = start + datetime.timedelta(minutes=5 * (i + 1) + (10 if mod == "T1ce" else 0))
        array = np.asarray(_array(scans[mod]))
        write_series(out / f"S{number:04d}", study, case, array, number, when, header, compression=compression,
                     multiframe=multiframe)
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


def slice_geometry(case: PhantomCase, k: int, offset: float | None = None) -> tuple[list, list]:
    """(ImageOrientationPatient, ImagePositionPatient) of slice `k` of the phantom's grid, or of a
    slice `offset` mm from the first along the slice normal."""
    d = np.array(case.direction, dtype=float).reshape(3, 3)
    along = case.spacing[2] * k if offset is None else offset
    position = np.array(case.origin, dtype=float) + d[:, 2] * along
    # rounded to fit DICOM's DS (at most 16 characters)
    return [round(float(v), 8) for v in (*d[:, 0], *d[:, 1])], [round(float(v), 6) for v in position]


def write_series(folder: Path, study: dict, case: PhantomCase, array: np.ndarray, number: int,
                 when: datetime.datetime, header: dict, *, image_type: str = "ORIGINAL\\PRIMARY\\M\\ND",
                 compression: str | None = None, skip: Sequence[int] = (), multiframe: bool = False,
                 positions: Sequence[float] | None = None) -> list[Path]:
    """Write one MR series (`array` is z, y, x int16) into `folder`: one file per slice, or with
    `multiframe` one Enhanced MR file (`write_enhanced_series`). Slices in `skip` are left out (a
    broken series); `positions` (mm along the slice normal, one per slice of `array`) replaces the
    even spacing of the phantom's grid (an unevenly spaced stack). Returns the files written."""
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    keep = [k for k in range(array.shape[0]) if k not in skip]
    where = [slice_geometry(case, k, None if positions is None else positions[k]) for k in keep]
    if multiframe:
        return [write_enhanced_series(folder / "IM0001", study, case, array[keep], where, series_uid, number,
                                      when, header, compression=compression)]
    files = []
    for k, (orientation, position) in zip(keep, where):
        ds = _base_dataset(study, MR_STORAGE, series_uid, number, k + 1, when)
        ds.ImageType = image_type.split("\\")
        _mr_header(ds, header)
        ds.SequenceName = header["sequence"]
        ds.RepetitionTime = header["tr"]
        ds.EchoTime = header["te"]
        if header.get("ti") is not None:
            ds.InversionTime = header["ti"]
        if header.get("b_value") is not None:
            ds.DiffusionBValue = header["b_value"]
        ds.FrameOfReferenceUID = study["FrameOfReferenceUID"]
        ds.ImageOrientationPatient = orientation
        ds.ImagePositionPatient = position
        ds.PixelSpacing = [float(case.spacing[1]), float(case.spacing[0])]
        ds.SliceThickness = float(case.spacing[2])
        ds.SpacingBetweenSlices = float(case.spacing[2])
        _pixels(ds, np.ascontiguousarray(array[k]).astype(np.int16))
        _compress(ds, compression)
        path = folder / f"IM{k + 1:04d}"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def _mr_header(ds, header: dict) -> None:
    """The series attributes single-frame and enhanced files share (names, sequence, contrast agent)."""
    ds.SeriesDescription = header["description"]
    ds.ProtocolName = header["description"]
    ds.ScanningSequence = header["scanning"].split("\\")
    ds.SequenceVariant = "NONE"
    ds.MRAcquisitionType = header["acquisition"]
    ds.MagneticFieldStrength = 3.0
    if header.get("agent"):
        ds.ContrastBolusAgent = header["agent"]
        ds.ContrastBolusRoute = "IV"


def write_enhanced_series(path: Path, study: dict, case: PhantomCase, array: np.ndarray, where: Sequence[tuple],
                          series_uid: str, number: int, when: datetime.datetime, header: dict, *,
                          compression: str | None = None) -> Path:
    """Write `array` (z, y, x int16) as one Enhanced MR Image Storage file: frame k at `where[k]`
    (orientation, position), orientation, pixel measures and MR physics in the shared functional
    groups, each frame's position and stack place in its per-frame group. Returns `path`."""
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    ds = _base_dataset(study, ENHANCED_MR_STORAGE, series_uid, number, 1, when)
    frame_type = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.ImageType = frame_type
    _mr_header(ds, header)
    ds.PulseSequenceName = header["sequence"] or header["scanning"].split("\\")[0]
    ds.AcquisitionDateTime = when.strftime("%Y%m%d%H%M%S")
    ds.ContentQualification = "RESEARCH"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.ImageComments = "phantom"
    ds.ResonantNucleus = "1H"
    ds.KSpaceFiltering = "NONE"
    ds.MagneticFieldStrength = 3.0
    ds.ApplicableSafetyStandardAgency = "IEC"
    ds.ImagingFrequency = 127.7
    ds.FrameOfReferenceUID = study["FrameOfReferenceUID"]
    ds.PatientPosition = "HFS"
    ds.AcquisitionContextSequence = []
    ds.AcquisitionDuration = 120.0
    spin = "SE" in header["scanning"].split("\\") or "IR" in header["scanning"].split("\\")
    pulse = dict(EchoPulseSequence="SPIN" if spin else "GRADIENT", MultipleSpinEcho="NO", MultiPlanarExcitation="NO",
                 PhaseContrast="NO", TimeOfFlightContrast="NO", SteadyStatePulseSequence="NONE",
                 EchoPlanarPulseSequence="NO", SaturationRecovery="NO", SpectrallySelectedSuppression="NONE",
                 OversamplingPhase="NONE", GeometryOfKSpaceTraversal="RECTILINEAR",
                 RectilinearPhaseEncodeReordering="LINEAR", SegmentedKSpaceTraversal="SINGLE",
                 CoverageOfKSpace="FULL", NumberOfKSpaceTrajectories=1)
    for key, value in pulse.items():
        setattr(ds, key, value)
    ds.DeviceSerialNumber = "PHANTOM"
    ds.SoftwareVersions = "lckd phantom"
    description = dict(PixelPresentation="MONOCHROME", VolumetricProperties="VOLUME",
                       VolumeBasedCalculationTechnique="NONE", ComplexImageComponent="MAGNITUDE",
                       AcquisitionContrast=header.get("contrast") or "UNKNOWN")
    for key, value in description.items():
        setattr(ds, key, value)
    ti = header.get("ti")
    shared = Dataset()
    shared.PlaneOrientationSequence = [Dataset()]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = where[0][0]
    measures = Dataset()
    measures.PixelSpacing = [float(case.spacing[1]), float(case.spacing[0])]
    measures.SliceThickness = float(case.spacing[2])
    measures.SpacingBetweenSlices = float(case.spacing[2])
    shared.PixelMeasuresSequence = [measures]
    frame = Dataset()
    frame.FrameType = frame_type
    for key, value in description.items():
        setattr(frame, key, value)
    shared.MRImageFrameTypeSequence = [frame]
    timing = Dataset()
    timing.RepetitionTime = header["tr"]
    timing.FlipAngle = 90.0
    timing.EchoTrainLength = 1
    timing.RFEchoTrainLength = 1
    timing.GradientEchoTrainLength = 0
    timing.OperatingModeSequence = [_item(OperatingModeType="GRADIENT", OperatingMode="IEC_NORMAL")]
    timing.SpecificAbsorptionRateSequence = [_item(SpecificAbsorptionRateDefinition="IEC_HEAD",
                                                   SpecificAbsorptionRateValue=0.5)]
    shared.MRTimingAndRelatedParametersSequence = [timing]
    echo = Dataset()
    echo.EffectiveEchoTime = header["te"]
    shared.MREchoSequence = [echo]
    modifier = Dataset()
    modifier.InversionRecovery = "YES" if ti else "NO"
    if ti:
        modifier.InversionTimes = [ti]
    modifier.FlowCompensation = "NONE"
    modifier.T2Preparation = "NO"
    modifier.SpectrallySelectedExcitation = "NONE"
    modifier.SpatialPresaturation = "NONE"
    modifier.PartialFourier = "NO"
    modifier.ParallelAcquisition = "NO"
    shared.MRModifierSequence = [modifier]
    shared.MRImagingModifierSequence = [_item(PixelBandwidth=200.0, MagnetizationTransfer="NONE",
                                              BloodSignalNulling="NO", Tagging="NONE", TransmitterFrequency=127.7)]
    shared.MRReceiveCoilSequence = [_item(ReceiveCoilName="Head", ReceiveCoilType="VOLUME",
                                          ReceiveCoilManufacturerName="", QuadratureReceiveCoil="NO")]
    shared.MRTransmitCoilSequence = [_item(TransmitCoilName="Body", TransmitCoilType="BODY",
                                           TransmitCoilManufacturerName="")]
    shared.MRFOVGeometrySequence = [_item(InPlanePhaseEncodingDirection="ROW",
                                          MRAcquisitionFrequencyEncodingSteps=int(array.shape[2]),
                                          MRAcquisitionPhaseEncodingStepsInPlane=int(array.shape[1]),
                                          PercentSampling=100.0, PercentPhaseFieldOfView=100.0)]
    shared.MRAveragesSequence = [_item(NumberOfAverages=1.0)]
    region = _item(CodeValue="12738006", CodingSchemeDesignator="SCT", CodeMeaning="Brain")
    shared.FrameAnatomySequence = [_item(AnatomicRegionSequence=[region], FrameLaterality="U")]
    transform = Dataset()
    transform.RescaleIntercept, transform.RescaleSlope, transform.RescaleType = 0, 1, "US"
    shared.PixelValueTransformationSequence = [transform]
    ds.SharedFunctionalGroupsSequence = [shared]
    organization = generate_uid()
    ds.DimensionOrganizationSequence = [Dataset()]
    ds.DimensionOrganizationSequence[0].DimensionOrganizationUID = organization
    ds.DimensionIndexSequence = []
    for pointer, label in ((0x00209056, "Stack ID"), (0x00209057, "In-Stack Position Number")):
        index = Dataset()
        index.DimensionOrganizationUID = organization
        index.DimensionIndexPointer = pointer
        index.FunctionalGroupPointer = 0x00209111        # FrameContentSequence
        index.DimensionDescriptionLabel = label
        ds.DimensionIndexSequence.append(index)
    per_frame = []
    for k, (_, position) in enumerate(where):
        item = Dataset()
        content = Dataset()
        content.StackID = "1"
        content.InStackPositionNumber = k + 1
        content.DimensionIndexValues = [1, k + 1]
        content.FrameAcquisitionDateTime = ds.AcquisitionDateTime
        content.FrameReferenceDateTime = ds.AcquisitionDateTime
        content.FrameAcquisitionDuration = 100.0
        item.FrameContentSequence = [content]
        item.PlanePositionSequence = [Dataset()]
        item.PlanePositionSequence[0].ImagePositionPatient = position
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.NumberOfFrames = int(array.shape[0])
    _pixels(ds, np.ascontiguousarray(array).astype(np.int16))
    _compress(ds, compression)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _item(**values: Any):
    """A sequence item (pydicom Dataset) with these attributes."""
    from pydicom.dataset import Dataset

    item = Dataset()
    for key, value in values.items():
        setattr(item, key, value)
    return item


def _compress(ds, compression: str | None) -> None:
    """Compress a dataset's pixels in place, losslessly (`COMPRESSIONS`); None leaves them as they are."""
    if compression is None:
        return
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless, JPEGLosslessSV1, RLELossless

    if compression == "rle":
        ds.compress(RLELossless)
        return
    syntax = {"jpeg2000": JPEG2000Lossless, "jpeg-lossless": JPEGLosslessSV1}[compression]
    frames = ds.pixel_array.reshape(-1, int(ds.Rows), int(ds.Columns))
    ds.PixelData = encapsulate([_gdcm_frame(frame, compression) for frame in frames])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = syntax
    ds.LossyImageCompression = "00"


def _gdcm_frame(frame: np.ndarray, compression: str) -> bytes:
    """One frame encoded by GDCM (SimpleITK's DICOM writer) in `compression`, as its codestream."""
    import tempfile

    import pydicom
    import SimpleITK as sitk
    from pydicom.encaps import generate_frames

    with tempfile.TemporaryDirectory() as tmp:
        name = str(Path(tmp) / "frame.dcm")
        writer = sitk.ImageFileWriter()
        writer.SetFileName(name)
        writer.SetUseCompression(True)
        writer.SetCompressor({"jpeg2000": "JPEG2000", "jpeg-lossless": "JPEG"}[compression])
        writer.Execute(sitk.GetImageFromArray(frame[None].astype(np.int16)))
        encoded = pydicom.dcmread(name)
        return next(generate_frames(encoded.PixelData, number_of_frames=1))


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
    """Set 16-bit signed pixels of one frame (y, x) or of frames (z, y, x)."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(frame.shape[-2]), int(frame.shape[-1])
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
