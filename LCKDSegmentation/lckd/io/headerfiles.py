"""What an image file makes ITK read besides itself, checked from its header before ITK opens it.

Three ways an image file can make ITK read bytes the user did not name, or change what it
reads without a word; each is refused here with one line naming the file:

* **Siblings**: NIfTI's library finds a file by its base name, so with `X.nii` next to
  `X.nii.gz` (or `X.hdr`/`X.img` next to either) asking for one may give the voxels of
  the other. `sibling_problem` refuses such a name and names both files.
* **Data files**: a MetaImage header (`.mhd`, also `.mha`) names its data in
  `ElementDataFile`, a detached NRRD header (`.nhdr`, also `.nrrd`) in `data file`, an
  Analyze/NIfTI pair `X.hdr` reads `X.img`. Each data file must lie inside the header's own
  folder: a relative name without `..` that resolves (links followed) into that folder.
  An absolute path or `..` is refused, so a scan folder from elsewhere never makes us
  read `/etc/passwd` or the user's other files.
* **Shear**: ITK's MetaImage reader silently orthogonalises a non-orthogonal direction
  matrix (a different geometry), while its NIfTI reader refuses a sheared sform. One rule
  for every format: a sheared direction matrix is refused (`shear_problem` reads it from
  the MetaImage/NRRD header, where ITK hides it; `direction_problem` checks what ITK read).

Standard library and numpy only; reads at most `HEADER_BYTES` of a header.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

from .pathcheck import printable

#: Bytes of a header read to find its fields (real headers are a few hundred bytes).
HEADER_BYTES = 1 << 16
#: Largest |cos| between two axes of a direction matrix, and largest deviation of an axis's
#: length from 1, accepted as orthonormal (float rounding in headers; a 0.5 degree tilt is ~0.009).
SHEAR_TOLERANCE = 1e-3

#: The NIfTI-1 / Analyze family: the names niftilib tries for one base name.
_NIFTI_FAMILY = (".nii.gz", ".nii", ".hdr.gz", ".hdr", ".img.gz", ".img")
#: The named file's expected partner in a two-file pair.
_PARTNERS = {".hdr": (".img", ".img.gz"), ".hdr.gz": (".img", ".img.gz"), ".img": (".hdr", ".hdr.gz"),
             ".img.gz": (".hdr", ".hdr.gz")}


def _family_suffix(name: str) -> str | None:
    lower = name.lower()
    return next((s for s in _NIFTI_FAMILY if lower.endswith(s) and len(name) > len(s)), None)


def sibling_problem(path: Path) -> str | None:
    """Why the NIfTI-family file `path` is ambiguous (a same-named sibling ITK may read instead), or None."""
    suffix = _family_suffix(path.name)
    if suffix is None:
        return None
    base = path.name[: -len(suffix)]
    try:
        names = os.listdir(path.parent if str(path.parent) else ".")
    except OSError:
        return None  # the read fails and says why
    partners = _PARTNERS.get(suffix, ())
    others: list[str] = []
    pair: list[str] = []
    for n in sorted(names):
        s = _family_suffix(n)
        # niftilib tries the base name with lower- and upper-case extensions
        if n == path.name or s is None or n[: -len(s)] != base:
            continue
        (pair if s in partners else others).append(n)
    if len(pair) > 1:
        others += pair[1:]
    if not others:
        return None
    listed = "', '".join(printable(n) for n in others)
    return (f"'{printable(listed)}' sit{'s' if len(others) == 1 else ''} next to it under the same name: "
            "ITK's NIfTI reader may take the voxels from the other file; move or rename one of them")


def _header_text(path: Path) -> str | None:
    """The first HEADER_BYTES of `path` as text, or None for compressed or unreadable files."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEADER_BYTES)
    except OSError:
        return None
    if head[:2] == b"\x1f\x8b":
        return None
    return head.decode("latin-1")


def _meta_fields(text: str) -> tuple[dict, list]:
    """MetaImage 'Key = value' fields (keys lower-cased) up to ElementDataFile, and the lines after it."""
    fields: dict = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        key, eq, value = line.partition("=")
        if not eq:
            continue
        k = key.strip().lower()
        fields[k] = value.strip()
        if k == "elementdatafile":
            return fields, lines[i + 1:]
    return fields, []


def _nrrd_fields(text: str) -> tuple[dict, list]:
    """NRRD 'key: value' fields (keys lower-cased) and the lines after the header (a LIST's names)."""
    fields: dict = {}
    lines = text.splitlines()
    for i, line in enumerate(lines[1:], start=1):
        if not line.strip():
            return fields, lines[i + 1:]
        if line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        fields[key.strip().lower()] = value.lstrip("=").strip()
        if key.strip().lower() in ("data file", "datafile") and value.strip().upper().startswith("LIST"):
            return fields, lines[i + 1:]
    return fields, []


def _data_file_names(value: str, rest: list) -> list:
    """The file names a data-file field names: one name, a LIST's lines, or a numbered pattern."""
    words = value.split()
    if words and words[0].upper() == "LIST":
        return [ln.strip() for ln in rest if ln.strip()]
    if len(words) >= 4 and "%" in words[0]:
        return [words[0]]  # 'slice%03d.raw 1 10 1': the pattern holds the folder part
    return [value] if value else []


