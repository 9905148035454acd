"""One thread rule for the whole core: how many CPU threads PyTorch uses, and how they wait.

Thread count. ``available_cpus()`` is the number of cores this process may actually run on:
the CPU affinity mask (``taskset``, ``docker --cpuset-cpus``, Slurm) capped by a cgroup CPU
quota (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us / cpu.cfs_period_us``; ``docker
--cpus``, Kubernetes limits). A fractional quota is rounded down (at least 1): a thread
more than the quota allows is throttled mid-step, and every other thread then waits for it
at the next barrier. ``os.cpu_count()`` sees neither limit. ``configure_threads(n)`` sets
PyTorch's intra-op threads to ``n`` when given (``--threads``, which always wins), else to
``available_cpus() // world`` (one share per local process under torchrun). Inference
(``Segmenter.load``, hence ``lckd segment/batch/evaluate/demo`` and the Slicer worker) and
training use it.

Busy machines. OpenMP threads (PyTorch's intra-op pool, oneDNN and MKL run on it) by
default spin for a while at every barrier before they sleep. On an idle machine that is
what makes 2 threads fast; when another process holds one of the cores, the spinning
threads burn the time slices the preempted thread needs and every barrier waits for the
scheduler (measured on 2 cores: 5-10x slower). Two remedies, measured on one BraTS case:

- the passive wait policy (``OMP_WAIT_POLICY=PASSIVE``) keeps a busy core from hurting
  (6.6 s) but costs about a third of the idle speed (5.6-7.0 s instead of 4.1-4.3 s);
- ``ThreadGovernor`` (used where the count is not fixed by ``--threads``): between sliding
  windows it measures, from ``/proc/stat`` and this process's own CPU time, how many of
  this process's cores other processes are using, and gives PyTorch only the cores left
  (at least 1). Idle, all threads spin as fast as they can; with one of two cores taken,
  the network runs on one thread, which no barrier can stall.

So on Linux (where ``/proc/stat`` tells) the governor is used and the wait policy is left at
OpenMP's default; elsewhere, and when ``--threads`` fixes the count, the entry points that own their process
(``lckd.frontends.cli.main``: the ``lckd`` command and ``torchrun -m lckd.frontends.cli``;
``lckd.frontends.worker.main``)
call ``apply_wait_policy``, which sets ``OMP_WAIT_POLICY=PASSIVE`` with
``os.environ.setdefault`` (a value the user set is kept). Importing ``lckd`` sets nothing:
inside Slicer the GUI imports it, and a policy put into Slicer's environment would reach
every torch any module loads later. The OpenMP runtime reads it once, when torch's shared
libraries are loaded, so it takes effect only if the entry point runs before ``torch`` is
imported in that process; a program that imports torch first keeps torch's default, which
``wait_policy_applied()`` reports.
"""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

from .errors import InputError

#: Set by `apply_wait_policy` (the command and the worker) before anything imports torch, where
#: the governor cannot work or `--threads` fixes the count (see the module docstring).
WAIT_POLICY_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
PROC_STAT = Path("/proc/stat")

# Whether torch (hence its OpenMP runtime) was already loaded when an entry point applied the
# wait policy; None until one did (a library user, e.g. Slicer's console, never does).
_torch_preloaded: bool | None = None


def governor_possible() -> bool:
    """Whether `ThreadGovernor` can see the other processes' CPU use (Linux's /proc/stat)."""
    return _cpu_busy_seconds(PROC_STAT, None) is not None


def _threads_fixed(argv: list[str]) -> bool:
    return any(a == "--threads" or a.startswith("--threads=") for a in argv)


def set_wait_policy_env(environ: dict | None = None, argv: list[str] | None = None) -> None:
    """Put the passive wait policy into `environ` (default os.environ) unless already set,
    where the governor cannot adapt the thread count: no /proc/stat, or `--threads` in `argv`
    (default sys.argv)."""
    env = os.environ if environ is None else environ
    if governor_possible() and not _threads_fixed(sys.argv if argv is None else argv):
        return
    for key, value in WAIT_POLICY_ENV.items():
        env.setdefault(key, value)


def apply_wait_policy(argv: list[str] | None = None) -> bool:
    """For an entry point that owns its process (the `lckd` command, the worker): set the wait
    policy as `set_wait_policy_env` decides, before torch loads. Returns whether it can take
    effect (False when torch is already imported, so its OpenMP runtime has started)."""
    global _torch_preloaded
    _torch_preloaded = "torch" in sys.modules
    set_wait_policy_env(None, argv)
    return not _torch_preloaded


def _cpu_busy_seconds(proc_stat: Path, cpus: set[int] | None) -> float | None:
    """Seconds the given CPUs (None: all) spent busy since boot, from /proc/stat; None if unreadable."""
    try:
        lines = proc_stat.read_text().splitlines()
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy = 0
    found = False
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu" or not name[3:].isdigit():
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        fields = [int(v) for v in rest.split()]
        # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
        busy += sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)
        found = True
    return busy / tick if found else None


