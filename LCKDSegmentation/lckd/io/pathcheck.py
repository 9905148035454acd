"""Checks on path text, made before any file-system call sees a path.

A path from a command line, a worker request or a model card can hold text that no file
system call takes: a NUL byte (`ValueError: embedded null byte`), a lone surrogate that
is no file-name byte (`UnicodeEncodeError`), or bytes that are not UTF-8 (ITK aborts the
whole process on those). Each is refused here with one line naming the path, so no caller
meets the exception deep inside `os`, `pathlib` or ITK. Standard library only: the CLI
checks its arguments with it before importing anything heavy.
"""
from __future__ import annotations

import os
from typing import Union

from ..base.errors import InputError

PathLike = Union[str, "os.PathLike[str]", bytes]


def printable(text: object) -> str:
    """`text` safe to print and to write as UTF-8: file-name bytes that are not UTF-8 become \\xNN,
    other lone surrogates \\udXXX, control characters (a newline in a name) \\n, \\xNN."""
    s = str(text).encode("utf-8", "surrogateescape" if _escape_only(str(text)) else "backslashreplace")
    out = s.decode("utf-8", "backslashreplace")
    if any(ord(c) < 32 or ord(c) == 127 for c in out):
        out = "".join(c.encode("unicode_escape").decode("ascii") if ord(c) < 32 or ord(c) == 127 else c
                      for c in out)
    return out


def _escape_only(text: str) -> bool:
    """True when every surrogate in `text` is a file-name byte escaped by `surrogateescape`."""
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in text)


def path_text(path: PathLike) -> str:
    """`path` as a str (bytes decoded as file names are)."""
    return os.fsdecode(path) if isinstance(path, bytes) else str(os.fspath(path))


def path_problem(path: PathLike) -> str | None:
    """What makes `path` unusable as a file name, or None. Touches no file system.

    In order: empty, a NUL byte, a lone surrogate that stands for no file-name byte (such
    text cannot be encoded for the operating system), bytes that are not UTF-8 (ITK cannot
    take them).
    """
    try:
        text = path_text(path)
    except (TypeError, ValueError):
        return "it is not a path"
    if text == "":
        return "the path is empty"
    if "\0" in text:
        return "the path holds a NUL byte, which no file name can"
    if not _escape_only(text):
        return "the path holds text that cannot be a file name (a lone UTF-16 surrogate)"
    try:
        os.fsencode(text).decode("utf-8")
    except UnicodeEncodeError:
        return "the path holds text this system cannot encode as a file name"
    except UnicodeDecodeError:
        return "the path is not valid UTF-8 text"
    return None


def check_path_text(path: PathLike, label: str, error: type = InputError) -> None:
    """Refuse (`error`, one line starting with `label`) a path no file-system call or ITK can take.

    Must run before anything opens, stats or resolves the path: a NUL byte or a lone
    surrogate would raise `ValueError` / `UnicodeEncodeError` there, and SimpleITK aborts
    the process (SIGABRT inside C++) on a name that is not UTF-8.
    """
    problem = path_problem(path)
    if problem is None:
        return
    hint = "rename the file or folder" if "UTF-8" in problem else "give the file's real name"
    raise error(f"{label}: {problem} ({printable(path_text(path))}); {hint}") from None


def shown_path(path: PathLike) -> str:
    """`path` (with ~ expanded) as text that can always be printed (see `printable`)."""
    text = path_text(path)
    if path_problem(text) is None:
        text = os.path.expanduser(text)
    return printable(text)
