"""Reading and writing images with one-line errors (writes through `lckd.io.atomicwrite`).

`read_image` accepts NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) or a
folder holding one DICOM series, and returns a scalar 3D float32 image with its geometry.
It checks the *shape* of what it read (3D, one component, complete file); the *values*
(NaN, empty, label-map-like) are checked by `lckd.inference.inputchecks`.

Every output the package writes goes through `atomic_path` (`lckd.io.atomicwrite`, re-exported
here), so an interrupted or failed write never leaves a partial file under the final name.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import os
import stat
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Union

import SimpleITK as sitk

from ..base.errors import InputError, OutputError, itk_error_detail

# Re-exported: `from lckd.io.imageio import atomic_path, shown_path ...` keeps working.
from .atomicwrite import STALE_TEMP_SECONDS as STALE_TEMP_SECONDS
from .atomicwrite import TEMP_NAME_EXTRA as TEMP_NAME_EXTRA
from .atomicwrite import atomic_path as atomic_path
from .atomicwrite import free_bytes, no_space_reason, os_reason
from .atomicwrite import probe_writable as probe_writable
from .atomicwrite import remove_stale_temps as remove_stale_temps
from .atomicwrite import stale_temp_pattern as stale_temp_pattern
from .dicomseries import starts_like_dicom
from .filetypes import FORMAT_NAMES, FORMATS_TEXT, WRITE_SUFFIXES, format_extension, special_file_kind
from .headerfiles import data_file_problem, direction_problem, shear_problem, sibling_problem
from .niftiblock import is_nifti, nifti_header_file, scan_nifti
from .pathcheck import check_path_text as check_path_text
from .pathcheck import path_text
from .pathcheck import printable as printable
from .pathcheck import shown_path as shown_path
from .stacks import StackChannel as StackChannel

PathLike = Union[str, "os.PathLike[str]"]


# ----------------------------------------------------------------------------- reading

@contextlib.contextmanager
def quiet_c_libraries() -> Iterator[None]:
    """Hide what ITK and the C libraries under it print on stderr meanwhile (file descriptor 2,
    and ITK's warning display): our one line says what went wrong instead.

    MetaImage prints "MetaImage: M_ReadElementsData: data not read completely", niftilib
    "** ERROR: nifti_convert_nhdr2nim: bad dim[0]", ITK "WARNING: ... unexpected scales in
    sform", niftilib on a full disk "** ERROR: NWAD: wrote only N of M bytes". Nested uses are safe.
    """
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        try:
            yield
        finally:
            sitk.ProcessObject.SetGlobalWarningDisplay(shown)
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def read_image(path: PathLike | sitk.Image, what: str = "image", *, series: str | None = None) -> sitk.Image:
    """Read a scalar 3D image (file or DICOM series folder) as float32, keeping its geometry.

    `what` names the input in error messages (e.g. "FLAIR"). For a folder with several
    DICOM series, `series` picks one by its SeriesInstanceUID; otherwise the folder must
    hold exactly one. Raises `InputError` with one line naming `what` and the path.
    """
    if isinstance(path, sitk.Image):  # an image already in memory (console / Slicer callers)
        return _as_float(_as_scalar_3d(path, f"{what} image"))
    channel = path if isinstance(path, StackChannel) else None
    label = f"{what} '{shown_path(path)}'" + (f" (channel {channel.index + 1} of {channel.count})" if channel else "")
    # Before any file-system call: a NUL byte or a lone surrogate would raise deep inside os.
    check_path_text(path, label)
    p = Path(os.path.expanduser(path_text(path)))
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise InputError(f"{label} does not exist") from None
    except OSError as exc:
        raise InputError(f"{label} cannot be opened ({os_reason(exc)})") from None
    if channel is not None and stat.S_ISREG(mode):
        st = p.stat()
        with quiet_c_libraries():
            stack = _read_stack(str(p), st.st_mtime_ns, st.st_size, channel.count, f"'{shown_path(p)}'")
        return stack[channel.index]
    kind = special_file_kind(mode)
    if kind:
        # A named pipe would block the reader forever; a device is never an image file.
        raise InputError(f"{label} is {kind}, not a regular file; give an image file or a DICOM folder")
    with quiet_c_libraries():
        image = _read_dicom_folder(p, label, series) if stat.S_ISDIR(mode) else _read_file(p, label)
    image = _as_scalar_3d(image, label)
    return _as_float(image)


@functools.lru_cache(maxsize=1)
def _read_stack(path: str, mtime_ns: int, size: int, count: int, label: str) -> tuple:
    """The `count` channels of a 4D (or vector) file as float32 3D images; the file is read once for
    all of its channels (the cache key holds its modification time and size)."""
    image = _read_file(Path(path), label, channels=count)
    if image.GetDimension() == 4:
        size4 = list(image.GetSize())
        parts = [sitk.Extract(image, size4[:3] + [0], [0, 0, 0, i]) for i in range(count)]
    else:
        parts = [sitk.VectorIndexSelectionCast(image, i) for i in range(count)]
    return tuple(sitk.Cast(_as_scalar_3d(img, f"{label} channel {i + 1}"), sitk.sitkFloat32)
                 for i, img in enumerate(parts))


def check_stack_shape(dimension: int, size: tuple, components: int, count: int, label: str) -> None:
    """Refuse a file read as `count` stacked scans whose shape says otherwise (one line, both numbers)."""
    found = int(size[3]) if dimension == 4 else components if components > 1 else 1
    if dimension == 4 and components > 1:
        raise InputError(f"{label} is a 4D image of {components}-component voxels; a stack of scalar scans is "
                         "needed")
    if found == 1 and dimension <= 3:
        raise InputError(f"{label} is a single 3D scan, not a stack of {count} channels: give it as --t1, --t1ce, "
                         "--t2 or --flair")
    if found != count:
        raise InputError(f"{label} holds {found} channels but {count} channel names were given: name every "
                         "channel, in the file's order (the Medical Segmentation Decathlon's is FLAIR,T1,T1ce,T2)")
    check_shape(3, tuple(size[:3]), 1, label)


def stack_channel_count(path: PathLike) -> int | None:
    """How many scans a file holds as channels (4D with more than one volume, or vector voxels),
    from its header alone; None for a plain 3D scan or a file whose header cannot be read."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(path_text(path))
    try:
        with quiet_c_libraries():
            reader.ReadImageInformation()
    except RuntimeError:
        return None
    if reader.GetDimension() == 4 and reader.GetSize()[3] > 1:
        return int(reader.GetSize()[3])
    if reader.GetDimension() == 3 and reader.GetNumberOfComponents() > 1:
        return int(reader.GetNumberOfComponents())
    return None


def _read_file(p: Path, label: str, channels: int | None = None) -> sitk.Image:
    if not os.access(p, os.R_OK):
        # Only reached for non-root users; root reads anything.
        raise InputError(f"{label} cannot be read (permission denied)")
    # What the header would make ITK read besides the named file, or read differently:
    # refused before ITK opens anything (lckd.io.headerfiles).
    sibling = sibling_problem(p)
    if sibling:
        raise InputError(f"{label} is ambiguous: {sibling}")
    for problem in (data_file_problem(p), shear_problem(p)):
        if problem:
            raise InputError(f"{label} {problem}" if problem.startswith("has ") else f"{label}: {problem}")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        # Header first: refuses wrong shapes without loading the voxels.
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"{label} {_summarise_read_error(exc, p.name)}") from None
    # A lone DICOM file is one slice of a series: say so when refusing it as 2D.
    is_dicom = any("|" in key for key in reader.GetMetaDataKeys())
    if channels is None:
        check_shape(reader.GetDimension(), tuple(reader.GetSize()), reader.GetNumberOfComponents(), label,
                    reader.GetPixelID(), hint="give the folder of the whole DICOM series" if is_dicom else "")
    else:
        check_stack_shape(reader.GetDimension(), tuple(reader.GetSize()), reader.GetNumberOfComponents(),
                          channels, label)
    check_spacing(reader.GetSpacing()[:3], label)
    check_direction(reader.GetDirection(), reader.GetDimension(), label)
    _check_declared_size(reader, label)
    # ITK's NIfTI reader zero-fills a truncated file and sets NaN and infinite voxels to 0, and its
    # NRRD reader ignores a cut gzip stream, without complaint; check ourselves.
    _check_nifti_block(p, label)
    problem = _nrrd_truncation(p) if _is_nrrd(p) else None
    if problem:
        raise InputError(f"{label} is corrupt or truncated ({problem})")
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"{label} {_summarise_read_error(exc)}") from None


