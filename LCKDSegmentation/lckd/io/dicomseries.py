"""Finding the image series of a DICOM study folder from the headers alone (no pixel data read).

`find_series` walks a folder (nested folders, with or without a DICOMDIR, files with or without
an extension), keeps the files that are DICOM (preamble + "DICM"; anything else is ignored),
and groups the image instances into series: by SeriesInstanceUID, split where the orientation
or the matrix size changes (a three-plane localizer is three groups). Each group is a
`SeriesInfo`: the attributes the recogniser (`lckd.io.dicomroles`) judges by, the files in
slice order, and what is wrong with the stack (a missing slice, repeated positions).
Nothing identifying (patient name, ID, birth date) is kept.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..base.errors import InputError
from .pathcheck import shown_path

#: Media Storage Directory (DICOMDIR): an index of the files, not an image.
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
#: The slice-spacing rule, one for the recogniser and the reader (`slice_gaps`): gaps within this
#: fraction of the median gap are even; a gap of MISSING_GAP x the median or more is a missing
#: slice (refused, the gap named); one under CROWDED_GAP x the median means mixed acquisitions
#: (refused); anything between is an uneven stack, read resampled onto even spacing with a warning.
GAP_TOLERANCE = 0.1
MISSING_GAP = 1.5
CROWDED_GAP = 0.5


@dataclass
class SeriesInfo:
    """One image series (or one orientation / matrix of a series) of a study, from its headers."""

    uid: str
    label: str                         # series number as text ("5"; "5.2" for the second part of a split series)
    number: int | None
    description: str
    files: list = field(default_factory=list)        # paths in slice order (one file for multi-frame)
    attributes: dict = field(default_factory=dict)   # the header values the recogniser reads (`HEADER_KEYS`)
    slices: int = 0
    rows: int = 0
    columns: int = 0
    spacing: tuple = ()               # (row, column, slice) mm, slice spacing from the positions
    multiframe: bool = False
    problem: str = ""                 # what makes the stack unreadable as one volume ('' if nothing)

    def name(self) -> str:
        """'series 5 'AX T2 FLAIR'' as every message names it (no UID unless there is no number)."""
        text = f"series {self.label}" if self.number is not None else f"series {self.uid}"
        return text + (f" '{self.description}'" if self.description else "")

    @property
    def time(self) -> float | None:
        """Acquisition (else series) time in seconds since midnight, or None."""
        for key in ("AcquisitionTime", "SeriesTime", "ContentTime"):
            seconds = _seconds(self.attributes.get(key))
            if seconds is not None:
                return seconds
        return None

    @property
    def voxel_volume(self) -> float:
        out = 1.0
        for v in self.spacing or (1.0, 1.0, 1.0):
            out *= float(v)
        return out


#: Header attributes kept for the recogniser (top level, or inside an enhanced file's functional groups).
HEADER_KEYS = ("Modality", "SOPClassUID", "ImageType", "SeriesDescription", "ProtocolName", "SequenceName",
               "PulseSequenceName", "ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType",
               "RepetitionTime", "EchoTime", "EffectiveEchoTime", "InversionTime", "InversionTimes",
               "ContrastBolusAgent", "ContrastBolusIngredient", "ContrastBolusVolume", "ContrastBolusStartTime",
               "ContrastBolusAgentAdministered", "AcquisitionContrast", "DiffusionBValue", "DiffusionDirectionality",
               "ConversionType", "Manufacturer", "AcquisitionTime", "SeriesTime", "ContentTime",
               "NumberOfTemporalPositions", "ImageComments", "BurnedInAnnotation")


def starts_like_dicom(path: str | Path) -> bool:
    """True for a regular file with the DICOM preamble's magic ("DICM" at byte 128).

    Only regular files are opened: opening a named pipe would wait for a writer forever."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as fh:
            return fh.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def dicom_files(folder: str | Path) -> Iterator[Path]:
    """Every file under `folder` (recursively, in name order) that starts like DICOM."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            if not name.startswith(".") and starts_like_dicom(path):
                yield path


def find_series(folder: str | Path) -> list[SeriesInfo]:
    """The image series under `folder`, in series-number order; `InputError` when there are none."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"study '{shown_path(folder)}' is not a folder")
    series = series_from_files(dicom_files(root))
    if not series:
        raise InputError(f"study '{shown_path(folder)}' holds no DICOM image series (sub-folders searched)")
    return series


