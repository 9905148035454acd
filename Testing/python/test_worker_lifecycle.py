"""A worker that lets go (issue 29, defect 5 / item 5).

The worker (torch, the model, on a GPU a CUDA context) is started on first need (Apply, or on
module entry only when the user's setting says so), stopped after a configurable idle time and
when the scene closes or Slicer exits; its process exits, which frees its memory. The states and
the idle policy are a Qt-free helper (`LCKDSegmentationLib.workerstate`), tested here with a fake
clock; `SegmentationLogic` drives it, tested with the real worker and the bundled phantom model;
the panel's use of it is checked in the module source (only Slicer's GUI can run it).
"""
from __future__ import annotations

import ast
import os
import time

import pytest

from LCKDSegmentationLib.workerstate import (
    DEFAULT_IDLE_MINUTES,
    IDLE_MINUTES_KEY,
    START_ON_ENTRY_KEY,
    IdlePolicy,
    StartReason,
    WorkerSettings,
    WorkerState,
)
from module_source import calls, method


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# ------------------------------------------------------------------- states and idle policy


def test_the_state_follows_the_process_the_model_and_the_jobs():
    assert IdlePolicy.state(running=False, loaded=True, busy=True) is WorkerState.STOPPED
    assert IdlePolicy.state(running=True, loaded=False, busy=False) is WorkerState.STARTING
    assert IdlePolicy.state(running=True, loaded=True, busy=False) is WorkerState.READY
    assert IdlePolicy.state(running=True, loaded=True, busy=True) is WorkerState.BUSY


def test_a_ready_worker_is_stopped_after_the_idle_minutes_counted_from_its_last_use():
    clock = FakeClock()
    policy = IdlePolicy(5, clock)
    clock.advance(299)
    assert not policy.due(WorkerState.READY) and policy.seconds_left(WorkerState.READY) == pytest.approx(1)
    policy.used()                                  # a job ended: the count starts again
    clock.advance(299)
    assert not policy.due(WorkerState.READY)
    clock.advance(1)
    assert policy.due(WorkerState.READY)
    # loading, busy or already stopped: never idle
    for state in (WorkerState.STARTING, WorkerState.BUSY, WorkerState.STOPPED):
        assert not policy.due(state) and policy.seconds_left(state) is None


def test_zero_minutes_keeps_the_worker_and_the_minutes_can_change_while_it_runs():
    clock = FakeClock()
    policy = IdlePolicy(0, clock)
    clock.advance(10 * 24 * 3600)
    assert not policy.due(WorkerState.READY) and policy.seconds_left(WorkerState.READY) is None
    policy.idle_minutes = 1.5                      # the user changed the setting
    assert policy.due(WorkerState.READY)


def test_settings_defaults_stored_values_and_bad_values():
    assert WorkerSettings.read({}.get) == WorkerSettings(DEFAULT_IDLE_MINUTES, False)
    assert 1 <= DEFAULT_IDLE_MINUTES <= 15          # a few minutes
    # QSettings gives strings back on some platforms
    assert WorkerSettings.read({IDLE_MINUTES_KEY: "2.5", START_ON_ENTRY_KEY: "true"}.get) == WorkerSettings(2.5, True)
    assert WorkerSettings.read({IDLE_MINUTES_KEY: 0, START_ON_ENTRY_KEY: False}.get) == WorkerSettings(0, False)
    for bad in ("soon", -3, None, [1]):
        assert WorkerSettings.read({IDLE_MINUTES_KEY: bad}.get).idle_minutes == DEFAULT_IDLE_MINUTES
    store: dict = {}
    store.update(WorkerSettings(12, True).values())
    assert WorkerSettings.read(store.get) == WorkerSettings(12, True)


def test_the_worker_starts_on_first_need_and_on_entry_only_when_asked():
    default, eager = WorkerSettings(), WorkerSettings(start_on_entry=True)
    assert default.start_wanted(StartReason.APPLY, running=False)
    assert not default.start_wanted(StartReason.ENTRY, running=False)
    assert eager.start_wanted(StartReason.ENTRY, running=False)
    # another model or device: replace a running worker, never start one the user did not ask for
    assert default.start_wanted(StartReason.CHOICE, running=True)
    assert not default.start_wanted(StartReason.CHOICE, running=False)
    assert eager.start_wanted(StartReason.CHOICE, running=False)


# --------------------------------------------------------------- the real worker, headless


def _gone_within(pid: int, seconds: float) -> bool:
    from process_helpers import gone_within

    def alive(p: int) -> bool:
        try:
            os.waitpid(p, os.WNOHANG)
        except ChildProcessError:
            pass
        try:
            os.kill(p, 0)
        except ProcessLookupError:
            return False
        return True

    return gone_within(pid, seconds, alive)