def _check_nifti_block(p: Path, label: str) -> None:
    """Refuse a NIfTI file (or pair) whose voxel block is cut short or holds NaN or infinite values,
    read from the bytes on disk (`lckd.io.niftiblock`): ITK's reader hides both."""
    header = nifti_header_file(p)
    scan = None if header is None else scan_nifti(header)
    if scan is None:
        return
    if scan.problem:
        raise InputError(f"{label} is corrupt or truncated ({scan.problem})")
    if scan.nan or scan.inf:
        raise InputError(f"{label} {nonfinite_problem(scan.nan, scan.inf, scan.voxels)}")


def nonfinite_problem(n_nan: int, n_inf: int, total: int) -> str:
    """The words for NaN or infinite voxels, one rule for every format: 'has 8 NaN and 1 infinite
    voxel values (of 1000); fix or re-export the image' (after the file's label)."""
    parts = [f"{n} {kind}" for n, kind in ((n_nan, "NaN"), (n_inf, "infinite")) if n]
    return (f"has {' and '.join(parts)} voxel value{'s' if n_nan + n_inf > 1 else ''} (of {total}); fix or "
            "re-export the image")


def _check_declared_size(reader: sitk.ImageFileReader, label: str) -> None:
    """Refuse a header that declares more voxels than memory allows, before ITK allocates them.

    A few bytes of header can declare terabytes (e.g. a MetaImage with DimSize 30000^3);
    reading would allocate that much before finding the data missing. Reading needs the
    voxels as stored plus their float32 copy.
    """
    from ..base.optionchecks import MEMORY_ENV, memory_limit

    count = reader.GetNumberOfComponents()
    for s in reader.GetSize():
        count *= int(s)
    stored = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    per = 8 if "64" in stored or "double" in stored else 4
    need = count * (per + 4)
    limit, source = memory_limit()
    if need > limit:
        raise InputError(f"{label} declares {_size_text(reader.GetSize())} voxels, {need / 1e9:.3g} GB to read, "
                         f"above the memory limit of {limit / 1e9:.3g} GB ({source}; raise it with "
                         f"${MEMORY_ENV})")


