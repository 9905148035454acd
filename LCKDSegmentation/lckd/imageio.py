"""Reading and writing images with one-line errors, and atomic (temp file + rename) writes.

`read_image` accepts NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) or a
folder holding one DICOM series, and returns a scalar 3D float32 image with its geometry.
It checks the *shape* of what it read (3D, one component, complete file); the *values*
(NaN, empty, label-map-like) are checked by `lckd.validation`.

Every output the package writes goes through `atomic_path`, so an interrupted or failed
write never leaves a partial file under the final name.
"""
from __future__ import annotations

import contextlib
import errno
import gzip
import os
import secrets
import struct
import zlib
from pathlib import Path
from typing import Iterator, Union

import SimpleITK as sitk

from .errors import InputError, OutputError

PathLike = Union[str, "os.PathLike[str]"]

#: File extensions `read_image` is meant for (a DICOM series is given as its folder).
SUPPORTED_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

#: Extensions `write_image` accepts. The two-file formats (.nhdr, .mhd) are left out on
#: purpose: their header names the data file, so they cannot be renamed atomically.
WRITE_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".mha")

_FORMATS_TEXT = "NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) or a DICOM series folder"


# ----------------------------------------------------------------------------- reading

def read_image(path: PathLike | sitk.Image, what: str = "image", *, series: str | None = None) -> sitk.Image:
    """Read a scalar 3D image (file or DICOM series folder) as float32, keeping its geometry.

    `what` names the input in error messages (e.g. "FLAIR"). For a folder with several
    DICOM series, `series` picks one by its SeriesInstanceUID; otherwise the folder must
    hold exactly one. Raises `InputError` with one line naming `what` and the path.
    """
    if isinstance(path, sitk.Image):  # an image already in memory (console / Slicer callers)
        return sitk.Cast(_as_scalar_3d(path, f"{what} image"), sitk.sitkFloat32)
    p = Path(os.path.expanduser(str(path)))
    label = f"{what} '{path}'"
    if not p.exists():
        raise InputError(f"{label} does not exist")
    if p.is_dir():
        image = _read_dicom_folder(p, label, series)
    else:
        image = _read_file(p, label)
    image = _as_scalar_3d(image, label)
    return sitk.Cast(image, sitk.sitkFloat32)


def _read_file(p: Path, label: str) -> sitk.Image:
    if not os.access(p, os.R_OK):
        # Only reached for non-root users; root reads anything.
        raise InputError(f"{label} cannot be read (permission denied)")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        # Header first: refuses wrong shapes without loading the voxels.
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"{label} {_summarise_read_error(exc, p.name)}") from None
    # A lone DICOM file is one slice of a series: say so when refusing it as 2D.
    is_dicom = any("|" in key for key in reader.GetMetaDataKeys())
    check_shape(reader.GetDimension(), tuple(reader.GetSize()), reader.GetNumberOfComponents(), label,
                reader.GetPixelID(), hint="give the folder of the whole DICOM series" if is_dicom else "")
    if _is_nifti(p):
        # ITK's NIfTI reader zero-fills a truncated file without complaint; check ourselves.
        problem = _nifti_truncation(p)
        if problem:
            raise InputError(f"{label} is corrupt or truncated ({problem})")
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"{label} {_summarise_read_error(exc)}") from None


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
                         f"give a {_FORMATS_TEXT}")
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
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"{label} DICOM series {ids[0]} {_summarise_read_error(exc)}") from None


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
    if dimension < 3 or (dimension == 3 and 1 in size):
        raise InputError(f"{label} is a 2D image (size {_size_text(size)}); a 3D volume is needed"
                         + (f" ({hint})" if hint else ""))
    if dimension > 3:
        raise InputError(f"{label} is a {dimension}D image (size {_size_text(size)}); a single 3D volume is "
                         "needed (split the series into 3D volumes first)")


_COMPLEX_IDS = {sitk.sitkComplexFloat32, sitk.sitkComplexFloat64}


