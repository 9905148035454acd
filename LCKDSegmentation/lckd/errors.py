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
