"""Long-lived background worker: load the model once, serve requests over stdin/stdout.

Run as ``python -m lckd.frontends.worker --model M --device D``. The Slicer module starts it with
Slicer's own Python on first need (Apply, or module entry when the user's setting asks for it),
polls it without blocking the GUI, and stops it when idle, on scene close and on exit
(`LCKDSegmentationLib.workerstate`): the process exits, freeing the model's memory.

Protocol: one JSON object per line in each direction (UTF-8); its names and version live in
`lckd.frontends.protocol`, which the Slicer module's client imports too.

Requests (stdin)::

    {"id": "7", "op": "segment", "inputs": {"T1ce": "/tmp/x/T1ce.nrrd", ...},
     "options": {"output": "/tmp/x/label.nrrd", "reference": "T1ce", "labels": "brats2018",
                 # "output" may also be a list, e.g. ["/o/case.seg.nrrd", "/o/case.nii.gz"]
                 "register": false, "postprocess": false, "probabilities": false,
                 # raw scans: "preprocess": "auto"|"on"|"off", "brain_extractor": "deepbet",
                 # "bias_correction": false, "brain_mask_output": "/tmp/x/brainmask.nrrd",
                 # "mirrors": 1 (2, 4, 8: mirrored copies of each window averaged, slower),
                 # "overlap", "sw_batch_size", "max_memory_gb": as `lckd segment`'s options;
                 # one key per field of lckd.inference.options.SegmentOptions, null = its default
                 # ("labels": null and "postprocess": null follow the model card)
                 }}
    {"id": "8", "op": "cancel", "target": "7"}    # target omitted: cancel everything
    {"id": "9", "op": "ping"} | {"id": "10", "op": "info"} | {"id": "11", "op": "shutdown"}

Replies (stdout), each carrying the request's ``id``::

    {"id": null, "event": "ready", "protocol": 1, "pid": ..., "device": "cpu", "model": {...}, "load_seconds": ...}
    {"id": "7", "event": "progress", "fraction": 0.4, "message": "window 3/8"}
    {"id": "7", "event": "log", "level": "warning", "message": "..."}
    {"id": "7", "event": "result", "output": "/tmp/x/label.nrrd", "outputs": [...], "volumes_ml": {...}, ...}
    {"id": "7", "event": "error", "error": "InputError", "message": "..."}

``ready`` (id null) is sent once, after the model is loaded; a model that cannot be loaded
gives one ``error`` with id null and ``"fatal": true`` and exit status 3. A cancelled job
ends with an ``error`` whose ``error`` is ``"Cancelled"``. A malformed line (not UTF-8, not
JSON, nested deeper than 32 levels, longer than 1 MB, wrong types) gets an ``error`` reply
(``"MalformedRequest"``) and the worker keeps serving. An output path that is one of the
request's inputs is refused before the work starts. End of input acts like ``shutdown``
so the worker never outlives the process that started it.
"""
from __future__ import annotations

import argparse
import os
import queue
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

from ..base.errors import Cancelled, LCKDError
from ..inference.options import SegmentOptions
from .protocol import (
    CANCELLED,
    ERROR,
    FATAL_EXIT,
    INTERNAL,
    LOG,
    MALFORMED,
    OPS,
    OUT_OF_MEMORY,
    PATH_OPTIONS,
    PROGRESS,
    PROTOCOL_VERSION,
    READY,
    RESULT,
    SEGMENT_OPTIONS,
    WARNING,
    encode,
)

#: Longest request line served (a real one is well under 4 kB).
MAX_LINE_BYTES = 1 << 20


@dataclass
class _Job:
    id: str
    inputs: dict
    options: dict
    cancel: threading.Event = field(default_factory=threading.Event)


class _Writer:
    """Serialises protocol lines from the reader and job threads onto one stream."""

    def __init__(self, stream: TextIO):
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, rid: Any, event: str, **payload: Any) -> None:
        line = encode({"id": rid, "event": event, **payload})
        with self._lock:
            try:
                self._stream.write(line)
                self._stream.flush()
            except (BrokenPipeError, ValueError):
                pass  # the parent went away; the main loop ends at end of input


def protocol_stream() -> TextIO:
    """Take the real stdout for the protocol and point fd 1 at stderr.

    Libraries (and C code) that print would otherwise corrupt the JSON line stream.
    """
    fd = os.dup(sys.stdout.fileno())
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return os.fdopen(fd, "w", encoding="utf-8", buffering=1)


