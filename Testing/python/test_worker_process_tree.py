"""The worker client kills the worker's whole process tree (Slicer starts the worker through
a launcher), and refuses a worker that speaks another protocol version."""
from __future__ import annotations

import stat
import sys
import time
from pathlib import Path

import pytest

from lckd.frontends.protocol import CANCELLED, PROTOCOL_MISMATCH, PROTOCOL_VERSION
from LCKDSegmentationLib.workerclient import WorkerClient, WorkerError
from process_helpers import gone_within

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _gone_within(pid: int, seconds: float) -> bool:
    return gone_within(pid, seconds, _alive)


def _script(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_cancel_by_kill_ends_the_python_below_a_launcher(tmp_path, small_case):
    # Like PythonSlicer: a launcher process that runs the real interpreter as its child
    # (the command after it keeps the shell from exec'ing into Python).
    launcher = _script(tmp_path / "launcher.sh", f'#!/bin/sh\n"{sys.executable}" "$@"\ncode=$?\nexit $code\n')
    client = WorkerClient(python=launcher, device="cpu", threads=1)
    try:
        ready = client.wait_ready(timeout=240)
        inner = int(ready["pid"])
        assert ready["protocol"] == PROTOCOL_VERSION
        assert inner != client.pid and _alive(inner) and _alive(client.pid)
        paths, _ = small_case
        rid = client.send("segment", inputs={m: str(p) for m, p in paths.items()},
                          options={"output": str(tmp_path / "out.nii.gz")})
        deadline = time.monotonic() + 120
        while not any(m.get("id") == rid and m.get("event") == "progress" for m in client.poll()):
            assert time.monotonic() < deadline, "no progress from the worker"
            time.sleep(0.01)
        launcher_pid = client.pid
        client.kill(cancel=True)                       # what Cancel does when a job does not stop
        with pytest.raises(WorkerError) as err:
            client.wait(rid, timeout=30)
        assert err.value.kind == CANCELLED
        assert _gone_within(inner, 10), "the worker below the launcher outlived the cancel"
        assert not _alive(launcher_pid)
        assert not (tmp_path / "out.nii.gz").exists()
    finally:
        client.stop()


def test_a_worker_of_another_protocol_version_is_refused_and_stopped(tmp_path):
    fake = _script(tmp_path / "old_worker.sh",
                   f'#!/bin/sh\nexec "{sys.executable}" -c \'import sys; '
                   'print("{\\"id\\": null, \\"event\\": \\"ready\\", \\"protocol\\": 0}", flush=True); '
                   "sys.stdin.read()'\n")
    client = WorkerClient(python=fake)
    try:
        client.start()
        pid = client.pid
        with pytest.raises(WorkerError) as err:
            client.wait_ready(timeout=60)
        assert err.value.kind == PROTOCOL_MISMATCH and "different versions" in str(err.value)
        assert _gone_within(pid, 10) and client.info is None
    finally:
        client.stop()


def test_a_graceful_stop_ends_launcher_and_worker(tmp_path):
    launcher = _script(tmp_path / "launcher.sh", f'#!/bin/sh\n"{sys.executable}" "$@"\ncode=$?\nexit $code\n')
    client = WorkerClient(python=launcher, device="cpu", threads=1)
    inner = int(client.wait_ready(timeout=240)["pid"])
    outer = client.pid
    client.stop(timeout=30)
    assert _gone_within(inner, 10) and not _alive(outer) and client.proc is None
