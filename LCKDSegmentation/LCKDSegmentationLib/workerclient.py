"""Client for the background worker (`lckd.frontends.worker`): start it, send requests, poll replies.

Slicer-free and Qt-free so it can be tested headless: the Slicer module polls it from a
QTimer, the console API waits on it. Replies are the worker's JSON objects (see
`lckd.frontends.worker` for the protocol); when the process dies, every request still waiting gets
a synthetic ``error`` reply (``"error": "WorkerDied"``) that says why, and the next
request starts a fresh worker. Message names and the protocol version come from
`lckd.frontends.protocol`, which the worker uses too.

The worker runs in a process group of its own, and cancelling by force or stopping it kills
the whole group: Slicer starts it through the `PythonSlicer` launcher, and killing only
the launcher would leave the Python process below it running with the model loaded.
"""
from __future__ import annotations

import atexit
import collections
import importlib.util
import itertools
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from lckd.frontends.protocol import (
    CANCEL,
    CANCELLED,
    ERROR,
    FINAL_EVENTS,
    INFO_LEVEL,
    LOG,
    PROTOCOL_MISMATCH,
    PROTOCOL_VERSION,
    READY,
    SHUTDOWN,
    WORKER_DIED,
    decode,
    encode,
)

log = logging.getLogger("LCKDSegmentation.worker")

_EOF = object()


class WorkerError(RuntimeError):
    """A request ended with an ``error`` reply; ``kind`` is the worker's error name."""

    def __init__(self, reply: dict):
        self.reply = reply
        self.kind = str(reply.get("error", "Error"))
        super().__init__(str(reply.get("message", "the worker reported an error")))


def default_python() -> str:
    """Slicer's launcher-wrapped Python when running inside Slicer, else this interpreter."""
    # PythonSlicer sets up Slicer's library paths; a bare sys.executable inside Slicer may not.
    return shutil.which("PythonSlicer") or sys.executable


def core_root() -> str:
    """Folder that holds the `lckd` package (put on the worker's PYTHONPATH)."""
    spec = importlib.util.find_spec("lckd")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the lckd core package is not installed next to the LCKDSegmentation module")
    return str(Path(list(spec.submodule_search_locations)[0]).parent)