def _wait(logic, state: WorkerState, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while logic.workerState() is not state:
        assert time.monotonic() < deadline, f"worker never became {state.value}: {logic.workerState().value}"
        logic.poll()
        time.sleep(0.05)


@pytest.mark.skipif(os.name != "posix", reason="process checks use POSIX signals")
def test_the_real_worker_starts_on_need_stops_when_idle_and_its_process_exits(tmp_path, segmentation_converters):
    slicer = pytest.importorskip("slicer")
    sitk = pytest.importorskip("SimpleITK")
    from conftest import TEST_MODEL
    from lckd.research.phantom import make_phantom
    from LCKDSegmentationLib.logic import SegmentationLogic

    clock = FakeClock()
    logic = SegmentationLogic(slicer.vtkMRMLScene())
    logic.idle = IdlePolicy(5, clock)
    try:
        assert logic.workerState() is WorkerState.STOPPED          # nothing runs until it is needed
        assert not logic.releaseIdleWorker()
        worker = logic.startWorker(model=TEST_MODEL, device="cpu")
        assert logic.workerState() is WorkerState.STARTING
        _wait(logic, WorkerState.READY)
        assert logic.modelInfo()["name"] == TEST_MODEL
        pid = worker.pid
        clock.advance(5 * 60 - 1)
        assert not logic.releaseIdleWorker() and worker.running
        clock.advance(1)
        started = time.monotonic()
        assert logic.releaseIdleWorker()
        assert time.monotonic() - started < 1.0                    # the GUI thread never waits for it
        assert logic.workerState() is WorkerState.STOPPED and logic.worker is None
        assert _gone_within(pid, 30), "the idle worker's process did not exit"
        # the panel still names the model it had loaded
        assert logic.modelInfo(TEST_MODEL)["name"] == TEST_MODEL

        # the next Apply starts a new worker; busy while it segments, ready after
        image = make_phantom(3, shape=(32, 40, 40)).to_sitk()[0]["T1ce"]
        sitk.WriteImage(image, str(tmp_path / "t1ce.nii.gz"))
        volume = logic.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "AX T1 POST GD")
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(str(tmp_path / "t1ce.nii.gz"))
        assert storage.ReadData(volume)
        job = logic.startSegment({"T1ce": volume}, device="cpu", model=TEST_MODEL, show3D=False)
        assert logic.worker is not None and logic.worker.pid != pid
        assert logic.workerState() is WorkerState.BUSY
        clock.advance(3600)
        assert not logic.releaseIdleWorker()                       # never while a job runs
        deadline = time.monotonic() + 300
        while not job.done:
            assert time.monotonic() < deadline
            logic.pollJob(job)
            time.sleep(0.05)
        assert not job.failed, job.reply
        assert logic.workerState() is WorkerState.READY
        assert not logic.releaseIdleWorker()                       # the job's end counts as use
        second = logic.worker.pid
    finally:
        logic.shutdown()                                            # scene close and module cleanup
    assert logic.workerState() is WorkerState.STOPPED
    assert _gone_within(second, 30)


# ------------------------------------------------------------------- the panel (module source)




def _guardedcalls(node: ast.AST, call: str) -> list[str]:
    """The test of each `if` that `call` runs under (empty string: not under an `if`)."""
    out = []
    for n in ast.walk(node):
        if isinstance(n, ast.If):
            if any(c == call for c in calls(ast.Module(body=n.body, type_ignores=[]))):
                out.append(ast.unparse(n.test))
    top = [c for s in node.body if not isinstance(s, ast.If) for c in calls(s)]
    return out + ([""] if call in top else [])


def test_entering_the_module_starts_the_worker_only_when_the_setting_says_so():
    guards = _guardedcalls(method("enter"), "self.prepareWorker")
    assert guards and all("StartReason.ENTRY" in g for g in guards), guards
    guards = _guardedcalls(method("onParameterNodeModified"), "self.prepareWorker")
    assert guards and all("StartReason.CHOICE" in g for g in guards), guards


def test_the_settings_are_the_users_and_the_logic_follows_them():
    setup = ast.unparse(method("setup"))
    assert "WorkerSettings.read" in setup and "qt.QSettings().value" in setup
    assert "self.logic.segmentation.idle.idle_minutes" in setup
    changed = ast.unparse(method("onWorkerSettingsChanged"))
    assert "setValue" in changed and "self.logic.segmentation.idle.idle_minutes" in changed


def test_the_timer_stops_an_idle_worker_and_shows_the_state_and_scene_close_and_exit_stop_it():
    timer = calls(method("onTimer"))
    assert "self.logic.segmentation.releaseIdleWorker" in timer and "self.updateWorkerState" in timer
    # hidden module: the timer keeps running while a worker is there to be stopped
    assert "self.workerRunning" in calls(method("exit"))
    assert "self.logic.segmentation.shutdown" in calls(method("onSceneStartClose"))
    assert "self.logic.shutdown" in calls(method("cleanup"))   # Slicer calls cleanup() when it exits
    state = ast.unparse(method("updateWorkerState"))
    for member in ("STOPPED", "STARTING", "READY", "BUSY"):
        assert f"WorkerState.{member}" in state