def _as_scalar_3d(image: sitk.Image, label: str) -> sitk.Image:
    check_shape(image.GetDimension(), image.GetSize(), image.GetNumberOfComponentsPerPixel(), label,
                image.GetPixelID())
    if image.GetDimension() == 4:
        size = list(image.GetSize())
        image = sitk.Extract(image, size[:3] + [0], [0, 0, 0, 0])
    return image


_FORMAT_NAMES = {".nii.gz": "NIfTI", ".nii": "NIfTI", ".nrrd": "NRRD", ".nhdr": "NRRD", ".mha": "MetaImage",
                 ".mhd": "MetaImage"}


def _summarise_read_error(exc: RuntimeError, name: str = "") -> str:
    """Turn SimpleITK's multi-line exception text into a short clause for one line."""
    text = str(exc)
    if "Unable to determine ImageIO reader" in text:
        fmt = _FORMAT_NAMES.get(_extension(name).lower())
        if fmt:
            return f"is not a valid {fmt} file (corrupt, or not what its extension says)"
        return f"is not in a format this tool reads (use {_FORMATS_TEXT})"
    if "orthonormal" in text:
        return "has an invalid orientation matrix (direction cosines are not orthonormal)"
    if "does not exist" in text:
        return "does not exist"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    detail = lines[-1] if lines else ""
    # ITK prefixes are noise; keep the reason only, and drop errno left-overs that mislead
    # (MetaImage reports a truncated file as 'No such file or directory').
    for marker in ("ERROR:", "):", "]"):
        if marker in detail:
            detail = detail.split(marker, 1)[-1].strip()
    if not detail or "No such file" in detail or "Reason:" in detail:
        return "could not be read (corrupt or truncated file)"
    return f"could not be read (corrupt or truncated file: {detail[:120]})"


def _is_nifti(p: Path) -> bool:
    name = p.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _nifti_truncation(p: Path) -> str | None:
    """Describe why a single-file NIfTI holds fewer voxel bytes than its header says, or None."""
    gz = p.name.lower().endswith(".gz")
    try:
        if gz:
            with gzip.open(p, "rb") as fh:
                head = fh.read(540)
        else:
            with open(p, "rb") as fh:
                head = fh.read(540)
    except (OSError, EOFError, zlib.error):
        return "damaged gzip data"
    expected = _nifti_expected_bytes(head)
    if expected is None:
        return None  # not a header we understand (or a .hdr/.img pair): let ITK decide
    if not gz:
        have = p.stat().st_size
    else:
        have = 0
        try:
            with gzip.open(p, "rb") as fh:
                # Stream through the whole file: gzip checks its CRC at the end, which also
                # catches corruption that keeps the length right.
                while True:
                    chunk = fh.read(1 << 22)
                    if not chunk:
                        break
                    have += len(chunk)
        except (OSError, EOFError, zlib.error):
            return "damaged or incomplete gzip data"
    if have < expected:
        return f"{have} of the {expected} bytes its header announces"
    return None


def _nifti_expected_bytes(head: bytes) -> int | None:
    """Bytes a single-file NIfTI-1/2 should hold (header + voxel data), from its header."""
    if len(head) < 348:
        return None
    for order in ("<", ">"):
        (sizeof_hdr,) = struct.unpack(order + "i", head[:4])
        if sizeof_hdr == 348:
            if head[344:347] != b"n+1":
                return None
            dims = struct.unpack(order + "8h", head[40:56])
            (bitpix,) = struct.unpack(order + "h", head[72:74])
            (vox_offset,) = struct.unpack(order + "f", head[108:112])
            break
        if sizeof_hdr == 540 and len(head) >= 540:
            if head[4:7] != b"n+2":
                return None
            (bitpix,) = struct.unpack(order + "h", head[14:16])
            dims = struct.unpack(order + "8q", head[16:80])
            (vox_offset,) = struct.unpack(order + "q", head[168:176])
            break
    else:
        return None
    ndim = dims[0]
    if not 1 <= ndim <= 7 or bitpix <= 0:
        return None
    count = 1
    for d in dims[1:ndim + 1]:
        count *= max(int(d), 1)
    return int(vox_offset) + count * bitpix // 8


# ----------------------------------------------------------------------------- writing

