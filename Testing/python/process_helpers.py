"""Waiting for a process to end, for the tests that stop workers (each test says what 'alive' means)."""
from __future__ import annotations

import time
from typing import Callable


def gone_within(pid: int, seconds: float, alive: Callable[[int], bool]) -> bool:
    """True when `alive(pid)` turns false within `seconds` (polled every 50 ms)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False