def _read_dicom_folder(p: Path, label: str, series: str | None) -> sitk.Image:
    # GDCM prints "No Series were found" on stderr for non-DICOM folders; we say it better.
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        ids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(p)))
    except RuntimeError:
        ids = []
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    if not ids:
        raise InputError(f"{label} is a folder without a DICOM series (sub-folders are not searched); "
                         f"give a {FORMATS_TEXT}")
    stray = _unreadable_dicom_files(p, ids)
    if stray:
        raise InputError(f"{label} holds {len(stray)} DICOM file(s) that belong to no readable series "
                         f"(truncated or corrupt?), e.g. '{printable(Path(stray[0]).name)}'; the series would be "
                         "read without them")
    if series is not None:
        if series not in ids:
            raise InputError(f"{label} has no DICOM series '{series}' (it holds: {', '.join(ids)})")
        ids = [series]
    if len(ids) > 1:
        counts = [len(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(p), sid)) for sid in ids]
        listing = ", ".join(f"{sid} ({n} files)" for sid, n in zip(ids, counts))
        raise InputError(f"{label} holds {len(ids)} DICOM series: {listing}; give the folder of one series "
                         "(or choose one by its series UID)")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(p), ids[0])
    return read_dicom_files(files, f"{label} DICOM series {ids[0]}")


