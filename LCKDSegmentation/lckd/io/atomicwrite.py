"""Atomic writes: a temporary file next to the target, renamed onto it only when complete.

`atomic_path` is the one way the package writes a file (images, records, pictures, model
cards), so an interrupted or failed write never leaves a partial file under the final name;
`remove_stale_temps` clears what a killed process left; `probe_writable` refuses an
unwritable output before any work. Standard library only: image writers and their read-back
checks stay in `lckd.io.imageio`.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable, Union

from ..base.errors import OutputError
from .filetypes import format_extension
from .pathcheck import check_path_text, shown_path

PathLike = Union[str, "os.PathLike[str]"]


#: errno values that mean "the bytes did not reach the disk": reported as one clear line.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS}

#: Room atomic_path's temporary name takes beyond the target's name ('.' + '.tmp-xxxxxxxx').
TEMP_NAME_EXTRA = len(".") + len(".tmp-") + 8


def _temp_name(target: Path) -> str:
    ext = format_extension(target.name)
    stem = target.name[: len(target.name) - len(ext)] if ext else target.name
    return f".{stem}.tmp-{secrets.token_hex(4)}{ext}"


def free_bytes(folder: Path) -> int | None:
    """Bytes free to this user in `folder`'s file system, or None where that cannot be asked."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


#: A write that failed with less than this free on its file system failed for want of room.
NO_SPACE_BYTES = 1 << 20


def no_space_reason(folder: Path) -> str | None:
    """'No space left on device (N bytes free in 'folder')' when a write into `folder` failed
    for want of room (under `NO_SPACE_BYTES` free), else None. The image writers report a
    full disk in their own words, or not at all ('_nrrdGzWrite: failed to write to file', a
    file cut short): every format is worded from the free space instead."""
    free = free_bytes(folder)
    if free is None or free >= NO_SPACE_BYTES:
        return None
    return f"{os.strerror(errno.ENOSPC)} ({free} bytes free in '{shown_path(folder)}')"