def _outside(folder: Path, name: str) -> str | None:
    """Why the data file `name` (as a header writes it) is not inside `folder`, or None."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or os.path.isabs(name):
        return "an absolute path"
    if ".." in re.split(r"[\\/]", name):
        return "a path that goes up a folder ('..')"
    if "%" in name:
        return None
    real_folder = os.path.realpath(folder)
    real = os.path.realpath(os.path.join(folder, name))
    if os.path.commonpath([real_folder, real]) != real_folder:
        return f"a link that leads outside the folder (to '{printable(real)}')"
    return None


def data_file_problem(path: Path) -> str | None:
    """Why a header's data file(s) would be read from outside the header's folder, or None."""
    folder = path.parent
    suffix = _family_suffix(path.name)
    if suffix in _PARTNERS:
        # An Analyze/NIfTI pair: the data file is named by the header's own name.
        base = path.name[: -len(suffix)]
        for partner in (base + s for s in _PARTNERS[suffix]):
            if (folder / partner).exists():
                why = _outside(folder, partner)
                if why:
                    role = "data" if suffix.startswith(".hdr") else "header"
                    return f"its {role} file '{printable(partner)}' is {why}"
        return None
    text = _header_text(path)
    if text is None:
        return None
    if text.startswith("NRRD"):
        fields, rest = _nrrd_fields(text)
        value = fields.get("data file", fields.get("datafile"))
    elif re.search(r"(?im)^\s*ElementDataFile\s*=", text):
        fields, rest = _meta_fields(text)
        value = fields.get("elementdatafile")
        if value is not None and value.upper() in ("LOCAL", ""):
            return None
    else:
        return None
    if value is None:
        return None
    for name in _data_file_names(value, rest):
        why = _outside(folder, name)
        if why:
            return (f"its header names the data file '{printable(name)}', {why}; a header may only name a data "
                    "file inside its own folder")
    return None


def _numbers(text: str | None) -> list | None:
    if text is None:
        return None
    try:
        return [float(v) for v in re.findall(r"[-+0-9.eE]+|nan|inf", text.replace(",", " "))]
    except ValueError:
        return None


def _worst_angle(columns: list) -> str | None:
    """'axes 2 and 3 at 77.0 degrees' for the least orthogonal pair of columns, or None if orthonormal."""
    norms = [math.sqrt(sum(c * c for c in col)) for col in columns]
    if any(not math.isfinite(n) or n == 0 for n in norms):
        return None  # degenerate: ITK refuses it itself
    unit = [[c / n for c in col] for col, n in zip(columns, norms)]
    worst, where = 0.0, (0, 0)
    for i in range(len(unit)):
        for j in range(i + 1, len(unit)):
            cos = abs(sum(a * b for a, b in zip(unit[i], unit[j])))
            if cos > worst:
                worst, where = cos, (i, j)
    if worst <= SHEAR_TOLERANCE:
        return None
    angle = math.degrees(math.acos(min(1.0, worst)))
    return f"axes {where[0] + 1} and {where[1] + 1} at {angle:.1f} degrees instead of 90"


def shear_problem(path: Path) -> str | None:
    """A sheared direction matrix in a MetaImage or NRRD header (which ITK straightens or keeps silently), or None."""
    text = _header_text(path)
    if text is None:
        return None
    columns: list | None = None
    if text.startswith("NRRD"):
        fields, _ = _nrrd_fields(text)
        vectors = re.findall(r"\(([^)]*)\)", fields.get("space directions", ""))
        parsed = [_numbers(v) or [] for v in vectors]
        if len(parsed) >= 2 and all(v and len(v) == len(parsed[0]) for v in parsed):
            columns = parsed
    elif re.search(r"(?im)^\s*ElementDataFile\s*=", text):
        fields, _ = _meta_fields(text)
        ndims = int((_numbers(fields.get("ndims")) or [0])[0] or 0)
        for key in ("transformmatrix", "rotation", "orientation"):
            vals = _numbers(fields.get(key)) or []
            if ndims >= 2 and len(vals) == ndims * ndims:
                columns = [vals[i * ndims:(i + 1) * ndims] for i in range(ndims)]
                break
    if columns is None:
        return None
    angle = _worst_angle(columns)
    if angle is None:
        return None
    return (f"has a sheared (non-orthogonal) direction matrix in its header ({angle}); ITK would silently "
            "turn it into a different geometry: resample the image onto an orthogonal grid first")


def direction_problem(direction, dimension: int) -> str | None:
    """A sheared direction matrix (as ITK read it, row-major), or None."""
    d = [float(v) for v in direction]
    n = dimension
    if len(d) != n * n:
        return None
    columns = [[d[r * n + c] for r in range(n)] for c in range(n)]
    angle = _worst_angle(columns)
    if angle is None:
        return None
    return (f"has a sheared (non-orthogonal) direction matrix ({angle}); resample the image onto an "
            "orthogonal grid first")