def read_dicom_files(files, label: str) -> sitk.Image:
    """Read the DICOM files of one series (single-frame slices in order along their normal, or one
    multi-frame file) as one volume; `label` names the series in errors ("T1ce series 5").

    The one DICOM pixel reader: a series folder (`read_image`) and a series found in a study
    (`lckd.io.dicomstudy`) both come here. A multi-frame (enhanced) file's frames are put in order
    along their normal and placed by their own positions (per-frame functional groups). The slice
    spacing follows `lckd.io.dicomseries.slice_gaps`: a missing slice (a gap of 1.5 x the median or
    more) or crowded slices are refused with the gap named; an uneven stack within that is resampled
    onto even spacing, with a warning naming the spacings (`read_note`). A gantry tilt (slices
    stepping sideways: sheared) is refused with the tilt named.
    """
    files = [str(f) for f in files]
    # ITK only warns (on stderr) about missing or uneven slices; _even_slices judges them instead.
    try:
        with quiet_c_libraries():
            if len(files) == 1:
                image = sitk.ReadImage(files[0])
            else:
                reader = sitk.ImageSeriesReader()
                reader.SetFileNames(files)
                image = reader.Execute()
            positions = _slice_positions(files)
    except RuntimeError as exc:
        raise InputError(f"{label} {_summarise_read_error(exc)}") from None
    if len(files) == 1 and image.GetDimension() == 3 and image.GetSize()[2] > 1:
        from .dicomseries import frame_positions

        positions = frame_positions(files[0])
        if positions is not None and len(positions) != image.GetSize()[2]:
            positions = None
    tilt = _tilted_slices(positions, image)
    if tilt:
        raise InputError(f"{label} {tilt}")
    return _even_slices(image, positions, label)


#: Metadata key of a note a reader leaves on the image it returns (e.g. that uneven slices were
#: resampled); `lckd.inference.inputchecks` reports it as a warning naming the input.
READ_NOTE_KEY = "lckd_read_note"


def read_note(image: sitk.Image) -> str | None:
    """The reader's note on `image` (`READ_NOTE_KEY`), or None."""
    return image.GetMetaData(READ_NOTE_KEY) if image.HasMetaDataKey(READ_NOTE_KEY) else None


def _as_float(image: sitk.Image) -> sitk.Image:
    """`image` as float32, keeping the reader's note (a cast drops the metadata)."""
    out = sitk.Cast(image, sitk.sitkFloat32)
    note = read_note(image)
    if note:
        out.SetMetaData(READ_NOTE_KEY, note)
    return out


def _even_slices(image: sitk.Image, positions, label: str) -> sitk.Image:
    """The volume with its slices in order along the normal on even spacing (see `read_dicom_files`)."""
    import numpy as np

    from .dicomseries import slice_gaps

    if positions is None or len(positions) < 3:
        return image
    direction = np.array(image.GetDirection()).reshape(3, 3)
    # Slices go along the right-handed normal of the rows and columns (GDCM points a multi-frame
    # file's third axis along its storage order, which may be reversed: a left-handed matrix).
    normal = np.cross(direction[:, 0], direction[:, 1])
    flipped = float(direction[:, 2] @ normal) < 0
    direction[:, 2] = normal
    pos = np.asarray(positions, float)
    where = pos @ normal
    order = np.argsort(where, kind="stable")
    where = where[order]
    kind, gap = slice_gaps(where)
    if kind in ("missing", "crowded"):
        raise InputError(f"{label} has unevenly spaced slices ({gap}): a slice is missing "
                         "or the series mixes acquisitions")
    spacing = list(image.GetSpacing())
    step = float((where[-1] - where[0]) / (len(where) - 1))
    in_order = bool(np.all(order == np.arange(len(order))))
    if kind == "even" and in_order and not flipped and abs(spacing[2] - step) <= 1e-3 * step:
        return image
    array = sitk.GetArrayFromImage(image)[order]
    note = None
    if kind == "uneven":
        gaps = np.diff(where)
        targets = where[0] + step * np.arange(len(where))
        below = np.clip(np.searchsorted(where, targets, side="right") - 1, 0, len(where) - 2)
        weight = ((targets - where[below]) / gaps[below]).astype(np.float32)[:, None, None]
        array = array[below].astype(np.float32) * (1 - weight) + array[below + 1].astype(np.float32) * weight
        shown = ", ".join(f"{g:.3g}" for g in sorted({round(float(g), 2) for g in gaps})[:6])
        note = (f"has unevenly spaced slices ({gap}; gaps of {shown} mm): resampled onto an even "
                f"{step:.3g} mm spacing")
    out = sitk.GetImageFromArray(array)
    out.SetSpacing((spacing[0], spacing[1], step))
    out.SetDirection(tuple(float(v) for v in direction.ravel()))
    out.SetOrigin(tuple(float(v) for v in pos[order[0]]))
    if note:
        out.SetMetaData(READ_NOTE_KEY, note)
    return out