def _write_failure(label: str, exc: OSError, folder: Path) -> OutputError:
    reason = os_reason(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        free = free_bytes(folder)
        reason += "" if free is None else f" ({free} bytes free in '{shown_path(folder)}')"
    return OutputError(f"{label}: {reason}")


@contextlib.contextmanager
def atomic_path(path: PathLike, what: str = "output",
                verify: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` on success, delete it on failure.

    The temporary file (`.<name>.tmp-<random><ext>`, same folder so the rename is atomic,
    same extension so format-by-extension writers behave) is created empty first, which
    reserves the name and turns permission problems into a clear `OutputError`. The parent
    folder is created when missing. Use for every output: images, CSV, JSON, PNG.

    Before the rename the temporary file is flushed to disk (`fsync`, which reports a full
    disk that delayed allocation hid) and handed to `verify`, which raises `OutputError`
    when the file is not what was meant to be written: ITK's writers do not report short
    writes, so only reading the file back proves it is complete. A full disk, quota or
    file-size limit met while writing is reported as one `OutputError` line.
    """
    target, label = _output_target(path, what)
    parent = target.parent
    _make_folder(parent, label)
    remove_stale_temps(target)
    tmp = None
    lock_fd = -1
    for _ in range(8):
        candidate = parent / _temp_name(target)
        try:
            # 0o666 & ~umask, like a normal file; O_EXCL so two writers never share a temp file.
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                raise OutputError(f"{label}: the file name is too long for this file system") from None
            raise OutputError(f"{label}: folder '{shown_path(parent)}' is not writable ({os_reason(exc)})") from None
        # Held open and locked while the file lives: another run's clean-up never takes a live temp file.
        lock_fd = fd if _lock(fd) else -1
        if lock_fd < 0:
            os.close(fd)
        tmp = candidate
        break
    if tmp is None:
        raise OutputError(f"{label}: could not create a temporary file in '{shown_path(parent)}'")
    try:
        try:
            yield tmp
            _fsync(tmp)
        except OSError as exc:
            if exc.errno in _WRITE_ERRNOS:
                raise _write_failure(label, exc, parent) from None
            raise
        if verify is not None:
            verify(tmp)
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise OutputError(f"{label}: {os_reason(exc)}") from None
    except BaseException:
        # Any failure (also Ctrl-C / SIGTERM / cancel) leaves neither a temp file nor a partial target.
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        if lock_fd >= 0:
            os.close(lock_fd)


#: A temporary file of ours untouched for this long, and locked by no process, is left over from
#: a run that was killed (SIGKILL, power loss) and is removed by the next write to the same name.
STALE_TEMP_SECONDS = 600.0


def _lock(fd: int) -> bool:
    """Take an exclusive advisory lock on `fd` without waiting; False where locks are unsupported or taken."""
    try:
        import fcntl
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (ImportError, OSError):
        return False
    return True


def _locked_elsewhere(path: Path) -> bool:
    """True when another process holds the lock on `path` (a live writer's temporary file)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return True  # cannot tell: leave it
    try:
        import fcntl
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except (ImportError, OSError):
        return False  # no locks here: the age alone decides
    finally:
        os.close(fd)
    return False


def stale_temp_pattern(target: Path) -> re.Pattern:
    """The names `atomic_path` gives temporary files of `target` (`.<stem>.tmp-<8 hex><ext>`)."""
    ext = format_extension(target.name)
    stem = target.name[: len(target.name) - len(ext)] if ext else target.name
    return re.compile(re.escape(f".{stem}.tmp-") + r"[0-9a-f]{8}" + re.escape(ext) + r"\Z", re.DOTALL)


def remove_stale_temps(target: Path, older_than: float = STALE_TEMP_SECONDS) -> list:
    """Remove temporary files a killed run left for `target`; return the paths removed.

    Only files of our own naming for this very target, regular files (not links), not
    modified for `older_than` seconds and not locked by a live writer are removed; any
    error leaves a file alone (it is hidden and harmless).
    """
    pattern = stale_temp_pattern(target)
    try:
        names = os.listdir(target.parent)
    except OSError:
        return []
    removed = []
    now = time.time()
    for name in names:
        if not pattern.match(name):
            continue
        p = target.parent / name
        try:
            st = os.lstat(p)
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < older_than or _locked_elsewhere(p):
                continue
            os.unlink(p)
            removed.append(p)
        except OSError:
            continue
    return removed


def _output_target(path: PathLike, what: str) -> tuple[Path, str]:
    """(expanded target path, the "cannot write ..." message prefix), refusing names ITK would
    choke on and existing folders: the checks every write and write probe start with."""
    target = Path(os.path.expanduser(str(path)))
    label = f"cannot write {what} '{shown_path(path)}'"
    check_path_text(target, label, OutputError)
    if target.is_dir():
        raise OutputError(f"{label}: it is an existing folder; give a file name")
    return target, label


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def probe_writable(path: PathLike, what: str = "output") -> Path:
    """Fail early (before minutes of work) if `path` cannot be written; nothing is left behind.

    Where the folder exists, creates and removes a temporary file with a unique name next
    to `path` (so concurrent runs in one folder never race on a shared probe name), exactly
    as the final write will; a missing folder is not created here (the write does that),
    its nearest existing parent must be a writable folder.
    """
    target, label = _output_target(path, what)
    folder = target.parent
    if not folder.is_dir():
        for parent in [folder, *folder.parents]:
            if parent.exists() and not parent.is_dir():
                raise OutputError(f"{label}: '{shown_path(parent)}' is a file, not a folder")
            if parent.is_dir():
                # Try it for real: os.access says only yes or no, and a read-only file system or a
                # full disk is not "Permission denied". The probe folder is removed at once.
                try:
                    os.rmdir(tempfile.mkdtemp(prefix=".lckd-probe-", dir=parent))
                except OSError as exc:
                    raise OutputError(f"{label}: cannot create folder '{shown_path(folder)}' "
                                      f"({os_reason(exc)} in '{shown_path(parent)}')") from None
                return target
        return target

    class _Probe(Exception):
        pass

    # Leaving the block by an exception deletes the temporary file and renames nothing.
    with contextlib.suppress(_Probe):
        with atomic_path(target, what):
            raise _Probe
    return target


def _make_folder(folder: Path, label: str) -> None:
    if folder.is_dir():
        return
    # Name the path component that is a file: the usual cause of 'Not a directory'.
    for parent in [folder, *folder.parents]:
        if parent.exists() and not parent.is_dir():
            raise OutputError(f"{label}: '{shown_path(parent)}' is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{label}: cannot create folder '{shown_path(folder)}' ({os_reason(exc)})") from None


def os_reason(exc: OSError) -> str:
    """The reason of an OSError as one short phrase ('No space left on device')."""
    if exc.errno is not None:
        return os.strerror(exc.errno)
    return str(exc) or exc.__class__.__name__