def series_from_files(paths) -> list[SeriesInfo]:
    """The image series of these DICOM files (the files of a study folder, or those behind the volumes
    Slicer's DICOM module loaded), in series-number order; files that are not DICOM images are skipped.
    Two series that share a number (two studies) are labelled '5' and '5-2'."""
    import pydicom

    groups: dict[tuple, list[tuple[Path, Any]]] = {}
    for path in map(Path, paths):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:   # noqa: BLE001 - a damaged file is one file less, named below if it matters
            continue
        if str(getattr(ds.file_meta, "MediaStorageSOPClassUID", "")) == DICOMDIR_CLASS:
            continue
        uid = str(ds.get("SeriesInstanceUID", ""))
        if not uid or "Rows" not in ds:
            continue   # not an image (structured report, presentation state, ...)
        groups.setdefault((uid, _orientation(ds), int(ds.Rows), int(ds.Columns)), []).append((path, ds))
    parts: dict[str, int] = {}
    for key in groups:
        parts[key[0]] = parts.get(key[0], 0) + 1
    seen: dict[str, int] = {}
    series = []
    for key, members in groups.items():
        seen[key[0]] = seen.get(key[0], 0) + 1
        series.append(_series(key, members, seen[key[0]] if parts[key[0]] > 1 else 0))
    series.sort(key=lambda s: (s.number if s.number is not None else 1 << 30, s.label, s.uid))
    owner: dict[str, str] = {}
    for s in series:
        if owner.setdefault(s.label, s.uid) != s.uid:
            k = 2
            while f"{s.label}-{k}" in owner:
                k += 1
            s.label = f"{s.label}-{k}"
            owner[s.label] = s.uid
    return series


def _series(key: tuple, members: list, part: int) -> SeriesInfo:
    import numpy as np

    uid, orientation, rows, columns = key
    first = members[0][1]
    number = _int(first.get("SeriesNumber"))
    label = (str(number) if number is not None else uid) + (f".{part}" if part else "")
    attributes = header_values(first)
    info = SeriesInfo(uid=uid, label=label, number=number, description=str(first.get("SeriesDescription", "")).strip(),
                      attributes=attributes, rows=rows, columns=columns)
    multiframe = len(members) == 1 and _int(first.get("NumberOfFrames")) not in (None, 1)
    normal = np.cross(orientation[:3], orientation[3:]) if len(orientation) == 6 else None
    pixel = [float(v) for v in (first.get("PixelSpacing") or _nested(first, "PixelSpacing") or (1.0, 1.0))]
    if multiframe:
        info.multiframe = True
        info.files = [members[0][0]]
        positions = _frame_positions(first)
        info.slices = _int(first.get("NumberOfFrames")) or 0
    else:
        positions = [_position(ds) for _, ds in members]
        order = sorted(range(len(members)), key=lambda i: (float(np.dot(normal, positions[i]))
                                                           if normal is not None and positions[i] is not None
                                                           else float(_int(members[i][1].get("InstanceNumber")) or i)))
        info.files = [members[i][0] for i in order]
        positions = [positions[i] for i in order]
        info.slices = len(members)
    where = [float(np.dot(normal, p)) for p in positions if p is not None] if normal is not None else []
    info.spacing = (pixel[0], pixel[1], _slice_spacing(where, first))
    info.problem = _stack_problem(where, info.slices)
    return info


def header_values(ds) -> dict:
    """The `HEADER_KEYS` values of a dataset as plain Python values (found at the top level or in
    the shared / first per-frame functional groups of an enhanced file)."""
    out = {}
    for key in HEADER_KEYS:
        value = ds.get(key)
        if value is None or value == "":
            value = _nested(ds, key)
        if value is None or value == "":
            continue
        out[key] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    from pydicom.multival import MultiValue

    if isinstance(value, (MultiValue, list, tuple)):
        return tuple(_plain(v) for v in value)
    if isinstance(value, (int, float)):
        return value
    try:
        return float(value) if type(value).__name__ in ("DSfloat", "DSdecimal", "IS") else str(value).strip()
    except (TypeError, ValueError):
        return str(value)


def _nested(ds, keyword: str) -> Any:
    """`keyword` inside the first item of an enhanced file's functional groups (shared first)."""
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        seq = ds.get(groups)
        if not seq:
            continue
        for element in seq[0]:
            if element.VR != "SQ":
                continue
            for item in element.value[:1]:
                if keyword in item:
                    return item.get(keyword)
    return None


def _orientation(ds) -> tuple:
    value = ds.get("ImageOrientationPatient") or _nested(ds, "ImageOrientationPatient")
    try:
        return tuple(round(float(v), 3) for v in value)
    except (TypeError, ValueError):
        return ()