def _unreadable_dicom_files(folder: Path, ids: list) -> list:
    """Files of `folder` that start like DICOM (preamble + 'DICM') but belong to none of the series `ids`.

    GDCM silently leaves out a truncated file, and ITK then reads a volume with one slice
    fewer (only a warning about non-uniform sampling): a different volume, so refuse it.
    """
    listed = {os.path.realpath(f) for sid in ids
              for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid)}
    stray = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith(".") or os.path.realpath(entry.path) in listed:
            continue
        if starts_like_dicom(entry.path):
            stray.append(entry.path)
    return stray


def _slice_positions(files) -> list | None:
    """ImagePositionPatient (x, y, z mm) of each file of a series, or None when a file lacks one."""
    where = []
    for f in files:
        r = sitk.ImageFileReader()
        r.SetFileName(f)
        try:
            r.ReadImageInformation()
            where.append([float(v) for v in r.GetMetaData("0020|0032").split("\\")])
        except (RuntimeError, ValueError):
            return None  # no usable positions: nothing to compare
    return where if all(len(p) == 3 for p in where) else None


#: Sideways drift of the slices (first to last, in the slice plane) accepted as rounding, as a
#: share of the smallest in-plane pixel: more is a tilted (sheared) stack.
TILT_DRIFT_SHARE = 0.5


def _tilted_slices(positions, image: sitk.Image) -> str | None:
    """Describe a gantry tilt: slices that step sideways, not along their normal (a sheared grid), or None.

    ITK reads such a series as an orthogonal volume (its slice spacing becomes the distance
    between positions, the tilt is dropped): every voxel after the first slice is misplaced.
    """
    import math

    import numpy as np

    if positions is None or len(positions) < 2:
        return None
    normal = np.array(image.GetDirection()).reshape(3, 3)[:, 2]
    pos = np.asarray(positions, float)
    pos = pos[np.argsort(pos @ normal)]
    step = pos[-1] - pos[0]
    along = float(step @ normal)
    drift = float(np.linalg.norm(step - along * normal))
    if along <= 0 or drift <= TILT_DRIFT_SHARE * min(image.GetSpacing()[:2]):
        return None
    return (f"is sheared: its slices step {drift:.1f} mm sideways over {abs(along):.0f} mm (a gantry tilt of "
            f"{math.degrees(math.atan2(drift, along)):.1f} deg), which a straight volume cannot hold; resample it "
            "onto an orthogonal grid first (e.g. dcm2niix, or Slicer's DICOM acquisition geometry regularization)")


def _size_text(size) -> str:
    return "x".join(str(int(s)) for s in size)