class ThreadGovernor:
    """Keeps PyTorch's intra-op threads at the cores other processes leave free (module docstring).

    Call `update()` between parallel regions (e.g. once per sliding window); it measures at
    most every `interval` seconds and never goes above `ceiling` or below 1 thread.
    """

    def __init__(self, ceiling: int, interval: float = 0.25, proc_stat: Path = PROC_STAT):
        try:
            self.cpus: set[int] | None = set(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            self.cpus = None
        self.ceiling = max(1, int(ceiling))
        self.interval = interval
        self.proc_stat = proc_stat
        self.others = 0.0             # cores other processes used in the last interval
        self.history: list[int] = []  # thread counts chosen, for the record
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float | None]:
        return time.monotonic(), time.process_time(), _cpu_busy_seconds(self.proc_stat, self.cpus)

    def update(self) -> int:
        """Set and return the thread count for the next parallel work."""
        import torch

        now = self._sample()
        wall = now[0] - self._last[0]
        if wall < self.interval or now[2] is None or self._last[2] is None:
            return torch.get_num_threads()
        # busy time of our cores minus our own CPU time = what the others took
        self.others = max(0.0, ((now[2] - self._last[2]) - (now[1] - self._last[1])) / wall)
        self._last = now
        n = max(1, min(self.ceiling, int(math.floor(self.ceiling - self.others + 0.5))))
        if n != torch.get_num_threads():
            torch.set_num_threads(n)
        self.history.append(n)
        return n


def wait_policy_applied() -> bool:
    """True when an entry point set the wait policy before torch (hence OpenMP) loaded."""
    return _torch_preloaded is False


def affinity_cpus() -> int:
    """Cores in this process's CPU affinity mask (os.cpu_count() where there is no mask)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def _cgroup_paths(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """(cgroup v2 path, cgroup v1 'cpu' controller path) of this process, None where absent."""
    v2 = v1 = None
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hier, controllers, path = parts
        if hier == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _candidates(root: Path, rel: str | None) -> list[Path]:
    """The process's cgroup folder and its ancestors up to `root` (a limit on any applies).

    Inside a container the path in /proc/self/cgroup may name the host's hierarchy while
    only the container's own part is mounted; then the mount root is all there is.
    """
    out: list[Path] = []
    if rel:
        p = root / rel.strip("/")
        while True:
            out.append(p)
            if p == root or root not in p.parents:
                break
            p = p.parent
    if root not in out:
        out.append(root)
    return out


def _read_v2_quota(folder: Path) -> float | None:
    try:
        fields = (folder / "cpu.max").read_text().split()
    except OSError:
        return None
    if not fields or fields[0] == "max":
        return None
    try:
        quota = float(fields[0])
        period = float(fields[1]) if len(fields) > 1 else 100000.0
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _read_v1_quota(folder: Path) -> float | None:
    try:
        quota = float((folder / "cpu.cfs_quota_us").read_text().strip())
        period = float((folder / "cpu.cfs_period_us").read_text().strip())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None  # quota -1: no limit


def cgroup_cpu_quota(proc_cgroup: str | Path = "/proc/self/cgroup",
                     cgroup_root: str | Path = "/sys/fs/cgroup") -> float | None:
    """CPU quota of this process's cgroup in cores (e.g. 1.5), or None when unlimited.

    Reads cgroup v2 ``cpu.max`` and, on v1 or hybrid hosts, ``cpu.cfs_quota_us`` /
    ``cpu.cfs_period_us`` under the ``cpu`` controller's mount; the tightest limit found on
    the process's cgroup or any ancestor counts.
    """
    root = Path(cgroup_root)
    v2, v1 = _cgroup_paths(Path(proc_cgroup))
    quotas: list[float] = []
    if v2 is not None:
        quotas += [q for q in map(_read_v2_quota, _candidates(root, v2)) if q is not None]
    if v1 is not None:
        for mount in ("cpu,cpuacct", "cpu", "cpuacct,cpu"):
            if (root / mount).is_dir():
                quotas += [q for q in map(_read_v1_quota, _candidates(root / mount, v1)) if q is not None]
                break
    return min(quotas) if quotas else None


def available_cpus(proc_cgroup: str | Path = "/proc/self/cgroup",
                   cgroup_root: str | Path = "/sys/fs/cgroup") -> int:
    """Cores this process may use: the affinity mask capped by the cgroup quota (>= 1)."""
    n = affinity_cpus()
    quota = cgroup_cpu_quota(proc_cgroup, cgroup_root) if sys.platform.startswith("linux") else None
    if quota is not None:
        n = min(n, max(1, math.floor(quota)))
    return n


def default_threads(world: int = 1) -> int:
    """Intra-op threads per process when ``--threads`` is not given: an equal share of the
    available cores among `world` processes on this machine (at least 1)."""
    return max(1, available_cpus() // max(1, int(world)))


def configure_threads(threads: int | None = None, world: int = 1) -> int:
    """Set PyTorch's intra-op thread count (`threads` if given, else `default_threads(world)`)
    and return it."""
    import torch

    n = int(threads) if threads else default_threads(world)
    if n < 1:
        raise InputError(f"the number of threads must be at least 1 (--threads), got {threads}")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