class Worker:
    """Serves requests for one loaded `Segmenter`; jobs run one at a time on a job thread."""

    def __init__(self, segmenter: Any, writer: _Writer):
        self.segmenter = segmenter
        self.out = writer
        self.loaded_at = time.time()   # clients check it stays put: the model is loaded once
        self.served = 0
        self._jobs: queue.Queue = queue.Queue()
        self._current: _Job | None = None
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run_jobs, name="lckd-job", daemon=True)
        self._thread.start()

    # -- request dispatch (reader thread) ------------------------------------------------
    def handle_line(self, raw: bytes | str) -> bool:
        """Handle one request line; False once the worker should stop. Never raises."""
        try:
            return self._handle_line(raw)
        except Exception as e:  # whatever a line holds, the worker answers and keeps serving
            self.out.send(None, ERROR, error=MALFORMED,
                          message=f"request could not be handled: {type(e).__name__}: {str(e)[:200]}")
            return True

    def _handle_line(self, raw: bytes | str) -> bool:
        from ..model.schema import loads_limited

        if len(raw) > MAX_LINE_BYTES:
            self.out.send(None, ERROR, error=MALFORMED,
                          message=f"request is longer than {MAX_LINE_BYTES} bytes")
            return True
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError:
            self.out.send(None, ERROR, error=MALFORMED, message="request is not UTF-8 text")
            return True
        if not text.strip():
            return True
        try:
            req = loads_limited(text)
        except ValueError as e:
            self.out.send(None, ERROR, error=MALFORMED, message=f"request is not JSON: {e}")
            return True
        rid = req.get("id") if isinstance(req, dict) else None
        if not (rid is None or isinstance(rid, (str, int)) and not isinstance(rid, bool)):
            self.out.send(None, ERROR, error=MALFORMED, message="'id' must be a string or an integer")
            return True
        op = req.get("op") if isinstance(req, dict) else None
        if op not in OPS:
            self.out.send(rid, ERROR, error=MALFORMED,
                          message=f"request needs 'op' set to one of {', '.join(OPS)} (got {op!r})")
            return True
        return getattr(self, "_op_" + op)(rid, req)

    def _op_ping(self, rid: Any, req: dict) -> bool:
        self.out.send(rid, RESULT, pong=True, pid=os.getpid())
        return True

    def _op_info(self, rid: Any, req: dict) -> bool:
        with self._lock:
            busy = self._current.id if self._current else None
        self.out.send(rid, RESULT, pid=os.getpid(), loaded_at=self.loaded_at, served=self.served,
                      busy=busy, queued=self._jobs.qsize(), **describe(self.segmenter))
        return True

    def _op_segment(self, rid: Any, req: dict) -> bool:
        inputs, options = req.get("inputs"), req.get("options") or {}
        problem = None
        if rid is None:
            problem = "a segment request needs an 'id'"
        elif not isinstance(inputs, dict) or not inputs or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in inputs.items()):
            problem = "'inputs' must map modality names to image file paths, e.g. {\"T1\": \"/data/t1.nii.gz\"}"
        elif not isinstance(options, dict):
            problem = "'options' must be an object"
        elif not _paths_ok(options.get("output", "")):
            problem = "'output' must be a file path or a list of file paths"
        elif _unusable_path(inputs, options):
            problem = _unusable_path(inputs, options)
        elif set(options) - SEGMENT_OPTIONS:
            problem = (f"unknown option(s) {', '.join(sorted(set(options) - SEGMENT_OPTIONS))}; "
                       f"known: {', '.join(sorted(SEGMENT_OPTIONS))}")
        elif any(options.get(k) is not None and not isinstance(options[k], str) for k in PATH_OPTIONS[1:]):
            problem = f"options {', '.join(repr(k) for k in PATH_OPTIONS[1:])} must be strings"   # file names
        else:
            problem = SegmentOptions.request_problem(options)   # JSON types; values are checked per job
        if problem or not isinstance(inputs, dict):   # (inputs is a dict once no problem was found)
            self.out.send(rid, ERROR, error=MALFORMED, message=problem)
            return True
        self._jobs.put(_Job(str(rid), inputs, options))
        return True

    def _op_cancel(self, rid: Any, req: dict) -> bool:
        target = req.get("target")
        hit = []
        with self._lock:
            if target is None:
                hit = [j.id for j in list(self._jobs.queue)]
                self._cancelled.update(hit)
                if self._current:
                    self._current.cancel.set()
                    hit.append(self._current.id)
            else:
                target = str(target)
                if self._current and self._current.id == target:
                    self._current.cancel.set()
                    hit.append(target)
                elif any(j.id == target for j in list(self._jobs.queue)):
                    self._cancelled.add(target)
                    hit.append(target)
        self.out.send(rid, RESULT, cancelled=hit)
        return True

    def _op_shutdown(self, rid: Any, req: dict) -> bool:
        self._op_cancel(None, {})
        self.out.send(rid, RESULT, shutdown=True)
        return False

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel everything and let the job thread finish its current step."""
        with self._lock:
            self._cancelled.update(j.id for j in list(self._jobs.queue))
            if self._current:
                self._current.cancel.set()
        self._jobs.put(None)
        self._thread.join(timeout)

    # -- jobs (job thread) -----------------------------------------------------------------
    def _run_jobs(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            with self._lock:
                if job.id in self._cancelled:
                    self._cancelled.discard(job.id)
                    self.out.send(job.id, ERROR, error=CANCELLED, message="cancelled before it started")
                    continue
                self._current = job
            try:
                self._segment(job)
            finally:
                with self._lock:
                    self._current = None
                    self.served += 1

    def _segment(self, job: _Job) -> None:
        t0 = time.perf_counter()
        opts = job.options

        def progress(fraction: float, message: str) -> None:
            self.out.send(job.id, PROGRESS, fraction=round(float(fraction), 4), message=str(message))
            # Every progress report is also a cancel point, on top of the Segmenter's own.
            if job.cancel.is_set():
                raise Cancelled("cancelled")

        try:
            outputs = _outputs(job)
            run = SegmentOptions.from_request(opts)   # bad values: an InputError, as from `lckd segment`
            prob_path = None
            if run.probabilities:
                from ..inference.resultfiles import check_output_path
                prob_path = check_output_path(opts.get("probabilities_output")
                                              or outputs[0].with_name("probabilities.nrrd"),
                                              job.inputs.values(), "probabilities")
            mask_path = None
            if opts.get("brain_mask_output"):
                from ..inference.resultfiles import check_output_path
                mask_path = check_output_path(opts["brain_mask_output"], job.inputs.values(), "brain mask")
            res = self.segmenter.segment(job.inputs, run, progress=progress, cancel=job.cancel)
            if job.cancel.is_set():
                raise Cancelled("cancelled")
            from ..inference.record import run_record
            from ..inference.resultfiles import write_result
            if res.brain_mask is None:
                mask_path = None
            # Same writer as `lckd segment` (identical files), all outputs or none.
            write_result(res, outputs, probabilities_file=prob_path if res.probabilities is not None else None,
                         brain_mask_file=mask_path, inputs=job.inputs.values())
            for w in res.warnings:
                self.out.send(job.id, LOG, level=WARNING, message=str(w))
            self.out.send(job.id, RESULT, output=str(outputs[0]), outputs=[str(p) for p in outputs],
                          probabilities=None if prob_path is None else str(prob_path),
                          volumes_ml=res.volumes_ml, modalities=list(res.modalities), reference=res.reference,
                          labels=res.label_convention, warnings=[str(w) for w in res.warnings],
                          preprocessing=res.preprocessing, mirrors=run.mirrors, quality=res.quality,
                          notes=[str(n) for n in res.notes],
                          brain_mask=None if mask_path is None else str(mask_path),
                          timings=getattr(res, "timings", {}), seconds=round(time.perf_counter() - t0, 3),
                          # the JSON result record, by the builder `lckd segment` and `lckd batch` use
                          record=run_record(self.segmenter, res, run, outputs=outputs,
                                            probabilities=[] if prob_path is None else [prob_path],
                                            timings=dict(res.timings, total=time.perf_counter() - t0)))
        except Cancelled:
            self.out.send(job.id, ERROR, error=CANCELLED, message="cancelled")
        except LCKDError as e:
            self.out.send(job.id, ERROR, error=type(e).__name__, message=str(e))
        except MemoryError:
            self.out.send(job.id, ERROR, error=OUT_OF_MEMORY, message="out of memory for this case")
        except Exception as e:  # keep serving: one bad case must not take the worker down
            self.out.send(job.id, ERROR, error=INTERNAL, message=f"{type(e).__name__}: {e}",
                          detail=traceback.format_exc(limit=8))


def _paths_ok(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and bool(value)
                                      and all(isinstance(p, str) and p for p in value))


def _unusable_path(inputs: dict, options: dict) -> str | None:
    """A request path with a NUL byte, a lone surrogate or non-UTF-8 text, named with its field; or None.

    Checked when the request arrives, before any file-system call: such text would end in
    `ValueError` / `UnicodeEncodeError` deep inside `os` (an InternalError with a traceback).
    """
    from ..io.pathcheck import path_problem, printable

    fields = [(f"input {k}", v) for k, v in inputs.items()]
    given = options.get("output")
    fields += [("output", p) for p in ([given] if isinstance(given, str) else given or []) if given]
    fields += [(k, options[k]) for k in ("probabilities_output", "brain_mask_output")
               if isinstance(options.get(k), str)]
    for name, value in fields:
        problem = path_problem(value) if value != "" else None
        if problem:
            return f"{name} '{printable(value)}': {problem}"
    return None


def _outputs(job: _Job) -> list[Path]:
    """Files to write: option 'output' (one path or a list; `.seg.nrrd` gives Slicer segments),
    else a labelmap next to the first input."""
    import re

    from ..inference.resultfiles import check_output_path

    given = job.options.get("output")
    if not given:
        safe_id = re.sub(r"[^A-Za-z0-9_.-]", "_", job.id)[:64]  # an id is never a path
        given = str(Path(next(iter(job.inputs.values()))).with_name(f"lckd-{safe_id}-label.nrrd"))
    paths = [Path(p) for p in ([given] if isinstance(given, str) else given)]
    # Fail before the work, not after it; an output may never replace one of the inputs.
    return [check_output_path(p, job.inputs.values()) for p in paths]


def describe(segmenter: Any) -> dict:
    """What a client shows about the loaded model: device and the card's main fields."""
    from ..inference.record import card_sha256, scope_line

    card = getattr(segmenter, "card", None)
    info: dict = {"device": str(getattr(segmenter, "device", "?"))}
    if card is not None:
        info["model"] = {
            "name": card.name, "version": card.version, "modalities": list(card.modalities),
            "labels": card.label_convention, "description": card.description,
            "intended_use": card.intended_use,
            # the clean-up a request with "postprocess": null applies ({} = none); the GUI's default
            "postprocessing": dict(getattr(card, "postprocessing", None) or {}),
            "overlap": card.overlap,   # the window overlap a request with "overlap": null uses
            # The run-time notice and the batch records name the model as `lckd` does (lckd.inference.record).
            "scope": scope_line(card),
            "card_sha256": card_sha256(getattr(segmenter, "card_path", None)),
            # Expected Dice per subset key (e.g. 'T1ce+FLAIR' -> {ET, TC, WT}), for the GUI.
            "per_subset": dict(card.evaluation.get("per_subset", {})),
        }
    return info