def kill_process_tree(proc: subprocess.Popen) -> None:
    """Kill `proc` and every process in its group (it was started as a group leader)."""
    if proc.returncode is not None:
        return  # reaped already: its group id may now belong to someone else
    if os.name == "posix":
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the pid is still ours (alive or a zombie)
        except (ProcessLookupError, PermissionError):
            pass
    else:
        # /T: the whole tree below the launcher; /F: without asking
        subprocess.run(["taskkill", "/T", "/F", "/PID", str(proc.pid)], capture_output=True,
                       creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
    if proc.poll() is None:
        proc.kill()


#: Workers stopped without waiting whose end has not been seen yet (killed at interpreter exit).
_REAPING: set = set()


def _reap(proc: subprocess.Popen, timeout: float) -> None:
    """Wait up to `timeout` s for a worker asked to shut down, then kill its group; close its pipes."""
    try:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_process_tree(proc)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("worker %s did not end after it was killed", proc.pid)
        WorkerClient._close(proc)
    finally:
        _REAPING.discard(proc)


@atexit.register
def _kill_unreaped() -> None:
    # Daemon reaper threads die with the interpreter: never leave a worker (and its model) behind.
    for proc in list(_REAPING):
        kill_process_tree(proc)


def describe_exit(code: int | None) -> str:
    """'exit status 1' or 'killed by signal SIGKILL' for a Popen return code."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class WorkerClient:
    """One background worker process and the requests in flight to it."""

    def __init__(self, model: str | None = None, device: str = "auto", python: str | None = None,
                 threads: int | None = None, env: dict | None = None):
        self.model = model
        self.device = device
        self.python = python or default_python()
        self.threads = threads
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen | None = None
        self.info: dict | None = None          # the worker's 'ready' message once loaded
        self._replies: queue.Queue = queue.Queue()
        self._stderr: collections.deque = collections.deque(maxlen=200)
        self._pending: set[str] = set()
        self._ids = itertools.count(1)
        self._stopping = False
        self._cancelled_by_kill = False
        self._fatal: dict | None = None        # the worker's fatal error (model or device refused)

    # -- process -----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def ready(self) -> bool:
        return self.running and self.info is not None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def command(self) -> list[str]:
        cmd = [self.python, "-m", "lckd.frontends.worker", "--device", str(self.device or "auto")]
        if self.model:
            cmd += ["--model", str(self.model)]
        if self.threads:
            cmd += ["--threads", str(int(self.threads))]
        return cmd

    def start(self) -> None:
        """Start a worker process (no-op if one is running); returns at once, loading goes on."""
        if self.running:
            return
        leftovers = self._drain_dead()
        self._reset()
        for msg in leftovers:  # final replies of the dead worker's requests stay visible to poll()
            self._replies.put(msg)
        env = dict(os.environ)
        env.update(self.extra_env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (core_root(), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONIOENCODING"] = "utf-8"
        # no console window on Windows; a group of its own so kill_process_tree reaches all of it
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) | getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
        log.debug("starting worker: %s", " ".join(self.command()))
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, creationflags=flags,
                                     start_new_session=os.name == "posix")
        replies, stderr = self._replies, self._stderr
        threading.Thread(target=self._read_stdout, args=(self.proc, replies), daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(self.proc, stderr), daemon=True).start()

    def _drain_dead(self) -> list[dict]:
        """Collect what a worker that died unnoticed still had to say (its EOF comes quickly)."""
        out: list[dict] = []
        deadline = time.monotonic() + 5
        while self.proc is not None and time.monotonic() < deadline:
            out += self.poll()
            if self.proc is not None:
                time.sleep(0.01)
        if self.proc is not None:
            self._close(self.proc)
            self.proc = None
        return out

    def _reset(self) -> None:
        # Fresh queues so a dead worker's late lines can never be taken for the new one's.
        self._replies = queue.Queue()
        self._stderr = collections.deque(maxlen=200)
        self._pending.clear()
        self._stopping = False
        self._cancelled_by_kill = False
        self._fatal = None
        self.info = None

    @staticmethod
    def _read_stdout(proc: subprocess.Popen, replies: queue.Queue) -> None:
        try:
            for raw in iter(proc.stdout.readline, b""):
                text = raw.decode("utf-8", "replace").strip()
                if not text:
                    continue
                try:
                    msg = decode(text)
                except ValueError:
                    msg = {"id": None, "event": LOG, "level": INFO_LEVEL, "message": text}
                replies.put(msg)
        except (OSError, ValueError):
            pass  # the pipe was closed under us by stop()
        replies.put(_EOF)

    @staticmethod
    def _read_stderr(proc: subprocess.Popen, tail: collections.deque) -> None:
        try:
            for raw in iter(proc.stderr.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip()
                tail.append(line)
                log.debug("worker: %s", line)
        except (OSError, ValueError):
            pass

    def stop(self, timeout: float = 5.0, wait: bool = True) -> None:
        """Ask the worker to shut down; kill it (whole group) if it does not within `timeout` s.

        With `wait=False` this returns at once: the client forgets the process and a
        background thread waits for it and kills it if needed. The Slicer module stops
        workers from the GUI thread (model or device changed, module cleanup), and a worker
        still loading its model does not read its requests, so waiting would freeze Slicer
        for up to twice `timeout`.
        """
        proc = self.proc
        if proc is None:
            return
        self._stopping = True
        if proc.poll() is None:
            try:
                self._write({"id": SHUTDOWN, "op": SHUTDOWN})
                proc.stdin.close()
            except OSError:
                pass
        self.proc = None
        self.info = None
        if wait:
            _reap(proc, timeout)
        else:
            _REAPING.add(proc)
            threading.Thread(target=_reap, args=(proc, timeout), name="lckd-worker-reaper", daemon=True).start()

    def kill(self, cancel: bool = False) -> None:
        """Kill the worker at once; with `cancel`, requests in flight end as Cancelled.

        Cancel falls back to this when a job does not stop in time.
        """
        if self.proc is not None and self.proc.poll() is None:
            self._stopping = True
            self._cancelled_by_kill = cancel
            kill_process_tree(self.proc)
            self.proc.wait(10)

    @staticmethod
    def _close(proc: subprocess.Popen) -> None:
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass

    # -- requests ----------------------------------------------------------------------
    def _write(self, msg: dict) -> None:
        self.proc.stdin.write(encode(msg).encode("utf-8"))
        self.proc.stdin.flush()

    def send(self, op: str, **fields: Any) -> str:
        """Send a request (starting a worker if none runs); returns its id."""
        if not self.running:
            self.start()
        rid = str(next(self._ids))
        try:
            self._write({"id": rid, "op": op, **fields})
        except OSError:
            pass  # the worker just died: poll() reports it for this id
        self._pending.add(rid)
        return rid

    def send_raw(self, line: str) -> None:
        """Write one raw line (tests use it to check malformed input handling)."""
        if not self.running:
            self.start()
        self.proc.stdin.write(line.encode("utf-8") + b"\n")
        self.proc.stdin.flush()

    def cancel(self, target: str | None = None) -> str:
        return self.send(CANCEL, target=target)

    def poll(self) -> list[dict]:
        """Replies that arrived since the last call, without waiting."""
        out = []
        while True:
            try:
                msg = self._replies.get_nowait()
            except queue.Empty:
                return out
            if msg is _EOF:
                out += self._on_exit()
                continue
            event = msg.get("event")
            if event == READY and msg.get("protocol") != PROTOCOL_VERSION:
                msg = {"id": None, "event": ERROR, "error": PROTOCOL_MISMATCH, "fatal": True,
                       "message": f"the LCKD worker speaks protocol {msg.get('protocol')!r}, this module "
                                  f"{PROTOCOL_VERSION}: the lckd core and the Slicer module are from "
                                  "different versions; reinstall the extension"}
                self.kill()
                event = ERROR
            if event == READY:
                self.info = msg
            elif event == ERROR and msg.get("fatal"):
                self._fatal = msg
            if event in FINAL_EVENTS and msg.get("id") is not None:
                self._pending.discard(str(msg.get("id")))
            out.append(msg)

    def _on_exit(self) -> list[dict]:
        proc = self.proc
        if proc is None:
            return []
        try:
            code = proc.wait(10)
        except subprocess.TimeoutExpired:
            code = proc.poll()
        expected = self._stopping
        self._close(proc)
        self.proc = None
        self.info = None
        if expected and not self._pending:
            return []
        if expected and self._cancelled_by_kill:
            kind, message = CANCELLED, "cancelled (the worker was stopped; the next request starts a new one)"
        elif self._fatal is not None and self._fatal.get("error") != PROTOCOL_MISMATCH:
            # It refused to start (model, device) and said why: that reason, not "exit status 3",
            # is the answer to every request it had; its own fatal reply already went out.
            kind, message = str(self._fatal.get("error", WORKER_DIED)), str(self._fatal.get("message"))
        else:
            kind, message = WORKER_DIED, self.death_message(code)
        replies = [{"id": rid, "event": ERROR, "error": kind, "message": message}
                   for rid in sorted(self._pending, key=int)]
        self._pending.clear()
        if not replies and self._fatal is not None and kind != WORKER_DIED:
            return []
        return replies or [{"id": None, "event": ERROR, "error": kind, "message": message}]

    def death_message(self, code: int | None) -> str:
        reason = str(self._fatal.get("message")) if self._fatal else ""
        reason = reason or next((line.strip() for line in reversed(self._stderr) if line.strip()), "")
        text = f"The LCKD segmentation worker stopped unexpectedly ({describe_exit(code)})."
        if reason:
            text += f" Last message: {reason}"
        return text + " The next request starts a new worker."

    def wait_ready(self, timeout: float | None = None) -> dict:
        """Block until the model is loaded; raises WorkerError if the worker dies first."""
        if not self.running:
            self.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.info is None:
            for msg in self.poll():
                if msg.get("event") == ERROR and (msg.get("fatal") or msg.get("error") == WORKER_DIED):
                    raise WorkerError(msg)
            if self.info is None:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"the LCKD worker did not load its model within {timeout:g} s")
                time.sleep(0.02)
        return self.info

    def request(self, op: str, timeout: float | None = None,
                on_event: Callable[[dict], None] | None = None, **fields: Any) -> dict:
        """Send a request and block until its result (returned) or error (raised as WorkerError)."""
        rid = self.send(op, **fields)
        return self.wait(rid, timeout=timeout, on_event=on_event)

    def wait(self, rid: str, timeout: float | None = None,
             on_event: Callable[[dict], None] | None = None) -> dict:
        """Block until request `rid` ends; replies to other requests go to `on_event` too."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for msg in self.poll():
                if on_event is not None:
                    on_event(msg)
                if msg.get("id") == rid and msg.get("event") in FINAL_EVENTS:
                    if msg["event"] == ERROR:
                        raise WorkerError(msg)
                    return msg
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"no answer from the LCKD worker to request {rid} within {timeout:g} s")
            time.sleep(0.02)
