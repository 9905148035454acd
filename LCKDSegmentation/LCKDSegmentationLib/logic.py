"""Segmentation logic: volume nodes in, segmentation node + volumes table out, via the worker.

Usable without the GUI and without a Slicer application: it works on the scene given to
it (`SegmentationLogic(scene)`; inside Slicer the default is `slicer.mrmlScene`). Both the
GUI and the console go through the warm background worker; the GUI polls a `SegmentJob`
from a timer, `segment()` and `batch()` wait for it.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lckd.base.errors import InputError
from lckd.base.modalities import canonical, subset_key
from lckd.frontends.protocol import CANCELLED, ERROR, LOG, PROGRESS, READY, RESULT, SEGMENT, WARNING
from lckd.inference import SegmentOptions

from . import output, volumeio
from .selection import SelectionError, validate_selection
from .workerclient import WorkerClient, WorkerError
from .workerstate import IdlePolicy, WorkerState

log = logging.getLogger("LCKDSegmentation")

Progress = Callable[[float, str], None]


class SegmentationFailed(RuntimeError):
    """The worker could not segment the inputs; `kind` is its error name (InputError, WorkerDied, ...)."""

    def __init__(self, message: str, kind: str = "Error"):
        super().__init__(message)
        self.kind = kind


class SegmentationCancelled(SegmentationFailed):
    """The job was cancelled; nothing in the scene was changed."""


@dataclass
class SegmentJob:
    """One segmentation request in flight."""

    request_id: str
    volumes: dict                 # canonical modality -> volume node
    reference: str
    output_segmentation: Any      # node chosen by the caller, or None for a new one
    keep_other_segments: bool
    show3d: bool
    temp_dir: str
    started: float = field(default_factory=time.monotonic)
    fraction: float = 0.0
    message: str = "queued"
    done: bool = False
    cancel_requested: float | None = None
    reply: dict | None = None     # the worker's result or error message
    segmentation: Any = None      # the output node, once imported
    brain_mask: Any = None        # labelmap node of the extracted brain (raw-scan preprocessing), if any

    @property
    def failed(self) -> bool:
        return self.done and self.reply is not None and self.reply.get("event") == ERROR

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


class SegmentationLogic:
    """All the module does, callable from the Python console (see README examples)."""

    #: Seconds a cancelled job may take to stop before its worker is killed.
    cancel_grace = 10.0
    poll_interval = 0.05
    #: Label convention requested from the core (None: the model card's); segments keep these
    #: label values.
    labels: str | None = None

    def __init__(self, scene: Any = None, python: str | None = None):
        self._scene = scene
        self.python = python
        self.worker: WorkerClient | None = None
        # Jobs in flight by request id: whoever polls the worker (GUI timer, console call)
        # hands each reply to its job, so a console call never swallows the GUI's replies.
        self._active: dict = {}
        # What workers have shown about CUDA (None: nothing yet); the GUI process has no torch to ask.
        self._cuda: bool | None = None
        self._cuda_reason = ""
        #: When the idle worker is stopped (`releaseIdleWorker`); the panel sets its minutes.
        self.idle = IdlePolicy()
        self._announced: dict = {}   # model ("" = bundled default) -> the card fields its worker announced

    # -- scene seam --------------------------------------------------------------------
    @property
    def scene(self):
        """The scene worked on: the one given, else Slicer's application scene."""
        if self._scene is not None:
            return self._scene
        import slicer
        scene = getattr(slicer, "mrmlScene", None)
        if scene is None:
            raise RuntimeError("no MRML scene: create the logic with SegmentationLogic(scene) outside the Slicer app")
        return scene

    def setScene(self, scene: Any) -> None:
        self._scene = scene

    # -- worker ------------------------------------------------------------------------
    def deviceProblem(self, device: str | None) -> str | None:
        """Why `device` cannot be used here, if a worker has already shown it; else None.

        The GUI process must not import torch, so it learns from the workers: one started
        with 'auto' picks CUDA whenever PyTorch sees a GPU, and one asked for a GPU that
        does not exist refuses to start with the reason.
        """
        name = str(device or "auto").strip().lower()
        worker = self.worker
        if worker is not None and worker.info and str(worker.device or "auto").lower() == "auto":
            self._note(worker, worker.info)  # however its 'ready' was read (GUI timer, wait_ready)
        if name.startswith(("cuda", "gpu")) and self._cuda is False:
            return ("No CUDA GPU is available to PyTorch on this computer"
                    + (f" ({self._cuda_reason})" if self._cuda_reason else "")
                    + ". Choose device 'auto' or 'CPU', or install a CUDA build of PyTorch "
                      "(PyTorch Util module of the PyTorch extension) and restart Slicer.")
        return None

    def _note(self, worker: WorkerClient, msg: dict) -> None:
        """Learn from a worker message whether a CUDA GPU exists (see `deviceProblem`)."""
        requested = str(worker.device or "auto").lower()
        event = msg.get("event")
        if event == READY:
            used = str(msg.get("device", ""))
            if requested == "auto":
                self._cuda, self._cuda_reason = used.startswith("cuda"), f"the model loaded on '{used}'"
            elif used.startswith("cuda"):
                self._cuda, self._cuda_reason = True, ""
        elif event == ERROR and msg.get("fatal") and msg.get("error") == InputError.__name__ \
                and requested.startswith(("cuda", "gpu")):
            # At load time the device is the only input the worker checks.
            self._cuda, self._cuda_reason = False, str(msg.get("message", "")).split(";")[0]

    def poll(self) -> list[dict]:
        """Messages of the worker since the last call (the GUI timer's entry when no job runs)."""
        worker = self.worker
        messages = worker.poll() if worker is not None else []
        for msg in messages:
            if worker is not None:
                self._note(worker, msg)
            if msg.get("event") == READY:
                self.idle.used()   # idle time counts from the model being loaded, not from the start
            self._dispatch(msg)
        return messages

    def workerState(self) -> WorkerState:
        """Stopped, starting (loading the model), ready or busy (a job in flight)."""
        worker = self.worker
        return IdlePolicy.state(worker is not None and worker.running, worker is not None and worker.info is not None,
                                bool(self._active))

    def releaseIdleWorker(self) -> bool:
        """Stop the worker if it has been idle for `idle.idle_minutes` (its process exits, freeing
        the model's memory, GPU memory included); True if it was stopped. The next request starts
        a new one. Returns at once (the old process is reaped in the background)."""
        if self.worker is None or not self.idle.due(self.workerState()):
            return False
        self.worker.stop(wait=False)
        self.worker = None
        return True

    def modelInfo(self, model: str | None = None) -> dict:
        """The card fields (name, version, scope, ...) a worker announced for `model` (registry
        name or card, "" the bundled default; None: the current worker's model); {} before one
        loaded it. Kept after that worker stopped, so the panel still shows them."""
        worker = self.worker
        if model is None:
            model = worker.model if worker is not None else None
        key = model or ""
        if worker is not None and worker.info and (worker.model or "") == key:
            self._announced[key] = dict(worker.info.get("model") or {})
        return dict(self._announced.get(key, {}))

    def startWorker(self, model: str | None = None, device: str = "auto") -> WorkerClient:
        """Start (or keep) a worker for this model and device; the model loads in the background.

        Raises `SelectionError` for a device this computer is known not to have (see
        `deviceProblem`); the running worker is then kept.
        """
        problem = self.deviceProblem(device)
        if problem:
            raise SelectionError(problem)
        if self.worker is not None and (self.worker.model, self.worker.device) != (model, device):
            if self._active:
                raise RuntimeError("A segmentation is running; wait for it or cancel it before changing "
                                   "model or device.")
            self.worker.stop(wait=False)   # called from the GUI thread: never wait for the old worker
            self.worker = None
        if self.worker is None:
            self.worker = WorkerClient(model=model, device=device, python=self.python)
        self.worker.start()
        self.idle.used()
        return self.worker

    def shutdown(self, wait: bool = False) -> None:
        """Stop the worker (module cleanup, tests); jobs still running end as cancelled.

        Returns at once unless `wait`: the old worker is shut down (killed if need be) in the
        background, so the module's cleanup never freezes the GUI."""
        for job in list(self._active.values()):
            job.reply = {"id": job.request_id, "event": ERROR, "error": CANCELLED, "message": "shut down"}
            self._finish(job)
        if self.worker is not None:
            self.worker.stop(wait=wait)
            self.worker = None

    def expectedDice(self, modalities, model: str | None = None) -> dict | None:
        """The model card's row for this subset, once a worker loaded `model` (see `modelInfo`).

        Dice of ET, TC, WT (validation or cross-validation), and where the card has them
        their SD over folds (`ET_sd` ...) and the number of folds (`folds`).
        """
        if not modalities:
            return None
        row = self.modelInfo(model).get("per_subset", {}).get(subset_key(modalities))
        return dict(row) if isinstance(row, dict) else None

    def postprocessDefault(self) -> bool | None:
        """Whether the loaded model's card cleans up its labels by default (None before it loaded)."""
        info = self.modelInfo()
        return None if not info else bool(info.get("postprocessing"))

    # -- one case, asynchronous (GUI) --------------------------------------------------
    def startSegment(self, volumes: Mapping[str, Any], outputSegmentation: Any = None, device: str = "auto",
                     model: str | None = None, reference: str | None = None, keepOtherSegments: bool = False,
                     register: bool = False, postprocess: bool | None = None, show3D: bool = True,
                     preprocess: str = "auto", mirrors: int = 1, trustFlags: bool = False) -> SegmentJob:
        """Check the selection, hand the volumes to the worker and return at once.

        `postprocess`: None follows the model card's clean-up rule, True/False force it.
        `preprocess`: raw scans (skull on, own grids): "on" co-registers and extracts the brain
        (the mask comes back as a labelmap node, `job.brain_mask`), "off" never, "auto" when
        the scans look unstripped (`detectRawScans` tells in advance).
        `mirrors` (1, 2, 4, 8): mirrored copies of each window averaged (`lckd segment --mirrors`;
        2 costs about twice the network time). `trustFlags`: segment even where the contrast check
        finds that a scan does not look like its selector's contrast (it still warns and flags the
        result). Bad options raise the core's `InputError`.
        Raises `SelectionError` (a ValueError) for bad selections or a device this computer
        is known not to have; the scene is unchanged.
        """
        chosen, ref = validate_selection(volumes, reference, self.scene)
        run = SegmentOptions(reference=ref, labels=self.labels, register=register, postprocess=postprocess,
                             preprocess=preprocess, mirrors=mirrors, trust_flags=trustFlags)
        if outputSegmentation is not None and not outputSegmentation.IsA("vtkMRMLSegmentationNode"):
            raise SelectionError(f"Output '{outputSegmentation.GetName()}' is not a segmentation node.")
        temp_dir = tempfile.mkdtemp(prefix="lckd-")
        try:
            inputs = {m: str(volumeio.write_volume(node, Path(temp_dir) / f"{m}.nrrd")) for m, node in chosen.items()}
            worker = self.startWorker(model, device)
            options = {"output": str(Path(temp_dir) / "label.nrrd"), **run.to_request()}
            if run.preprocess != "off":
                options["brain_mask_output"] = str(Path(temp_dir) / "brainmask.nrrd")
            rid = worker.send(SEGMENT, inputs=inputs, options=options)
        except Exception:
            shutil.rmtree(temp_dir, ignore_errors=True)
            raise
        job = SegmentJob(rid, chosen, ref, outputSegmentation, bool(keepOtherSegments), bool(show3D), temp_dir)
        self._active[rid] = job
        return job

    def pollJob(self, job: SegmentJob) -> list[dict]:
        """Handle what the worker said since the last call; imports the result when it arrives.

        Returns every message seen (including ones not about this job, e.g. 'ready').
        """
        if job.done:
            return []
        messages = self.poll()
        if not job.done and job.cancel_requested is not None \
                and time.monotonic() - job.cancel_requested > self.cancel_grace:
            self.worker.kill(cancel=True)  # it did not stop in time; the next request starts a new one
        return messages

    def _dispatch(self, msg: dict) -> None:
        """Apply one worker message to the job it belongs to, if any."""
        job = self._active.get(str(msg.get("id")))
        if job is None:
            return
        event = msg.get("event")
        if event == PROGRESS:
            job.fraction, job.message = float(msg.get("fraction", 0.0)), str(msg.get("message", ""))
        elif event == RESULT and job.cancel_requested is not None:
            # Finished before the cancel reached the worker: the user asked for nothing to change.
            job.reply = {"id": job.request_id, "event": ERROR, "error": CANCELLED, "message": "cancelled"}
            self._finish(job)
        elif event == RESULT:
            try:
                job.segmentation = self._importResult(job, msg)
                job.reply = msg
            except Exception as e:  # a result we cannot import is a failed job, not a crash
                job.reply = {"id": job.request_id, "event": ERROR, "error": type(e).__name__, "message": str(e)}
            self._finish(job)
        elif event == ERROR:
            job.reply = msg
            self._finish(job)

    def cancelJob(self, job: SegmentJob) -> None:
        """Ask the worker to stop this job; `pollJob` reports it as cancelled, the scene is untouched."""
        if job.done or job.cancel_requested is not None:
            return
        job.cancel_requested = time.monotonic()
        if self.worker is not None and self.worker.running:
            self.worker.cancel(job.request_id)

    def _finish(self, job: SegmentJob) -> None:
        self.idle.used()
        job.done = True
        self._active.pop(job.request_id, None)
        shutil.rmtree(job.temp_dir, ignore_errors=True)

    def _importResult(self, job: SegmentJob, reply: dict):
        scene = self.scene
        labelmap = volumeio.read_labelmap(reply["output"])
        reference_node = job.volumes[job.reference]
        node = job.output_segmentation
        created = node is None or not scene.IsNodePresent(node)
        if created:
            name = scene.GenerateUniqueName(f"{reference_node.GetName()} tumour segmentation")
            node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        # an existing segmentation is left as it was if anything below fails or refuses
        restore = None if created else output.snapshot_segmentation(node)
        mask = None
        try:
            self._fillOutput(job, reply, node, labelmap)
            if reply.get("brain_mask"):
                mask = volumeio.read_labelmap(reply["brain_mask"])
                mask.SetName(scene.GenerateUniqueName(f"{reference_node.GetName()} brain mask"))
                scene.AddNode(mask)
            node.SetNodeReferenceID(output.BRAIN_MASK_ROLE, mask.GetID() if mask is not None else None)
        except Exception:
            if mask is not None:
                scene.RemoveNode(mask)
            if created:  # leave no half-made node behind
                scene.RemoveNode(node)
            else:
                restore()
            raise
        job.brain_mask = mask
        node.SetAttribute("LCKD.Preprocessing", str(reply.get("preprocessing", "")))
        return node

    def detectRawScans(self, volumes: Mapping[str, Any]) -> tuple[bool, str]:
        """(whether the selected volumes look like raw scans, the one-line reason): `lckd.prep.rawprep`'s
        `auto` rule on the nodes' arrays, in this process (no worker, no torch; a few hundredths
        of a second for four BraTS-size volumes). Used to set the panel's raw-scans checkbox."""
        import slicer

        from lckd.prep.rawprep import decide_verdicts, series_verdict

        verdicts = [series_verdict(canonical(m), slicer.util.arrayFromVolume(node), node.GetSpacing())
                    for m, node in volumes.items() if node is not None and node.GetImageData() is not None]
        if not verdicts:
            return False, "no volume selected"
        decision = decide_verdicts(verdicts)
        return decision.run, decision.reason

    def _fillOutput(self, job: SegmentJob, reply: dict, node, labelmap) -> None:
        from lckd.base.labels import CONVENTIONS  # needs scipy: only once the worker proved dependencies are there

        scene = self.scene
        reference_node = job.volumes[job.reference]
        if node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
        # The labelmap carries the reference volume's world geometry (see volumeio.write_volume).
        node.SetReferenceImageGeometryParameterFromVolumeNode(labelmap)
        node.SetNodeReferenceID(node.GetReferenceImageGeometryReferenceRole(), reference_node.GetID())
        output.fill_segmentation(node, labelmap, CONVENTIONS[reply["labels"]],
                                 job.keep_other_segments)
        modalities = list(reply.get("modalities") or job.volumes)
        info = self.modelInfo()
        model = f"{info.get('name', '')} {info.get('version', '')}".strip()
        node.SetAttribute("LCKD.Modalities", "+".join(modalities))
        node.SetAttribute("LCKD.Reference", job.reference)
        node.SetAttribute("LCKD.Model", model)
        node.SetAttribute("LCKD.Scope", str(info.get("scope", "")))
        quality = reply.get("quality") or None
        output.update_volumes_table(scene, node, reply.get("volumes_ml", {}), modalities, model, quality)
        # the quality record stays with the segmentation (segment tags, kept by .seg.nrrd and scenes)
        output.write_quality(node, quality)
        if job.show3d:
            node.CreateClosedSurfaceRepresentation()

    # -- one case, synchronous (console) -----------------------------------------------
    def segment(self, volumes: Mapping[str, Any], outputSegmentation: Any = None, device: str = "auto",
                model: str | None = None, reference: str | None = None, keepOtherSegments: bool = False,
                register: bool = False, postprocess: bool | None = None, show3D: bool = True,
                progress: Progress | None = None, timeout: float | None = None, preprocess: str = "auto",
                mirrors: int = 1, trustFlags: bool = False):
        """Segment one case and return the segmentation node (blocks until done).

        `volumes` maps modality names (T1, T1ce, T2, FLAIR or aliases) to volume nodes;
        any non-empty subset. A new segmentation node is created unless
        `outputSegmentation` is given; re-running into it replaces the tumour segments and
        keeps other segments only with `keepOtherSegments`. `postprocess` None follows the
        model card. `preprocess` ("auto", "on", "off"), `mirrors` (1, 2, 4, 8) and `trustFlags`: as
        in `startSegment`. Raises `SelectionError` for a bad selection or an absent GPU and
        `SegmentationFailed` if the worker fails (scene unchanged).
        """
        job = self.startSegment(volumes, outputSegmentation, device, model, reference, keepOtherSegments,
                                register, postprocess, show3D, preprocess, mirrors, trustFlags)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not job.done:
            for msg in self.pollJob(job):
                self._report(msg, job.request_id, progress)
            if job.done:
                break
            if deadline is not None and time.monotonic() > deadline and job.cancel_requested is None:
                self.cancelJob(job)
            time.sleep(self.poll_interval)
        if job.failed:
            raise self._failure(job.reply)
        return job.segmentation

    @staticmethod
    def _report(msg: dict, request_id: str, progress: Progress | None) -> None:
        event = msg.get("event")
        if event == PROGRESS and msg.get("id") == request_id and progress is not None:
            progress(float(msg.get("fraction", 0.0)), str(msg.get("message", "")))
        elif event == LOG:
            log.log(logging.WARNING if msg.get("level") == WARNING else logging.INFO, "LCKD: %s", msg.get("message"))

    @staticmethod
    def _failure(reply: dict) -> SegmentationFailed:
        kind, message = str(reply.get("error", "Error")), str(reply.get("message", "segmentation failed"))
        cls = SegmentationCancelled if kind == CANCELLED else SegmentationFailed
        return cls(message, kind)

    # -- many cases (console) ----------------------------------------------------------
    def batch(self, inputDir: str | Path, outputDir: str | Path, device: str = "auto", model: str | None = None,
              modalities=None, writeNifti: bool = False, register: bool = False, postprocess: bool | None = None,
              progress: Progress | None = None, overwrite: bool = False, preprocess: str = "auto",
              mirrors: int = 1) -> dict:
        """Segment every case of a folder; write `<case>.seg.nrrd` (and `<case>.nii.gz`) and `<case>.json`.

        The same batch as `lckd batch` (`lckd.frontends.batch.run_cases`): BraTS case folders, cases
        already done are skipped (their volumes kept) unless `overwrite`, a failing case is
        an error row and the others go on, and `summary.csv` / `summary.json` record every
        case with the model (name, version, card sha256) and the options. `modalities`
        restricts the scans used (e.g. ["T1ce", "FLAIR"]); `postprocess` None follows the
        model card; `preprocess` ("auto", "on", "off") is the raw-scan preprocessing of
        `lckd batch --preprocess`; `mirrors` that of `--mirrors`. Nothing is added to the
        scene. Returns summary.json's content plus the counts `succeeded`, `skipped`, `failed`.
        """
        from lckd.base.errors import LCKDError
        from lckd.frontends.batch import batch_options, counts, find_batch_cases, read_summary, run_cases
        from lckd.inference.record import run_options

        run = SegmentOptions(labels=self.labels, register=register, postprocess=postprocess, preprocess=preprocess,
                             mirrors=mirrors)
        cases = find_batch_cases(Path(inputDir), ignore=[outputDir], studies=False)   # DICOM studies: lckd batch
        wanted = None if modalities is None else [canonical(m) for m in modalities]
        out_dir = Path(outputDir)
        formats = ["seg.nrrd"] + (["nii.gz"] if writeNifti else [])
        info = self.startWorker(model, device).wait_ready()
        card = dict(info.get("model") or {})
        model_rec = {k: card.get(k) for k in ("name", "version", "card_sha256", "scope")}
        # the summary's options in the shape `lckd batch` writes (the worker's model description
        # stands in for the card: its label convention, overlap and clean-up rule)
        options = batch_options(run_options(card, run, device, None), formats=formats, modalities=wanted)

        def segment_one(case, outputs) -> dict:
            worker = self.startWorker(model, device)   # a new worker if the last one died
            try:
                # The worker writes every file with the core's writers (as `lckd segment` does) and
                # returns the case's result record, built as `lckd batch` builds it.
                reply = worker.request(SEGMENT, on_event=self._dispatch,
                                       inputs={m: str(p) for m, p in case.images.items()},
                                       options={"output": [str(p) for p in outputs], **run.to_request()})
            except WorkerError as e:
                raise LCKDError(str(e)) from None
            return reply["record"]

        def on_row(index: int, total: int, row: dict) -> None:
            if row["status"] == "error":
                log.warning("%s: %s", row["case"], row["message"])
            if progress is not None:
                progress((index + 1) / total, f"{row['case']}: {row['status']}")

        rows = run_cases(cases, out_dir, segment_one, formats=formats, overwrite=overwrite, modalities=wanted,
                         model=model_rec, options=options, on_row=on_row, input_dir=inputDir)
        summary = read_summary(out_dir / "summary.json")
        c = counts(rows)
        summary.update(succeeded=c["ok"], skipped=c["skipped"], failed=c["error"], outputDir=str(out_dir))
        return summary