def check_shape(dimension: int, size: tuple, components: int, label: str, pixel_id: int | None = None,
                hint: str = "") -> None:
    """Refuse anything that is not one scalar 3D volume (2D, 4D+, vector, complex)."""
    if pixel_id is not None and pixel_id in _COMPLEX_IDS:
        raise InputError(f"{label} has complex-valued voxels; a real-valued (magnitude) MR image is needed")
    if components > 1:
        raise InputError(f"{label} has {components} components per voxel (a vector or colour image); "
                         "a single-component (scalar) volume is needed")
    if dimension == 4 and size[3] == 1:
        return  # a 3D volume stored as 4D with one time point: _as_scalar_3d drops the axis
    extended = sum(1 for s in size[:3] if int(s) > 1)
    if extended == 0:
        raise InputError(f"{label} is a single voxel (size {_size_text(size)}); a 3D volume is needed")
    if extended == 1:
        raise InputError(f"{label} is a 1D line of voxels (size {_size_text(size)}); a 3D volume is needed")
    if dimension < 3 or (dimension == 3 and 1 in size):
        raise InputError(f"{label} is a 2D image (size {_size_text(size)}); a 3D volume is needed"
                         + (f" ({hint})" if hint else ""))
    if dimension == 4 and 2 <= int(size[3]) <= 4:
        raise InputError(f"{label} is a 4D image of {int(size[3])} volumes, as a file of scans stacked as "
                         "channels is (the Medical Segmentation Decathlon's layout): give it with --stack FILE "
                         "--channels in the file's order, e.g. --channels FLAIR,T1,T1ce,T2")
    if dimension > 3:
        raise InputError(f"{label} is a {dimension}D image (size {_size_text(size)}); a single 3D volume is "
                         "needed (split the series into 3D volumes first)")


_COMPLEX_IDS = {sitk.sitkComplexFloat32, sitk.sitkComplexFloat64}


def check_spacing(spacing, label: str) -> None:
    """Refuse zero, negative or non-finite voxel spacing (named as such, not as a corrupt file)."""
    import math

    bad = [float(v) for v in spacing if not (math.isfinite(float(v)) and float(v) > 0)]
    if bad:
        raise InputError(f"{label} has an invalid voxel spacing ({'x'.join(f'{float(v):g}' for v in spacing)} mm); "
                         "every spacing must be a positive number")


def check_direction(direction, dimension: int, label: str) -> None:
    """Refuse a sheared (non-orthogonal) direction matrix: one rule for every format and for images in memory.

    ITK's NIfTI reader refuses a sheared sform, its MetaImage and NRRD readers keep or
    straighten one silently; the network and the resampling assume orthogonal axes.
    """
    problem = direction_problem(direction, dimension)
    if problem:
        raise InputError(f"{label} {problem}")


def _as_scalar_3d(image: sitk.Image, label: str) -> sitk.Image:
    check_shape(image.GetDimension(), image.GetSize(), image.GetNumberOfComponentsPerPixel(), label,
                image.GetPixelID())
    check_spacing(image.GetSpacing(), label)
    check_direction(image.GetDirection(), image.GetDimension(), label)
    if image.GetDimension() == 4:
        size = list(image.GetSize())
        image = sitk.Extract(image, size[:3] + [0], [0, 0, 0, 0])
    return image


def _summarise_read_error(exc: RuntimeError, name: str = "") -> str:
    """Turn SimpleITK's multi-line exception text into a short clause for one line."""
    text = str(exc)
    if "Unable to determine ImageIO reader" in text:
        fmt = FORMAT_NAMES.get(format_extension(name).lower())
        if fmt:
            return f"is not a valid {fmt} file (corrupt, or not what its extension says)"
        return f"is not in a format this tool reads (use {FORMATS_TEXT})"
    if "spacing" in text.lower() and ("invalid" in text or "zero" in text.lower()):
        # NRRD's reader refuses zero/negative spacing itself; it is not a corrupt file.
        return "has an invalid voxel spacing (zero, negative or not a number); every spacing must be positive"
    if "orthonormal" in text:
        # The same words as lckd.io.headerfiles uses for MetaImage and NRRD: one rule for all formats.
        return ("has a sheared (non-orthogonal) direction matrix (ITK finds no orthonormal sform or qform); "
                "resample the image onto an orthogonal grid first")
    if "does not exist" in text:
        return "does not exist"
    detail = itk_error_detail(exc)
    # Drop errno left-overs that mislead (MetaImage reports a truncated file as 'No such
    # file or directory').
    if not detail or "No such file" in detail or "Reason:" in detail:
        return "could not be read (corrupt or truncated file)"
    return f"could not be read (corrupt or truncated file: {detail[:120]})"


