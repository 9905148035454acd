"""When the background worker runs: its states, the settings that rule it and the idle policy.

Qt-free and Slicer-free (tested with a fake clock). The worker holds torch, the model and, on a
GPU, a CUDA context; so it is started on first need (Apply, or on module entry only when
`WorkerSettings.start_on_entry` says so), and stopped once it has been idle for
`WorkerSettings.idle_minutes` (its process exits, which frees its memory, GPU memory included),
and when the scene closes or Slicer exits. `SegmentationLogic` keeps an `IdlePolicy`; the module
panel reads the state from it and asks it, on each timer tick, whether to stop the worker.
"""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import Any, Callable

#: Minutes without work after which the worker is stopped (0: never).
DEFAULT_IDLE_MINUTES = 5.0
#: Application settings (QSettings keys) of the worker; saved per user, not with the scene.
IDLE_MINUTES_KEY = "LCKDSegmentation/WorkerIdleMinutes"
START_ON_ENTRY_KEY = "LCKDSegmentation/StartWorkerOnEntry"


class WorkerState(enum.Enum):
    """What the panel shows about the worker."""

    STOPPED = "stopped"    # no process: nothing held in memory
    STARTING = "starting"  # the process runs and loads the model
    READY = "ready"        # model loaded, no job
    BUSY = "busy"          # a segmentation runs


class StartReason(enum.Enum):
    """Why the panel might start the worker."""

    APPLY = "apply"        # always: the job needs it
    ENTRY = "entry"        # the module was shown
    CHOICE = "choice"      # another model or device was chosen


@dataclass(frozen=True)
class WorkerSettings:
    """The user's worker settings: idle minutes before the worker stops (0: never) and whether
    showing the module starts it (to have the model loaded before Apply)."""

    idle_minutes: float = DEFAULT_IDLE_MINUTES
    start_on_entry: bool = False

    @classmethod
    def read(cls, value: Callable[[str], Any]) -> WorkerSettings:
        """From a settings store (`value(key)`, e.g. `qt.QSettings().value`; None when unset). An
        unreadable value falls back to its default: a bad setting must not stop the panel."""
        try:
            minutes = float(value(IDLE_MINUTES_KEY))
            minutes = minutes if minutes >= 0 else DEFAULT_IDLE_MINUTES
        except (TypeError, ValueError):
            minutes = DEFAULT_IDLE_MINUTES
        start = value(START_ON_ENTRY_KEY)
        # QSettings gives back "true"/"false" strings on some platforms
        start_on_entry = str(start).strip().lower() in ("true", "1", "yes") if start is not None else False
        return cls(minutes, start_on_entry)

    def values(self) -> dict:
        """{key: value} to write back to the settings store."""
        return {IDLE_MINUTES_KEY: self.idle_minutes, START_ON_ENTRY_KEY: self.start_on_entry}

    def start_wanted(self, reason: StartReason, running: bool) -> bool:
        """Whether the panel starts a worker now: on Apply always; on module entry only when the
        setting says so; for a new model or device choice only if one is running already (it is
        replaced) or the setting asks for a loaded model."""
        if reason is StartReason.APPLY:
            return True
        if reason is StartReason.ENTRY:
            return self.start_on_entry
        return running or self.start_on_entry


class IdlePolicy:
    """Tracks when the worker was last used and says when it has been idle long enough to stop.

    `clock` is a monotonic clock in seconds (a fake one in tests). Idle time counts from the
    last `used()` (a start, a request, the end of a job); a worker still loading its model or
    running a job is never idle.
    """

    def __init__(self, idle_minutes: float = DEFAULT_IDLE_MINUTES, clock: Callable[[], float] = time.monotonic):
        self.idle_minutes = float(idle_minutes)
        self._clock = clock
        self._last_used = clock()

    def used(self) -> None:
        self._last_used = self._clock()

    @staticmethod
    def state(running: bool, loaded: bool, busy: bool) -> WorkerState:
        """The worker's state from its process (running), its 'ready' message (loaded) and the jobs in flight."""
        if not running:
            return WorkerState.STOPPED
        if busy:
            return WorkerState.BUSY
        return WorkerState.READY if loaded else WorkerState.STARTING

    def idle_seconds(self) -> float:
        return max(0.0, self._clock() - self._last_used)

    def seconds_left(self, state: WorkerState) -> float | None:
        """Seconds until a ready worker is stopped; None when it will not be (not ready, or never)."""
        if state is not WorkerState.READY or self.idle_minutes <= 0:
            return None
        return max(0.0, 60.0 * self.idle_minutes - self.idle_seconds())

    def due(self, state: WorkerState) -> bool:
        """Whether a worker in `state` is to be stopped now for being idle."""
        left = self.seconds_left(state)
        return left is not None and left <= 0.0
