"""A NIfTI file's voxel block, read by us before ITK: is it complete, does it hold NaN or Inf?

ITK's NIfTI reader hides two things a user must hear about: it zero-fills a file cut short,
and it replaces NaN and infinite voxels of a float image by 0 (a NaN block over a tumour
changed its core by 41 %, with no word). Both are seen only in the bytes on disk, so
`scan_nifti` reads the header (NIfTI-1 or -2, either byte order) and streams the voxel block
once, gzip included: it counts the bytes (and gzip checks its CRC at the end) and, for float
voxels, the NaN and infinite values. Single files (`.nii`, `.nii.gz`) and `.hdr`/`.img`
pairs are read; Analyze headers without the NIfTI magic are left to ITK.

Standard library and numpy only.
"""
from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["NiftiLayout", "NiftiScan", "nifti_layout", "scan_nifti", "is_nifti", "nifti_header_file"]

#: NIfTI datatype code -> numpy kind of the float types (the only ones that can hold NaN or Inf).
FLOAT_TYPES = {16: "f4", 64: "f8"}
#: Bytes read and checked at a time.
CHUNK = 1 << 22


@dataclass(frozen=True)
class NiftiLayout:
    """Where and how a NIfTI file stores its voxels (from the header alone)."""

    order: str          # "<" or ">"
    datatype: int
    bitpix: int
    voxels: int
    offset: int         # bytes before the first voxel in the data file
    single_file: bool   # n+1 / n+2 (else an ni1 / ni2 pair: the voxels are in the .img)

    @property
    def data_bytes(self) -> int:
        return self.voxels * self.bitpix // 8

    @property
    def float_dtype(self) -> np.dtype | None:
        kind = FLOAT_TYPES.get(self.datatype)
        return None if kind is None else np.dtype(self.order + kind)


@dataclass
class NiftiScan:
    """What reading a NIfTI voxel block found."""

    problem: str | None = None   # why the block is incomplete, or None
    nan: int = 0
    inf: int = 0
    voxels: int = 0


def is_nifti(p: Path) -> bool:
    """A single-file NIfTI name (`.nii`, `.nii.gz`)."""
    name = p.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def nifti_header_file(p: Path) -> Path | None:
    """The NIfTI header of the file `p` names: itself (`.nii`, `.nii.gz`, `.hdr`), the `.hdr` beside an
    `.img`, or None for other names."""
    lower = p.name.lower()
    if is_nifti(p) or lower.endswith(".hdr"):
        return p
    if lower.endswith(".img"):
        header = p.with_name(p.name[:-4] + (".HDR" if p.name.endswith(".IMG") else ".hdr"))
        return header if header.is_file() else None
    return None


def nifti_layout(head: bytes) -> NiftiLayout | None:
    """The layout a NIfTI-1/2 header declares, or None for a header we do not understand."""
    if len(head) < 348:
        return None
    for order in ("<", ">"):
        (sizeof_hdr,) = struct.unpack(order + "i", head[:4])
        if sizeof_hdr == 348:
            magic = head[344:347]
            if magic not in (b"n+1", b"ni1"):
                return None
            dims = struct.unpack(order + "8h", head[40:56])
            (datatype, bitpix) = struct.unpack(order + "2h", head[70:74])
            (vox_offset,) = struct.unpack(order + "f", head[108:112])
            break
        if sizeof_hdr == 540 and len(head) >= 540:
            magic = head[4:7]
            if magic not in (b"n+2", b"ni2"):
                return None
            (datatype, bitpix) = struct.unpack(order + "2h", head[12:16])
            dims = struct.unpack(order + "8q", head[16:80])
            (vox_offset,) = struct.unpack(order + "q", head[168:176])
            break
    else:
        return None
    ndim = dims[0]
    if not 1 <= ndim <= 7 or bitpix <= 0 or not np.isfinite(vox_offset) or vox_offset < 0:
        return None
    count = 1
    for d in dims[1:ndim + 1]:
        count *= max(int(d), 1)
    return NiftiLayout(order, int(datatype), int(bitpix), count, int(vox_offset), magic[1:2] == b"+")


def _open(p: Path):
    return gzip.open(p, "rb") if p.name.lower().endswith(".gz") else open(p, "rb")


def _data_file(p: Path) -> Path | None:
    """The `.img` (or `.img.gz`) holding the voxels of the pair header `p`."""
    name = p.name
    stem = name[:-4]
    for suffix in (".img", ".img.gz", ".IMG", ".IMG.GZ"):
        candidate = p.with_name(stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def scan_nifti(p: Path, count_nonfinite: bool = True) -> NiftiScan | None:
    """Read the voxel block of NIfTI file `p` once; None when `p` is not a NIfTI header we read.

    `p` is a `.nii`/`.nii.gz` or the `.hdr` of a pair (`nifti_header_file`). The result says whether the block is
    shorter than the header declares (or its gzip stream damaged) and, when
    `count_nonfinite` and the voxels are float, how many are NaN and infinite.
    """
    try:
        with _open(p) as fh:
            head = fh.read(540)
    except (OSError, EOFError, zlib.error):
        return NiftiScan("damaged gzip data")
    layout = nifti_layout(head)
    if layout is None:
        return None
    data = p if layout.single_file else _data_file(p)
    if data is None:
        return None  # ITK finds (or misses) the pair's data file and says so
    dtype = layout.float_dtype if count_nonfinite else None
    gz = data.name.lower().endswith(".gz")
    if dtype is None and not gz:
        have = data.stat().st_size - layout.offset
        return _result(have, layout, NiftiScan())
    scan = NiftiScan(voxels=layout.voxels)
    have = 0
    try:
        with _open(data) as fh:
            while have < layout.offset:          # the header and extensions before the voxels
                chunk = fh.read(min(CHUNK, layout.offset - have))
                if not chunk:
                    break
                have += len(chunk)
            counted, carry = 0, b""              # voxel bytes checked; an item split between chunks
            while True:
                chunk = fh.read(CHUNK)
                if not chunk:
                    break
                have += len(chunk)
                if dtype is not None and counted < layout.data_bytes:
                    block = carry + chunk if carry else chunk
                    usable = min(len(block), layout.data_bytes - counted)
                    whole = usable - usable % dtype.itemsize
                    _count(block, whole // dtype.itemsize, dtype, scan)
                    counted += whole
                    carry = block[whole:usable]
    except (OSError, EOFError, zlib.error):
        return NiftiScan("damaged or incomplete gzip data" if gz else "unreadable data")
    return _result(have - layout.offset, layout, scan)


def _count(block: bytes, items: int, dtype: np.dtype, scan: NiftiScan) -> None:
    """Add the NaN and infinite values among the first `items` values of `block` to `scan`."""
    if not items:
        return
    values = np.frombuffer(block, dtype=dtype, count=items)
    finite = np.isfinite(values)
    if not finite.all():
        nan = int(np.count_nonzero(np.isnan(values)))
        scan.nan += nan
        scan.inf += int(values.size - np.count_nonzero(finite)) - nan


def _result(have: int, layout: NiftiLayout, scan: NiftiScan) -> NiftiScan:
    if have < layout.data_bytes:
        scan.problem = f"{layout.offset + have} of the {layout.offset + layout.data_bytes} bytes its header announces"
    return scan
