"""The thread rule (lckd.base.threads): cgroup quota and affinity parsing on real files, the
--threads override, and the OpenMP wait policy set before torch loads."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lckd.base import threads


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _proc(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "proc_self_cgroup"
    p.write_text(text)
    return p


def test_cgroup_v2_quota_is_read_from_cpu_max(tmp_path):
    root = tmp_path / "cg"
    _write(root / "user.slice" / "job" / "cpu.max", "150000 100000\n")
    proc = _proc(tmp_path, "0::/user.slice/job\n")
    assert threads.cgroup_cpu_quota(proc, root) == pytest.approx(1.5)


def test_cgroup_v2_unlimited_is_none(tmp_path):
    root = tmp_path / "cg"
    _write(root / "job" / "cpu.max", "max 100000\n")
    assert threads.cgroup_cpu_quota(_proc(tmp_path, "0::/job\n"), root) is None


def test_cgroup_v2_tightest_limit_of_the_ancestors_counts(tmp_path):
    root = tmp_path / "cg"
    _write(root / "a" / "cpu.max", "100000 100000\n")          # 1 core on the parent
    _write(root / "a" / "b" / "cpu.max", "400000 100000\n")    # 4 on the process's own group
    _write(root / "cpu.max", "max 100000\n")
    assert threads.cgroup_cpu_quota(_proc(tmp_path, "0::/a/b\n"), root) == pytest.approx(1.0)


def test_cgroup_v1_cfs_quota(tmp_path):
    root = tmp_path / "cg"
    mount = root / "cpu,cpuacct" / "docker" / "abc"
    _write(mount / "cpu.cfs_quota_us", "250000\n")
    _write(mount / "cpu.cfs_period_us", "100000\n")
    proc = _proc(tmp_path, "12:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n")
    assert threads.cgroup_cpu_quota(proc, root) == pytest.approx(2.5)


def test_cgroup_v1_no_quota_is_none(tmp_path):
    root = tmp_path / "cg"
    _write(root / "cpu" / "cpu.cfs_quota_us", "-1\n")
    _write(root / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert threads.cgroup_cpu_quota(_proc(tmp_path, "2:cpu:/\n"), root) is None


def test_cgroup_v1_container_sees_only_its_own_root(tmp_path):
    # /proc/self/cgroup names the host's path, but the container mounts only its own group.
    root = tmp_path / "cg"
    _write(root / "cpu" / "cpu.cfs_quota_us", "200000\n")
    _write(root / "cpu" / "cpu.cfs_period_us", "100000\n")
    proc = _proc(tmp_path, "2:cpu:/kubepods/pod1/container9\n")
    assert threads.cgroup_cpu_quota(proc, root) == pytest.approx(2.0)


def test_missing_or_garbled_cgroup_files_mean_no_limit(tmp_path):
    assert threads.cgroup_cpu_quota(tmp_path / "absent", tmp_path / "none") is None
    root = tmp_path / "cg"
    _write(root / "job" / "cpu.max", "garbage\n")
    assert threads.cgroup_cpu_quota(_proc(tmp_path, "0::/job\nnot a cgroup line\n"), root) is None


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this platform")
def test_available_cpus_is_affinity_capped_by_quota(tmp_path):
    n = len(os.sched_getaffinity(0))
    unlimited = tmp_path / "none"
    assert threads.available_cpus(tmp_path / "absent", unlimited) == n
    root = tmp_path / "cg"
    _write(root / "cpu.max", "50000 100000\n")                 # half a core: still one thread
    assert threads.available_cpus(_proc(tmp_path, "0::/\n"), root) == 1
    _write(root / "cpu.max", f"{(n + 8) * 100000} 100000\n")   # a quota above the mask: the mask wins
    assert threads.available_cpus(_proc(tmp_path, "0::/\n"), root) == n


def _run(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=full)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_torch_threads_follow_the_affinity_mask_and_threads_overrides():
    cpu = sorted(os.sched_getaffinity(0))[0]
    code = (f"import os; os.sched_setaffinity(0, {{{cpu}}})\n"
            "import torch\n"
            "from lckd.base.threads import configure_threads\n"
            "print(configure_threads(), torch.get_num_threads())\n"
            "print(configure_threads(3), torch.get_num_threads())\n")
    r = _run(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "1", "3", "3"]


def test_bad_thread_count_is_a_user_error():
    from lckd.base.errors import InputError

    with pytest.raises(InputError, match="--threads"):
        threads.configure_threads(-2)


def test_wait_policy_is_passive_only_where_the_governor_cannot_adapt():
    if not threads.governor_possible():
        pytest.skip("no /proc/stat here: the passive policy is always set")
    # the governor adapts the thread count: OpenMP keeps its default (spinning) policy
    r = _run("import os, lckd.base.threads; lckd.base.threads.apply_wait_policy(['segment']); import torch; "
             "print(os.environ.get('OMP_WAIT_POLICY', 'unset'), lckd.base.threads.wait_policy_applied())")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["unset", "True"]
    # --threads fixes the count: then no spinning at barriers
    r = _run("import os, lckd.base.threads; lckd.base.threads.apply_wait_policy(['segment', '--threads', '2'])\n"
             "import torch; print(os.environ['OMP_WAIT_POLICY'])", {"OMP_DISPLAY_ENV": "VERBOSE"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["PASSIVE"]
    if "GOMP_SPINCOUNT" not in r.stderr:
        pytest.skip("torch's OpenMP runtime is not libgomp: its settings cannot be displayed")
    assert "GOMP_SPINCOUNT = '0'" in r.stderr   # libgomp printed its settings when torch loaded it


def test_set_wait_policy_env_rules(tmp_path, monkeypatch):
    env: dict = {}
    threads.set_wait_policy_env(env, ["segment", "--threads=1"])
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    threads.set_wait_policy_env(env, ["segment", "--threads", "1"])
    assert env == {"OMP_WAIT_POLICY": "ACTIVE"}
    monkeypatch.setattr(threads, "PROC_STAT", tmp_path / "absent")   # not Linux: nothing to adapt with
    env = {}
    threads.set_wait_policy_env(env, ["segment"])
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}


def _write_stat(path, ticks: list[int]) -> None:
    lines = ["cpu  0 0 0 0 0 0 0 0"] + [f"cpu{i} {t} 0 0 1000 0 0 0 0" for i, t in enumerate(ticks)]
    path.write_text("\n".join(lines) + "\n")


def test_governor_gives_pytorch_the_cores_others_leave(tmp_path):
    """The arithmetic on a /proc/stat file whose busy counters we advance by hand."""
    import os
    import time

    import torch

    stat, tick = tmp_path / "stat", os.sysconf("SC_CLK_TCK")
    cpus = sorted(os.sched_getaffinity(0))
    counters = {c: 0 for c in range(max(cpus) + 1)}
    _write_stat(stat, list(counters.values()))
    before = torch.get_num_threads()
    try:
        gov = threads.ThreadGovernor(2, interval=0.2, proc_stat=stat)
        time.sleep(0.4)
        counters[cpus[0]] += int(0.4 * tick) + 2          # another process kept one core busy
        _write_stat(stat, list(counters.values()))
        assert gov.update() == 1 == torch.get_num_threads()
        assert 0.8 < gov.others < 1.3
        time.sleep(0.3)                                   # ... and stopped
        assert gov.update() == 2 == torch.get_num_threads()
        time.sleep(0.01)
        assert gov.update() == 2 and gov.history == [1, 2]   # too soon to measure: unchanged
    finally:
        torch.set_num_threads(before)


def test_wait_policy_set_by_the_user_is_kept_and_late_import_is_reported():
    r = _run("import os, lckd.base.threads; lckd.base.threads.apply_wait_policy(['segment', '--threads=1']); "
             "print(os.environ['OMP_WAIT_POLICY'])", {"OMP_WAIT_POLICY": "ACTIVE"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ACTIVE"
    r = _run("import torch, lckd.base.threads; lckd.base.threads.apply_wait_policy(['segment']); "
             "print(lckd.base.threads.wait_policy_applied())")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