def _position(ds) -> Any:
    import numpy as np

    value = ds.get("ImagePositionPatient")
    try:
        return np.array([float(v) for v in value])
    except (TypeError, ValueError):
        return None


def _frame_positions(ds) -> list:
    import numpy as np

    out: list = []
    for item in ds.get("PerFrameFunctionalGroupsSequence") or []:
        plane = item.get("PlanePositionSequence")
        try:
            out.append(np.array([float(v) for v in plane[0].ImagePositionPatient]))
        except (TypeError, AttributeError, IndexError, ValueError):
            out.append(None)
    return out


def _slice_spacing(where: list, ds) -> float:
    import numpy as np

    diffs = np.diff(np.sort(np.asarray(where, dtype=float))) if len(where) > 1 else np.zeros(0)
    gaps = [float(g) for g in diffs if g > 1e-3]
    if gaps:
        return float(np.median(gaps))
    return float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0)


def _stack_problem(where: list, count: int) -> str:
    """A missing slice, crowded slices or repeated positions, in words ('' when the stack is readable:
    even, or uneven within the rule of `slice_gaps`, which the reader resamples)."""
    import numpy as np

    if len(where) < 3:
        return ""
    positions = np.sort(np.asarray(where, dtype=float))
    distinct = len(np.unique(np.round(positions, 2)))
    if distinct < count:
        return f"{count} images at {distinct} positions (several volumes: dynamic, multi-echo or perfusion)"
    kind, text = slice_gaps(positions)
    if kind == "missing":
        worst, median = float(np.max(np.diff(positions))), float(np.median(np.diff(positions)))
        return f"{max(round(worst / median) - 1, 1)} slice(s) missing: {text}"
    if kind == "crowded":
        return f"uneven slices: {text}"
    return ""


def slice_gaps(where) -> tuple[str, str]:
    """Judge a stack's slice positions (mm along the normal, sorted): ('even' | 'uneven' | 'missing' |
    'crowded', the gap in words). The rule: `GAP_TOLERANCE`, `MISSING_GAP`, `CROWDED_GAP`."""
    import numpy as np

    gaps = np.diff(np.asarray(where, dtype=float))
    if len(gaps) < 2:
        return "even", ""
    median = float(np.median(gaps))
    if median <= 0:
        return "even", ""
    worst = float(gaps[np.argmax(np.abs(gaps - median))])
    text = f"a gap of {worst:.3g} mm where the others are {median:.3g} mm"
    if float(gaps.max()) >= MISSING_GAP * median:
        worst = float(gaps.max())
        return "missing", f"a gap of {worst:.3g} mm where the others are {median:.3g} mm"
    if float(gaps.min()) < CROWDED_GAP * median:
        return "crowded", f"a gap of {float(gaps.min()):.3g} mm where the others are {median:.3g} mm"
    if abs(worst - median) > GAP_TOLERANCE * median:
        return "uneven", text
    return "even", ""


def frame_positions(path) -> list | None:
    """Each frame's ImagePositionPatient (storage order) of a multi-frame file, from its per-frame
    functional groups; None when it has none (or the file is not multi-frame)."""
    found = _frame_layout(path)
    return None if found is None else found[1]


def frame_order(path) -> list[int] | None:
    """The storage indices of a multi-frame file's frames in order along the (right-handed) normal of
    their rows and columns, as the reader puts them; None when the file has no frame geometry."""
    import numpy as np

    found = _frame_layout(path)
    if found is None or len(found[0]) != 6:
        return None
    orientation, positions = found
    normal = np.cross(orientation[:3], orientation[3:])
    return [int(i) for i in np.argsort(np.asarray(positions) @ normal, kind="stable")]


def _frame_layout(path) -> tuple[list, list] | None:
    """(ImageOrientationPatient, per-frame positions) of a multi-frame file, or None."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception:   # noqa: BLE001 - unreadable here: the pixel reader names the problem
        return None
    positions = _frame_positions(ds)
    if len(positions) < 2 or any(p is None for p in positions):
        return None
    value = ds.get("ImageOrientationPatient") or _nested(ds, "ImageOrientationPatient") or ()
    try:
        orientation = [float(v) for v in value]
    except (TypeError, ValueError):
        orientation = []
    return orientation, [[float(v) for v in p] for p in positions]


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _seconds(value: Any) -> float | None:
    text = str(value or "").strip()
    if len(text) < 4 or not text[:4].isdigit():
        return None
    try:
        hours, minutes = int(text[:2]), int(text[2:4])
        seconds = float(text[4:]) if len(text) > 4 else 0.0
    except ValueError:
        return None
    return hours * 3600 + minutes * 60 + seconds

