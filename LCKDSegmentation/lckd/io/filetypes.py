"""Image file types by name ending: what the package reads and writes, and a file's stem.

The one list of suffixes: reading (`lckd.io.imageio`), output names (`lckd.inference.resultfiles`), result
record names (`lckd.inference.record`) and Slicer's sample-data node names all use it, so a
format added here is known everywhere. Standard library only: the Slicer GUI process
imports it.
"""
from __future__ import annotations

#: Suffixes `read_image` reads (a DICOM series is given as its folder instead).
READ_SUFFIXES: tuple = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

#: Suffixes `write_image` writes. The two-file formats (.nhdr, .mhd) are left out on
#: purpose: their header names the data file, so they cannot be renamed atomically.
WRITE_SUFFIXES: tuple = (".nii.gz", ".nii", ".nrrd", ".mha")

#: A Slicer segmentation (a labelmap with named segments), written with `slicerio`.
SEGMENTATION_SUFFIX = ".seg.nrrd"

#: A DICOM Segmentation object (needs the reference scan as DICOM), written with highdicom.
DICOM_SEG_SUFFIX = ".dcm"

#: What a result may be written as: a Slicer segmentation, a plain labelmap or a DICOM SEG.
OUTPUT_SUFFIXES: tuple = (SEGMENTATION_SUFFIX,) + WRITE_SUFFIXES + (DICOM_SEG_SUFFIX,)

#: Format name of each readable suffix, for error messages.
FORMAT_NAMES: dict = {".nii.gz": "NIfTI", ".nii": "NIfTI", ".nrrd": "NRRD", ".nhdr": "NRRD",
                      ".mha": "MetaImage", ".mhd": "MetaImage"}

#: The readable formats in words.
FORMATS_TEXT = "NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) or a DICOM series folder"

# Longest first, so `case.seg.nrrd` loses `.seg.nrrd`, not just `.nrrd`.
_STEM_SUFFIXES = tuple(sorted(set(OUTPUT_SUFFIXES + READ_SUFFIXES), key=len, reverse=True))


def is_segmentation(name: str) -> bool:
    """True for a Slicer segmentation file name (`*.seg.nrrd`)."""
    return name.endswith(SEGMENTATION_SUFFIX)


def is_dicom_seg(name: str) -> bool:
    """True for a DICOM SEG output name (`*.dcm`, any case)."""
    return name.lower().endswith(DICOM_SEG_SUFFIX)


def image_stem(name: str) -> str:
    """A file name without its image suffix (`case.seg.nrrd` -> `case`, `T1.NII.GZ` -> `T1`).

    The suffix is matched in any case; a name that is only a suffix, or has none of the
    image suffixes, is returned whole.
    """
    lower = name.lower()
    for s in _STEM_SUFFIXES:
        if lower.endswith(s) and len(name) > len(s):
            return name[: -len(s)]
    return name


def format_extension(name: str) -> str:
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


def special_file_kind(mode: int) -> str | None:
    """'a named pipe', 'a socket' or 'a device' for an `os.stat` mode that is none of a regular
    file, a folder or a link; None otherwise. Reading a named pipe blocks forever."""
    import stat

    if stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode):
        return None
    return "a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
