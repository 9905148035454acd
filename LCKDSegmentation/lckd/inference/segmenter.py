"""The inference pipeline: any subset of scans in, labelmap + region volumes out.

validate -> reference grid (resample or register the others) -> canonical orientation and
model spacing -> brain crop -> z-score -> sliding window (MONAI, Gaussian blending) ->
regions -> labels -> back onto the reference geometry.
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np
import SimpleITK as sitk
import torch
from monai.inferers import sliding_window_inference

from ..base import labels as labels_mod
from ..base import optionchecks
from ..base.errors import Cancelled, InputError, itk_error_detail
from ..base.threads import ThreadGovernor, configure_threads, governor_possible
from ..model.modelcard import ModelCard, load_model
from ..model.network import LCKDNet
from ..model.registry import resolve_model
from ..prep import geometry, modelgrid, rawprep
from ..prep.brainextract import INSTALL_HINT, extractor_available
from . import contrastcheck, inputchecks
from .options import SegmentOptions

ImageLike = Union[str, Path, sitk.Image]
Progress = Callable[[float, str], None]


def pick_device(device: str = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple MPS, then CPU; otherwise the named device (checked)."""
    device = optionchecks.check_device(device)
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


@dataclass
class SegmentationResult:
    """Output of `Segmenter.segment`."""

    labelmap: sitk.Image                      # uint8 on the reference geometry
    volumes_ml: dict                          # NCR, ED, ET, TC, WT
    modalities: tuple                         # canonical names used
    reference: str                            # modality whose grid the output uses
    label_convention: str
    probabilities: sitk.Image | None = None   # 3-component float32 (ET, TC, WT) or None
    warnings: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)  # modality -> input file (outputs may never replace one)
    brain_mask: sitk.Image | None = None      # uint8 on the reference geometry, when the brain was extracted
    preprocessing: str = ""                   # one line: what the raw-scan check decided and why
    quality: dict = field(default_factory=dict)  # lckd.inference.quality.estimate: expected WT Dice, flag, reasons
    notes: list = field(default_factory=list)   # information, e.g. how far co-registration moved a scan


def _windows_count(shape, roi, overlap: float) -> int:
    """Number of sliding-window positions MONAI uses for `shape` (for progress only)."""
    n = 1
    for s, r in zip(shape, roi):
        step = max(int(r * (1 - overlap)), 1)
        n *= 1 if s <= r else math.ceil((s - r) / step) + 1
    return n


