"""User-facing errors: each carries one line that names the problem and, where known, the file."""
from __future__ import annotations


class LCKDError(Exception):
    """Base class of every error a user should read (the CLI prints it and exits 1)."""


class InputError(LCKDError):
    """An input image or option is missing, unreadable or unusable."""


class ModelError(LCKDError):
    """A model, its card or its weights are missing, tampered with, or do not match the code."""


class OutputError(LCKDError):
    """An output cannot be written."""


class Cancelled(LCKDError):
    """The caller cancelled a running job."""


def itk_error_detail(exc: BaseException, limit: int = 160) -> str:
    """The reason an ITK / SimpleITK exception gives, as a clause for one line ('' if none).

    SimpleITK's messages run over several lines ('Exception thrown in SimpleITK
    ImageFileReader_Execute: .../sitkImageReaderBase.cxx:97:' then 'sitk::ERROR: ...', or
    'ITK ERROR: MattesMutualInformation...(0x55d0): All samples map outside ...'): the last
    line says what happened, and its prefixes (source location, object address) are noise
    to a user. Callers add what they know (file, format, operation) around it.
    """
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    detail = lines[-1] if lines else ""
    for marker in ("ERROR:", "):", "]"):
        if marker in detail:
            detail = detail.split(marker, 1)[-1].strip()
    return detail[:limit]