def _extension(name: str) -> str:
    """The extension that decides the format: '.nii.gz' (any '.x.gz'), otherwise the last suffix."""
    lower = name.lower()
    base, dot, last = lower.rpartition(".")
    if not dot or not base:
        return ""
    if last == "gz":
        inner = base.rpartition(".")
        if inner[1] and inner[0]:
            return name[len(inner[0]):]
    return name[len(base):]


@contextlib.contextmanager
def atomic_path(path: PathLike, what: str = "output") -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` on success, delete it on failure.

    The temporary file (`.<name>.tmp-<random><ext>`, same folder so the rename is atomic,
    same extension so format-by-extension writers behave) is created empty first, which
    reserves the name and turns permission problems into a clear `OutputError`. The parent
    folder is created when missing. Use for every output: images, CSV, JSON, PNG.
    """
    target = Path(os.path.expanduser(str(path)))
    label = f"cannot write {what} '{path}'"
    if target.is_dir():
        raise OutputError(f"{label}: it is an existing folder; give a file name")
    parent = target.parent
    _make_folder(parent, label)
    ext = _extension(target.name)
    stem = target.name[: len(target.name) - len(ext)] if ext else target.name
    tmp = None
    for _ in range(8):
        candidate = parent / f".{stem}.tmp-{secrets.token_hex(4)}{ext}"
        try:
            # 0o666 & ~umask, like a normal file; O_EXCL so two writers never share a temp file.
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(f"{label}: folder '{parent}' is not writable ({_os_reason(exc)})") from None
        os.close(fd)
        tmp = candidate
        break
    if tmp is None:
        raise OutputError(f"{label}: could not create a temporary file in '{parent}'")
    try:
        yield tmp
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise OutputError(f"{label}: {_os_reason(exc)}") from None
    except BaseException:
        # Any failure (also Ctrl-C / cancel) leaves neither a temp file nor a partial target.
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _make_folder(folder: Path, label: str) -> None:
    if folder.is_dir():
        return
    # Name the path component that is a file: the usual cause of 'Not a directory'.
    for parent in [folder, *folder.parents]:
        if parent.exists() and not parent.is_dir():
            raise OutputError(f"{label}: '{parent}' is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{label}: cannot create folder '{folder}' ({_os_reason(exc)})") from None


def _os_reason(exc: OSError) -> str:
    if exc.errno is not None:
        return os.strerror(exc.errno)
    return str(exc) or exc.__class__.__name__


def write_image(image: sitk.Image, path: PathLike, *, compress: bool = True, what: str = "image") -> Path:
    """Write `image` atomically to `path` (.nii.gz, .nii, .nrrd or .mha) and return the path.

    `compress` applies to NRRD and MetaImage; NIfTI compression follows the extension
    (.nii.gz is gzipped, .nii is not). Raises `OutputError` with one clear line.
    """
    if not isinstance(image, sitk.Image):
        raise TypeError(f"write_image needs a SimpleITK.Image, not {type(image).__name__}")
    target = Path(os.path.expanduser(str(path)))
    ext = _extension(target.name).lower()
    if ext not in WRITE_EXTENSIONS:
        shown = ext or "(none)"
        raise OutputError(f"cannot write {what} '{path}': unknown image extension {shown} "
                          f"(use {', '.join(WRITE_EXTENSIONS)})")
    if ext == ".mha" and image.GetMetaDataKeys():
        # MetaImage cannot store NIfTI/DICOM header fields and warns about each one on stderr.
        image = sitk.Image(image)
        for key in image.GetMetaDataKeys():
            image.EraseMetaData(key)
    with atomic_path(target, what) as tmp:
        writer = sitk.ImageFileWriter()
        writer.SetFileName(str(tmp))
        writer.SetUseCompression(bool(compress))
        try:
            writer.Execute(image)
        except RuntimeError as exc:
            text = str(exc)
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            detail = lines[-1].split("ERROR:", 1)[-1].split("):", 1)[-1].strip() if lines else ""
            if "No space left" in text:
                detail = os.strerror(errno.ENOSPC)
            raise OutputError(f"cannot write {what} '{path}': {detail[:160] or 'the writer failed'}") from None
    return target
