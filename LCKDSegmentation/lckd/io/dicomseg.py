"""A labelmap as a DICOM Segmentation (SEG) object, written with highdicom.

One segment per tumour class (NCR, ED, ET), coded with the SNOMED CT codes of the Slicer
terminology (`lckd.base.segments`), on the reference series' frames: the SEG references
that series' instances and Frame of Reference and copies its patient and study attributes
(highdicom does). The new series says research use only; the segments name the algorithm
(name, version, the weights' sha256) and the content description carries the run's quality
estimate. The file is written under a temporary name, read back with highdicom and compared
voxel for voxel with the labelmap before it takes its name (`lckd.io.atomicwrite`).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import SimpleITK as sitk

from ..base.errors import OutputError
from ..base.segments import CONVENTIONS, SEGMENTS, TERMINOLOGY_CATEGORY
from .atomicwrite import atomic_path
from .pathcheck import shown_path

PathLike = Union[str, "os.PathLike[str]"]

#: The new series' description (DICOM LO: at most 64 characters).
SERIES_DESCRIPTION = "LCKD tumour segmentation - RESEARCH USE ONLY"
SERIES_NUMBER = 9901
CONTENT_LABEL = "LCKD_TUMOUR"


def segment_numbers(labelmap: np.ndarray, convention: str) -> np.ndarray:
    """The labelmap's class values as SEG segment numbers (1 NCR, 2 ED, 3 ET in `SEGMENTS` order)."""
    values = CONVENTIONS[convention]
    out = np.zeros(labelmap.shape, dtype=np.uint8)
    for number, info in enumerate(SEGMENTS, start=1):
        out[labelmap == values[info.key]] = number
    return out


def write_dicom_seg(labelmap: sitk.Image, source_files: Sequence[PathLike], path: PathLike, *,
                    convention: str = "brats2018", model: Mapping[str, Any] | None = None,
                    description: str = "") -> Path:
    """Write `labelmap` (on the grid of the series `source_files`, in slice order) as a DICOM SEG
    at `path`, atomically; `model` is the model record (name, version, weights_sha256) and
    `description` the content description (the quality estimate). Returns the path."""
    p = Path(os.path.expanduser(str(path)))
    with atomic_path(p, "DICOM SEG") as tmp:
        write_dicom_seg_file(labelmap, source_files, tmp, convention=convention, model=model,
                             description=description, shown=p)
    return p


def write_dicom_seg_file(labelmap: sitk.Image, source_files: Sequence[PathLike], tmp: PathLike, *,
                         convention: str = "brats2018", model: Mapping[str, Any] | None = None,
                         description: str = "", shown: PathLike | None = None) -> None:
    """Write the SEG into the temporary file `tmp` (from `atomic_path`) and verify it by reading it back."""
    import highdicom as hd
    import pydicom

    label = f"cannot write DICOM SEG '{shown_path(shown if shown is not None else tmp)}'"
    sources = [pydicom.dcmread(str(f), stop_before_pixels=True) for f in source_files]
    mask = storage_order(segment_numbers(sitk.GetArrayViewFromImage(labelmap), convention), source_files)
    frames = sum(int(getattr(ds, "NumberOfFrames", 1) or 1) for ds in sources)
    if mask.shape != (frames, int(sources[0].Rows), int(sources[0].Columns)):
        raise OutputError(f"{label}: the labelmap ({'x'.join(map(str, mask.shape[::-1]))} voxels) is not on the "
                          f"grid of its DICOM reference series ({sources[0].Columns}x{sources[0].Rows}x{frames})")
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=mask, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(model or {}),
        series_instance_uid=hd.UID(), series_number=SERIES_NUMBER, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="LCKDSegmentation", manufacturer_model_name=str((model or {}).get("name") or "LCKD")[:64],
        software_versions=_software_version(), device_serial_number="none",
        content_description=(description or "LCKD segmentation")[:64], content_label=CONTENT_LABEL,
        series_description=SERIES_DESCRIPTION)
    try:
        seg.save_as(str(tmp))
    except OSError as e:
        raise OutputError(f"{label}: {e.strerror or e}") from None
    back = read_dicom_seg(tmp, sources)
    if back is None or not np.array_equal(back, mask):
        raise OutputError(f"{label}: the written file does not read back as the labelmap (is the disk full?)")


def storage_order(mask: np.ndarray, source_files: Sequence[PathLike]) -> np.ndarray:
    """`mask` (slices in order along the normal, as the reader gives them) in the frame order of
    its source: a multi-frame file's frames as stored (they may run the other way); single-frame
    files are given in slice order already."""
    if len(source_files) != 1 or mask.shape[0] < 2:
        return mask
    from .dicomseries import frame_order

    order = frame_order(source_files[0])     # storage index of each slice in reading order
    if order is None or len(order) != mask.shape[0]:
        return mask
    out = np.empty_like(mask)
    out[order] = mask
    return out


def segment_descriptions(model: Mapping[str, Any]) -> list:
    """The three SEG segment descriptions, with the Slicer terminology's codes and the algorithm."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    parameters = {"weights_sha256": str(model.get("weights_sha256") or "unknown")}
    algorithm = hd.AlgorithmIdentificationSequence(
        name=str(model.get("name") or "LCKD")[:64], version=str(model.get("version") or "unknown")[:64],
        family=codes.cid7162.ArtificialIntelligence, parameters=parameters)
    scheme, value, meaning = TERMINOLOGY_CATEGORY
    category = Code(value, scheme, meaning)
    return [hd.seg.SegmentDescription(
        segment_number=number, segment_label=info.name[:64], segmented_property_category=category,
        segmented_property_type=Code(info.type_code[1], info.type_code[0], info.type_code[2]),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
        tracking_uid=hd.UID(), tracking_id=info.key) for number, info in enumerate(SEGMENTS, start=1)]


def read_dicom_seg(path: PathLike, sources: Sequence[Any]) -> np.ndarray | None:
    """A SEG's segment numbers on the frames of `sources` (datasets in slice order), or None if unreadable."""
    import highdicom as hd

    try:
        seg = hd.seg.segread(str(path))
        uids = [str(ds.SOPInstanceUID) for ds in sources]
        if len(sources) == 1 and int(getattr(sources[0], "NumberOfFrames", 1) or 1) > 1:
            frames = list(range(1, int(sources[0].NumberOfFrames) + 1))
            # frames without any segment are left out of the SEG: they read back as zeros
            return np.asarray(seg.get_pixels_by_source_frame(uids[0], frames, combine_segments=True,
                                                             skip_overlap_checks=True,
                                                             assert_missing_frames_are_empty=True))
        return np.asarray(seg.get_pixels_by_source_instance(uids, combine_segments=True,
                                                            skip_overlap_checks=True))
    except Exception:   # noqa: BLE001 - any failure to read back is the same answer: not written whole
        return None


def seg_reads_back(path: PathLike) -> bool:
    """True when `path` is a complete DICOM SEG (highdicom reads it and its frames decode)."""
    import highdicom as hd

    try:
        seg = hd.seg.segread(str(path))
        return int(getattr(seg, "NumberOfFrames", 0) or 0) > 0 and seg.pixel_array.size > 0
    except Exception:   # noqa: BLE001 - any failure to read is the same answer: not complete
        return False


def _software_version() -> str:
    from .. import __version__

    return f"lckd {__version__}"