def _nifti_truncation(p: Path) -> str | None:
    """Describe why a single-file NIfTI holds fewer voxel bytes than its header says, or None."""
    scan = scan_nifti(p, count_nonfinite=False) if is_nifti(p) else None
    return None if scan is None else scan.problem


def _is_nrrd(p: Path) -> bool:
    return p.name.lower().endswith(".nrrd")


_NRRD_TYPE_BYTES = {"signed char": 1, "int8": 1, "int8_t": 1, "uchar": 1, "unsigned char": 1, "uint8": 1,
                    "uint8_t": 1, "short": 2, "short int": 2, "signed short": 2, "signed short int": 2,
                    "int16": 2, "int16_t": 2, "ushort": 2, "unsigned short": 2, "unsigned short int": 2,
                    "uint16": 2, "uint16_t": 2, "int": 4, "signed int": 4, "int32": 4, "int32_t": 4,
                    "uint": 4, "unsigned int": 4, "uint32": 4, "uint32_t": 4, "longlong": 8, "long long": 8,
                    "int64": 8, "int64_t": 8, "ulonglong": 8, "unsigned long long": 8, "uint64": 8,
                    "uint64_t": 8, "float": 4, "double": 8}


def _nrrd_truncation(p: Path) -> str | None:
    """Describe why a single-file NRRD (raw or gzip) holds fewer voxel bytes than it announces, or None."""
    try:
        with open(p, "rb") as fh:
            fields: dict[str, str] = {}
            first = fh.readline(1024)
            if not first.startswith(b"NRRD"):
                return None
            while True:
                line = fh.readline(1 << 16)
                if not line or line in (b"\n", b"\r\n"):
                    break
                text = line.decode("latin-1").strip()
                if ":" in text and not text.startswith("#"):
                    key, _, value = text.partition(":")
                    fields[key.strip().lower()] = value.lstrip("=").strip()
            if "data file" in fields or "datafile" in fields:
                return None  # detached data: ITK reads (and checks) the other file
            sizes = [int(v) for v in fields.get("sizes", "").split()]
            per = _NRRD_TYPE_BYTES.get(fields.get("type", "").lower())
            encoding = fields.get("encoding", "").lower()
            if not sizes or per is None or encoding not in ("raw", "gzip", "gz"):
                return None
            expected = per
            for v in sizes:
                expected *= max(v, 0)
            if encoding == "raw":
                have = p.stat().st_size - fh.tell()
            else:
                inflate = zlib.decompressobj(wbits=47)  # gzip or zlib header
                have = 0
                while True:
                    chunk = fh.read(1 << 22)
                    if not chunk:
                        break
                    have += len(inflate.decompress(chunk))
                if not inflate.eof:
                    return "damaged or incomplete gzip data"
    except (OSError, ValueError, zlib.error):
        return "damaged or incomplete data"
    if have < expected:
        return f"{have} of the {expected} voxel bytes its header announces"
    return None


# ----------------------------------------------------------------------------- writing

def image_writer_target(path: PathLike, what: str = "image") -> Path:
    """Check that `path` has an extension `write_image` can write; return it as a Path."""
    target = Path(os.path.expanduser(str(path)))
    ext = format_extension(target.name).lower()
    if ext not in WRITE_SUFFIXES:
        shown = ext or "(none)"
        raise OutputError(f"cannot write {what} '{shown_path(path)}': unknown image extension {shown} "
                          f"(use {', '.join(WRITE_SUFFIXES)})")
    return target


def write_image(image: sitk.Image, path: PathLike, *, compress: bool = True, what: str = "image") -> Path:
    """Write `image` atomically to `path` (.nii.gz, .nii, .nrrd or .mha) and return the path.

    `compress` applies to NRRD and MetaImage; NIfTI compression follows the extension
    (.nii.gz is gzipped, .nii is not). The file is read back and compared with `image`
    before it takes the final name. Raises `OutputError` with one clear line.
    """
    target = image_writer_target(path, what)
    with atomic_path(target, what) as tmp:
        write_image_file(image, tmp, compress=compress, what=what, shown=path)
    return target