class Segmenter:
    """A loaded model plus the pipeline around it. Load once, segment many cases."""

    def __init__(self, net: LCKDNet, card: ModelCard, device: torch.device, card_path: Path | None = None):
        self.net = net
        self.card = card
        # an ensemble's other members (`add_member`): their probabilities are averaged with net's
        self.members: list[tuple[LCKDNet, ModelCard, Path | None]] = []
        self.device = device
        self.card_path = card_path   # the card file, for provenance (its sha256 goes into result records)
        self._model_record: dict | None = None
        # CPU threads: None lets a ThreadGovernor follow the cores other processes leave free
        # (lckd.base.threads); a number (`--threads`) is kept as given.
        self.fixed_threads: int | None = None
        self.asked_device = str(device)   # what the run asked for ("auto", "cuda" ...), for the record
        self.thread_ceiling = torch.get_num_threads()
        self.thread_history: list[int] = []   # the counts the last `predict` ran with

    def model_record(self) -> dict:
        """Name, version, card sha256 and scope of the loaded model (`record.model_record`).

        Computed once per loaded model: a batch records it for every case, and hashing the
        card each time would be wasted work.
        """
        if self._model_record is None:
            from .record import model_record
            self._model_record = model_record(self.card, self.card_path)
            if self.members:
                self._model_record["ensemble"] = [model_record(c, p) for _, c, p in self.members]
        return self._model_record

    def add_member(self, model: str | Path) -> None:
        """Average another model's probabilities with this one's (an ensemble).

        The member must read the scans as this model does (same modalities in the same order,
        model grid, normalisation and window size); the quality estimate and the clean-up stay
        this model's (its card's calibration is for one model: an ensemble is at least as good,
        so the estimate errs low). Raises InputError for a member that reads scans differently.
        """
        path = Path(resolve_model(model))
        net, card = load_model(path, device=self.device)
        for what, mine, theirs in (("modalities", list(self.net.modalities), list(net.modalities)),
                                   ("model grid spacing", list(self.card.spacing), list(card.spacing)),
                                   ("window size", list(self.card.patch_size), list(card.patch_size)),
                                   ("clipping", self.card.preprocessing.get("clip_percentiles"),
                                    card.preprocessing.get("clip_percentiles"))):
            if mine != theirs:
                raise InputError(f"ensemble member {card.name} {card.version} ({path}) has another {what} "
                                 f"({theirs}) than {self.card.name} ({mine}): members must read scans alike")
        self.members.append((net, card, path))
        self._model_record = None

    @classmethod
    def load(cls, model: str | Path | None = None, device: str = "auto",
             threads: int | None = None, progress: Progress | None = None) -> Segmenter:
        """Load a model (None = bundled default; registry name; card path) onto a device.

        `threads`: CPU threads for PyTorch; None = the cores available to this process
        (affinity and cgroup quota, `lckd.base.threads`)."""
        n = configure_threads(optionchecks.check_threads(threads))
        dev = pick_device(device)
        path = resolve_model(model, progress=progress)
        net, card = load_model(path, device=dev)
        seg = cls(net, card, dev, Path(path))
        seg.fixed_threads, seg.thread_ceiling, seg.asked_device = threads, n, device
        return seg

    # -- steps -------------------------------------------------------------------------
    def _harmonise(self, images: dict, reference: str, register: bool, progress: Progress
                   ) -> tuple[dict, list, list]:
        """The scans on the reference grid (co-registered when `register`), the notes on how far
        registration moved them, and the registered scans that do not look like the reference's
        head (`lckd.prep.samehead.Mismatch`: another patient's scans hidden by the fit)."""
        out: dict = {}
        notes: list = []
        if register and len(images) > 1:
            from ..prep.registration import register_inputs
            from ..prep.samehead import judge_registered
            try:
                out, transforms = register_inputs(images, reference, notes=notes,
                                                  progress=lambda f, m: progress(0.1 * f, m))
            except (RuntimeError, ValueError) as exc:
                # ITK's optimiser fails on scans that barely overlap or are too small to sample.
                detail = itk_error_detail(exc).split(". ")[0][:120] or type(exc).__name__
                raise InputError(f"co-registration onto {reference} failed ({detail}); the scans may overlap "
                                 "too little or be too small: run without --register") from None
            return out, notes, judge_registered(images, reference, transforms)
        return modelgrid.on_reference_grid(images, reference), notes, []

    def postprocess_rule(self, postprocess: bool | None = None) -> dict | None:
        """Keyword arguments of `labels.postprocess` for this request, or None for no clean-up."""
        return SegmentOptions(postprocess=postprocess).cleanup_rule(self.card)

    def segment(self, inputs: Mapping[str, ImageLike] | inputchecks.CheckedInputs,
                options: SegmentOptions | None = None, *, progress: Progress | None = None, cancel=None,
                **keywords: Any) -> SegmentationResult:
        """Segment one case from any non-empty subset of scans (files or SimpleITK images).

        `inputs` may also be what `inputchecks.read_and_check` returned (read and checked before
        the model was loaded, memory included: they are not read or checked again). `options`
        (`lckd.inference.SegmentOptions`, checked once, when it was made) says how.

        Keywords are a thin convenience for scripts: `seg.segment(inputs, mirrors=2)` is
        `seg.segment(inputs, SegmentOptions(mirrors=2))` (with `options` given, its copy with those
        fields changed); the `SegmentOptions` is built, and checked, once here.
        Fields left None follow the model card: the label convention, the window overlap and
        the clean-up (`postprocess` None: the card's rule, if it has one; True: the card's rule
        or the BraTS-style default; False: never). `max_memory_gb` raises the memory guard
        (`inputchecks.check_memory`). `mirrors` (1, 2, 4, 8): mirrored copies of each window
        averaged (`predict`). `preprocess`: "auto" runs the raw-scan pipeline (`lckd.prep.rawprep`:
        co-registration, brain extraction with `brain_extractor`, optional N4
        `bias_correction`) when the scans look unstripped, "on" always, "off" never; the
        result says what was decided.
        """
        t0 = time.perf_counter()
        timings = {}
        report = progress or (lambda f, m: None)
        opts = options or SegmentOptions()
        if keywords:
            opts = opts.replace(**keywords)
        rule = opts.cleanup_rule(self.card)
        opts = opts.for_card(self.card)
        labels, reference, register = str(opts.labels), opts.reference, opts.register
        preprocess, brain_extractor = opts.preprocess, opts.brain_extractor

        def check_cancel() -> None:
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled")

        # Progress messages start with the stage name ("stage: detail"); the timings use the same names.
        report(0.0, "read: reading and checking the scans")
        checked = inputchecks.read_and_check(inputs, reference)
        inputchecks.check_memory(checked, self.card.spacing, opts.max_memory_gb)
        images, sources, reference = dict(checked.images), checked.sources, checked.reference
        warnings: list = list(checked.warnings)
        timings["read"] = time.perf_counter() - t0
        check_cancel()

        t = time.perf_counter()
        decision = rawprep.decide(images, preprocess)
        timings["detect"] = time.perf_counter() - t
        brain_mask = None
        notes: list = []
        doubts: list = []    # reasons to distrust the run that its quality features cannot see
        if decision.run and preprocess == "auto" and not extractor_available(brain_extractor):
            warnings.append(f"{decision.headline}, but no brain extractor is installed: segmenting the scans as "
                            f"they are ({INSTALL_HINT})")
            decision = rawprep.Decision(False, f"{decision.headline}: brain extraction is not installed, the scans "
                                               "were segmented as given", decision.headline)
        t = time.perf_counter()
        if decision.run:
            prepared = rawprep.prepare_raw_scans(images, reference, method=brain_extractor, device=self.device.type,
                                                 bias_correction=opts.bias_correction, progress=report)
            images, brain_mask = prepared.images, prepared.brain_mask
            decision = rawprep.Decision(True, f"{decision.reason}; {prepared.summary}", decision.headline)
            warnings += prepared.notes
            notes += prepared.info
            doubts += [m.reason() for m in prepared.mismatches]
            timings.update(prepared.timings)
            t = time.perf_counter()
        else:
            if not register and len(images) > 1:
                # Every entry point (CLI, batch, API, worker, Slicer) passes here. Registration would
                # fix a misalignment, so only unregistered runs are checked (~0.25 s for 4 BraTS scans).
                warnings += inputchecks.check_alignment(images, reference)
            if register and len(images) > 1:
                report(0.0, f"register: co-registering onto {reference}")
            images, moved, mismatches = self._harmonise(images, reference, register, report)
            notes += moved
            warnings += [m.warning() for m in mismatches]
            doubts += [m.reason() for m in mismatches]
            if register and len(images) > 1:
                timings["register"] = time.perf_counter() - t
                t = time.perf_counter()
        check_cancel()
        report(0.1, "preprocess: model grid, brain crop, normalisation")
        ref_img = images[reference]
        order = self.net.modalities
        # the same model grid, crop and normalisation as training and evaluation (lckd.prep.modelgrid)
        grid, case = modelgrid.onto_model_grid(images, reference, self.card.spacing, order,
                                           self.card.preprocessing.get("clip_percentiles", (0.5, 99.5)))
        timings["preprocess"] = time.perf_counter() - t
        t = time.perf_counter()
        contrast = self._check_contrasts(case, opts.trust_flags)
        warnings += contrast.messages
        doubts += contrast.messages
        timings["contrast"] = time.perf_counter() - t
        check_cancel()

        t = time.perf_counter()
        probs_crop = self.predict(case.x, case.present, overlap=opts.overlap, sw_batch_size=opts.sw_batch_size,
                                  mirrors=opts.mirrors, progress=report, cancel=cancel)
        timings["network"] = time.perf_counter() - t
        check_cancel()

        t = time.perf_counter()
        report(0.96, "postprocess: labels and volumes on the reference grid")
        probs = geometry.paste(probs_crop, case.box, case.mask.shape, fill=0).astype(np.float32)
        probs *= case.mask  # nothing outside the brain
        if geometry.same_grid(grid, ref_img):
            prob_ref = probs
        else:
            prob_ref = np.stack([sitk.GetArrayFromImage(geometry.resample_onto(self._like(p, grid), ref_img))
                                 for p in probs])
        # the thickest scan as given, before resampling: thick-slice runs take their own WT threshold
        slice_mm = max(max(img.GetSpacing()) for img in checked.images.values())
        label = labels_mod.labels_for_run(prob_ref, rule, slice_mm, labels)
        wt_threshold = labels_mod.thick_slice_wt_threshold(rule, slice_mm)
        if wt_threshold is not None:
            notes.append(f"slices {slice_mm:.1f} mm thick: whole tumour where its probability exceeds "
                         f"{wt_threshold:g}, not 0.5 (the model card's clean-up for thick-slice scans)")
        label_img = self._like(label, ref_img)
        report(0.98, "quality: how far to trust this result")
        t_quality = time.perf_counter()
        quality = self._quality(probs_crop, case, rule, images, slice_mm, doubts)
        timings["quality"] = time.perf_counter() - t_quality
        prob_img = None
        if opts.probabilities:
            prob_img = sitk.GetImageFromArray(np.moveaxis(prob_ref, 0, -1).astype(np.float32), isVector=True)
            prob_img.CopyInformation(ref_img)
        volumes = labels_mod.region_volumes_ml(label, ref_img.GetSpacing(), labels)
        timings["postprocess"] = time.perf_counter() - t - timings["quality"]
        timings["total"] = time.perf_counter() - t0
        report(1.0, "done")
        return SegmentationResult(label_img, volumes, tuple(m for m in order if m in images), reference,
                                  labels, prob_img, warnings, timings, dict(sources), brain_mask, decision.reason,
                                  quality, notes)

    def _check_contrasts(self, case, trust_flags: bool) -> contrastcheck.ContrastReport:
        """Does each scan look like its flag (`lckd.inference.contrastcheck`)? Refuses on strong
        evidence of a wrong flag unless the flags are trusted; the report's lines become warnings."""
        order = self.net.modalities
        report = contrastcheck.check_scans(case.x, case.present, order, float(min(self.card.spacing)))
        if report.refuse and not trust_flags:
            raise InputError("; ".join(report.messages) + ": check which scan is which (to segment them as "
                             "given: --trust-flags, trust_flags=True in Python; in Slicer the Advanced section's "
                             "'I have checked which scan is which' box, or trustFlags=True in its console)")
        return report

    def _quality(self, probs_crop: np.ndarray, case, rule: dict | None, images: Mapping, slice_mm: float,
                 doubts: list | None = None) -> dict:
        """The run's quality record (`lckd.inference.quality`), measured on the model grid by the
        function evaluation uses for the runs its calibration was fitted on (`quality.case_features`);
        `doubts` (scans of different patients, a scan unlike its flag: what the calibration, fitted on
        correctly flagged scans of one patient, never saw) are reasons that set the low-confidence flag."""
        from . import quality

        feats, _ = quality.case_features(probs_crop, case.x, case.present, self.card.spacing, list(images),
                                         slice_mm, rule)
        return quality.estimate(feats, self.card.quality, doubts or ())

    @staticmethod
    def _like(array: np.ndarray, ref: sitk.Image) -> sitk.Image:
        img = sitk.GetImageFromArray(array)
        img.CopyInformation(ref)
        return img

    def predict(self, x: np.ndarray, present, *, overlap: float | None = None, sw_batch_size: int = 1,
                mirrors: int = 1, progress: Progress | None = None, cancel=None) -> np.ndarray:
        """Region probabilities (3, d, h, w) for normalised arrays x (M, d, h, w) of present scans.

        `mirrors` > 1 averages the network over that many mirrored copies of each window
        (`MIRRORS`: x first, then y, z and their combinations), at that many times the cost;
        an ensemble (`add_member`) averages every member the same way.
        """
        mirror_dims = optionchecks.check_mirrors(mirrors)
        roi = tuple(int(r) for r in self.card.patch_size)
        ov = float(self.card.overlap if overlap is None else overlap)
        total = _windows_count(x.shape[1:], roi, ov)
        done = [0]
        dev = self.device
        mask = torch.as_tensor(np.asarray(present), dtype=torch.bool, device=dev)
        report = progress or (lambda f, m: None)
        governor = None
        if dev.type == "cpu" and self.fixed_threads is None and governor_possible():
            governor = ThreadGovernor(self.thread_ceiling)
        self.thread_history = governor.history if governor is not None else []

        def predictor(batch: torch.Tensor) -> torch.Tensor:
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled")
            if governor is not None:
                governor.update()
            out = torch.zeros(())
            nets = [self.net] + [m[0] for m in self.members]
            for net in nets:
                for dims in mirror_dims:
                    # trained with random flips on every axis, the network sees a mirrored brain as a brain
                    p = torch.sigmoid(net(batch.flip(dims) if dims else batch, mask).logits.float())
                    out = out + (p.flip(dims) if dims else p)
            out = out / (len(mirror_dims) * len(nets))
            done[0] += batch.shape[0]
            report(0.1 + 0.85 * min(done[0] / total, 1.0), f"network: window {min(done[0], total)}/{total}")
            return out

        report(0.1, f"network: window 0/{total}")
        inp = torch.from_numpy(np.ascontiguousarray(x[None])).to(dev)
        with torch.inference_mode(), torch.autocast(dev.type, enabled=dev.type == "cuda"):
            out = sliding_window_inference(inp, roi, sw_batch_size, predictor, overlap=ov, mode="gaussian",
                                           sw_device=dev, device=torch.device("cpu"))
        return out[0].float().numpy()