def serve(stdin: Any, writer: _Writer, load: Callable[[], Any]) -> int:
    """Load the model, announce readiness, then serve lines from `stdin` until shutdown/EOF."""
    t0 = time.perf_counter()
    try:
        segmenter = load()
    except LCKDError as e:
        writer.send(None, ERROR, error=type(e).__name__, message=str(e), fatal=True)
        return FATAL_EXIT
    except Exception as e:
        writer.send(None, ERROR, error=INTERNAL, message=f"model could not be loaded: {type(e).__name__}: {e}",
                    detail=traceback.format_exc(limit=8), fatal=True)
        return FATAL_EXIT
    worker = Worker(segmenter, writer)
    writer.send(None, READY, protocol=PROTOCOL_VERSION, pid=os.getpid(), loaded_at=worker.loaded_at,
                load_seconds=round(time.perf_counter() - t0, 3), **describe(segmenter))
    try:
        # Bounded reads: an endless line must not take the worker's memory before it is refused.
        for raw in iter(lambda: stdin.readline(MAX_LINE_BYTES + 1), b""):
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                rest = raw
                while rest and not rest.endswith(b"\n"):  # skip to the end of the over-long line
                    rest = stdin.readline(MAX_LINE_BYTES)
            if not worker.handle_line(raw):
                break
    except KeyboardInterrupt:
        pass
    finally:
        worker.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    from ..base.threads import apply_wait_policy

    apply_wait_policy(sys.argv[1:] if argv is None else list(argv))   # before anything imports torch
    parser = argparse.ArgumentParser(prog="python -m lckd.frontends.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="registry name or model card (default: bundled model)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for PyTorch (default: the cores available to this process)")
    args = parser.parse_args(argv)
    writer = _Writer(protocol_stream())

    def load():
        from ..inference.segmenter import Segmenter
        return Segmenter.load(args.model, device=args.device, threads=args.threads)

    return serve(sys.stdin.buffer, writer, load)


if __name__ == "__main__":
    sys.exit(main())
