"""Stage progress on the terminal, as users of nnU-Net and TotalSegmentator expect it.

The pipeline reports `(fraction, message)` with messages that start with a stage name
("read: ...", "load" (the model), "register: ...", "preprocess: ...", "network: window 3/12", "postprocess:
..."); `StageProgress` turns them into one line per finished stage with its time. The
network stage shows its windows and an ETA: on a terminal as one line rewritten in place,
elsewhere (a log file, a scheduler's output) as plain lines every few seconds, never
carriage returns.
"""
from __future__ import annotations

import re
import sys
import time
from typing import TextIO

from ..inference.record import STAGES

_WINDOW = re.compile(r"window (\d+)/(\d+)")


def is_terminal(stream: TextIO) -> bool:
    """True when `stream` is an interactive terminal (progress may rewrite its line)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class StageProgress:
    """A `progress(fraction, message)` callback printing stage lines with times.

    `quiet` prints nothing. `every` is the least seconds between two plain network lines.
    Call `stage("write")` for stages the caller runs itself and `close()` at the end.
    """

    def __init__(self, stream: TextIO | None = None, quiet: bool = False, tty: bool | None = None,
                 every: float = 5.0, indent: str = "  "):
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.tty = is_terminal(self.stream) if tty is None else tty
        self.every = every
        self.indent = indent
        self.current: str | None = None
        self.started = 0.0
        self.detail = ""
        self.last_line = 0.0
        self.rewriting = False          # a terminal line is open (no newline yet)
        self.times: dict = {}

    def __call__(self, fraction: float, message: str) -> None:
        head, _, detail = str(message).partition(":")
        # A stage is entered once: the CLI reads and checks the scans before the model loads,
        # so the pipeline's own (instant) "read" of the checked scans is not a second stage.
        if head in STAGES and head != self.current and head not in self.times:
            self.stage(head)
        if self.current == "network":
            self._network(detail.strip())

    def stage(self, name: str) -> None:
        """Close the running stage (print its time) and start `name`."""
        now = time.perf_counter()
        self._finish(now)
        self.current, self.started, self.detail, self.last_line = name, now, "", now

    def close(self) -> None:
        """Print the last stage's line."""
        self._finish(time.perf_counter())
        self.current = None

    # -- internals ------------------------------------------------------------------------
    def _finish(self, now: float) -> None:
        if self.current is None:
            return
        seconds = now - self.started
        self.times[self.current] = seconds
        extra = f"  ({self.detail})" if self.detail else ""
        self._line(f"{self.current:<12}{seconds:6.1f} s{extra}", final=True)

    def _network(self, detail: str) -> None:
        m = _WINDOW.search(detail)
        if not m:
            return
        done, total = int(m.group(1)), int(m.group(2))
        now = time.perf_counter()
        self.detail = f"{total} windows"
        elapsed = now - self.started
        eta = elapsed / done * (total - done) if done else 0.0
        text = f"{'network':<12}window {done}/{total}, {elapsed:.0f} s, about {eta:.0f} s left"
        if self.tty:
            self._line(text, final=False)
        elif done < total and now - self.last_line >= self.every:
            self._line(text, final=True)
            self.last_line = now

    def _line(self, text: str, final: bool) -> None:
        if self.quiet:
            return
        if self.tty:
            # Rewrite the open line; pad so a shorter text covers a longer one.
            self.stream.write("\r" + self.indent + text.ljust(60) + ("\n" if final else ""))
            self.rewriting = not final
        else:
            self.stream.write(self.indent + text + "\n")
        self.stream.flush()