def write_image_file(image: sitk.Image, tmp: PathLike, *, compress: bool = True, what: str = "image",
                     shown: PathLike | None = None) -> None:
    """Write `image` to the temporary file `tmp` (from `atomic_path`) and verify it by reading it back.

    `shown` is the final path named in messages. Raises `OutputError`.
    """
    if not isinstance(image, sitk.Image):
        raise TypeError(f"write_image needs a SimpleITK.Image, not {type(image).__name__}")
    tmp = Path(tmp)
    label = f"cannot write {what} '{shown_path(shown if shown is not None else tmp)}'"
    if format_extension(tmp.name).lower() == ".mha" and image.GetMetaDataKeys():
        # MetaImage cannot store NIfTI/DICOM header fields and warns about each one on stderr.
        image = sitk.Image(image)
        for key in image.GetMetaDataKeys():
            image.EraseMetaData(key)
    writer = sitk.ImageFileWriter()
    writer.SetFileName(str(tmp))
    writer.SetUseCompression(bool(compress))
    try:
        with quiet_c_libraries():
            writer.Execute(image)
    except RuntimeError as exc:
        detail = itk_error_detail(exc)
        if "No space left" in str(exc):
            detail = os.strerror(errno.ENOSPC)
        # NRRD says '_nrrdGzWrite: failed to write to file' on a full disk: word it from the free space
        detail = no_space_reason(tmp.parent) or detail
        raise OutputError(f"{label}: {detail[:160] or 'the writer failed'}") from None
    verify_image_file(tmp, image, label)


def read_back(path: PathLike) -> tuple[sitk.Image | None, str | None]:
    """Read a file this package wrote (or finds as a previous output): (image, None) when it is
    complete, (None, what is wrong) when it is empty, cut short or unreadable."""
    p = Path(path)
    try:
        if p.stat().st_size == 0:
            return None, "the file is empty"
    except OSError as exc:
        return None, f"the file is gone ({os_reason(exc)})"
    cut = _nifti_truncation(p) if is_nifti(p) else _nrrd_truncation(p) if _is_nrrd(p) else None
    if cut:
        return None, f"the file is incomplete ({cut})"
    try:
        with quiet_c_libraries():
            return sitk.ReadImage(str(p)), None
    except RuntimeError:
        return None, "the file cannot be read back (incomplete)"


def verify_image_file(path: PathLike, expected: sitk.Image, label: str) -> None:
    """Raise `OutputError` unless `path` reads back as exactly `expected` (size and voxels).

    A short write (full disk, quota, file-size limit) leaves a file that ITK's writers do
    not complain about: a 0-byte `.nii.gz`, or a `.nii` whose voxels end early.
    """
    p = Path(path)
    back, problem = read_back(p)
    if back is not None and not same_voxels(back, expected):
        problem = "the written file does not read back as the image that was written"
    if problem:
        problem = problem.replace("the file", "the written file", 1)
        full = no_space_reason(p.parent)
        if full:
            raise OutputError(f"{label}: {full}; {problem}")
        free = free_bytes(p.parent)
        hint = "" if free is None else f"; {free} bytes free in '{shown_path(p.parent)}': is the disk full?"
        raise OutputError(f"{label}: {problem}{hint}")


def same_voxels(a: sitk.Image, b: sitk.Image) -> bool:
    """True when two images have the same size, components and voxel values (NaN equals NaN)."""
    import numpy as np

    if a.GetSize() != b.GetSize() or a.GetNumberOfComponentsPerPixel() != b.GetNumberOfComponentsPerPixel():
        return False
    va, vb = sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b)
    if va.shape != vb.shape:
        return False
    nan = va.dtype.kind == "f" or vb.dtype.kind == "f"
    step = max(1, va.size // 10_000)
    # Cheap sample first: different images differ almost everywhere.
    if not np.array_equal(va.reshape(-1)[::step], vb.reshape(-1)[::step], equal_nan=nan):
        return False
    return bool(np.array_equal(va, vb, equal_nan=nan))
