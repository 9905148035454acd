"""The background worker's line protocol, shared by the worker (`lckd.frontends.worker`) and its client
(the Slicer module's `LCKDSegmentationLib.workerclient`): one JSON object per line each way.

Both sides import these names from here, so a request, event or error name exists once.
Standard library only (`lckd.inference.options` is too): the client runs in Slicer's GUI
process, which must not load torch.
``lckd.frontends.worker``'s docstring describes the messages.
"""
from __future__ import annotations

import json
from typing import Any

from ..inference.options import SegmentOptions

#: Sent in the worker's ``ready`` event; the client refuses a worker that speaks another.
PROTOCOL_VERSION = 1

#: Requests (``op``).
SEGMENT, CANCEL, PING, INFO, SHUTDOWN = "segment", "cancel", "ping", "info", "shutdown"
OPS = (SEGMENT, CANCEL, PING, INFO, SHUTDOWN)
#: Options of a segment request naming files to write (one path, or a list for "output").
PATH_OPTIONS = ("output", "probabilities_output", "brain_mask_output")
#: Options a segment request may carry: the files to write and the run's options, one per
#: field of `SegmentOptions` (anything else is refused, so typos are not silently ignored).
SEGMENT_OPTIONS = frozenset(PATH_OPTIONS + SegmentOptions.names())

#: Replies (``event``). ``ready`` comes once, with id null; every request ends with exactly
#: one of FINAL_EVENTS carrying its id.
READY, PROGRESS, LOG, RESULT, ERROR = "ready", "progress", "log", "result", "error"
FINAL_EVENTS = (RESULT, ERROR)
#: ``level`` of a ``log`` event.
WARNING, INFO_LEVEL = "warning", "info"

#: ``error`` names besides the core's exception classes (InputError, ModelError, ...).
MALFORMED = "MalformedRequest"
CANCELLED = "Cancelled"
INTERNAL = "InternalError"
OUT_OF_MEMORY = "MemoryError"
WORKER_DIED = "WorkerDied"            # made by the client when the process ends unasked
PROTOCOL_MISMATCH = "ProtocolMismatch"  # made by the client for a worker of another version

#: Exit status of a worker whose model cannot be loaded (after one fatal ``error``).
FATAL_EXIT = 3


def encode(message: dict) -> str:
    """One protocol line (with its newline) for a message."""
    return json.dumps(message, default=str) + "\n"


def decode(line: str) -> dict[str, Any]:
    """The message of one line; ValueError if it is not a JSON object."""
    msg = json.loads(line)
    if not isinstance(msg, dict):
        raise ValueError("a protocol line must be a JSON object")
    return msg
