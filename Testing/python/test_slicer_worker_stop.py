"""Stopping the worker never blocks Slicer's GUI thread (workerclient.py, logic.py).

The module stops the worker on the GUI thread when the model or device changes and in
cleanup(). A worker still loading its model reads no requests, so a stop that waits for it
froze Slicer for up to 10 s. The stand-in worker here is a real process that, like a worker
busy loading, ignores its input.
"""
from __future__ import annotations

import os
import stat
import sys
import time

import pytest

from process_helpers import gone_within

slicer = pytest.importorskip("slicer")

from LCKDSegmentationLib.logic import SegmentationLogic  # noqa: E402
from LCKDSegmentationLib.workerclient import WorkerClient  # noqa: E402

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the stand-in worker is a shell script")


def _busy_worker(tmp_path):
    path = tmp_path / "busy_worker.sh"
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" -c "import time; time.sleep(120)"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)   # reaped by the client's thread: ECHILD
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _gone_within(pid: int, seconds: float) -> bool:
    return gone_within(pid, seconds, _alive)


def test_stop_without_waiting_returns_at_once_and_the_worker_still_ends(tmp_path):
    client = WorkerClient(python=_busy_worker(tmp_path))
    client.start()
    pid = client.pid
    time.sleep(0.3)
    started = time.monotonic()
    client.stop(timeout=1.0, wait=False)
    assert time.monotonic() - started < 0.5
    assert client.proc is None and not client.running
    assert _gone_within(pid, 10), "the busy worker was not killed after the timeout"


def test_logic_switching_device_and_shutdown_do_not_wait_for_a_busy_worker(tmp_path):
    logic = SegmentationLogic(slicer.vtkMRMLScene(), python=_busy_worker(tmp_path))
    first = logic.startWorker(device="cpu")
    first_pid = first.pid
    time.sleep(0.3)
    started = time.monotonic()
    second = logic.startWorker(device="auto")   # the GUI's reaction to a new device choice
    assert time.monotonic() - started < 1.0
    assert second is not first and second.running
    second_pid = second.pid
    started = time.monotonic()
    logic.shutdown()                            # the module's cleanup()
    assert time.monotonic() - started < 1.0
    assert _gone_within(first_pid, 20) and _gone_within(second_pid, 20)
