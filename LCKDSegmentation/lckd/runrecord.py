"""What one segmentation run records: the options it ran with and its JSON result record.

Used by `lckd segment` and `lckd batch` (the command line is a front end; nothing here
imports it).
"""
from __future__ import annotations

from typing import Any

from .errors import LCKDError


def preprocess_kwargs(args: Any) -> dict:
    """The raw-scan options of `Segmenter.segment` from a segment/batch command line."""
    return {"preprocess": args.preprocess, "brain_extractor": args.brain_extractor,
            "bias_correction": bool(args.bias_correction)}


def check_preprocess_request(args: Any) -> None:
    """Refuse `--preprocess on` without the brain extractor installed, before the model loads."""
    from .brainextract import INSTALL_HINT, extractor_available

    if args.preprocess == "on" and not extractor_available(args.brain_extractor):
        raise LCKDError(f"--preprocess on needs the brain extractor {args.brain_extractor}: {INSTALL_HINT}")


def run_options(seg: Any, args: Any) -> dict:
    """The options a case was segmented with, as recorded (postprocess as the rule applied)."""
    return {"labels": args.labels, "register": bool(args.register), "reference": getattr(args, "reference", None),
            "postprocess": seg.postprocess_rule(args.postprocess),
            "overlap": seg.card.overlap if args.overlap is None else args.overlap,
            "sw_batch_size": args.sw_batch_size, "mirrors": args.mirrors, "device": args.device,
            "threads": args.threads,
            **preprocess_kwargs(args)}


def segment_record(seg: Any, res: Any, args: Any, outputs: list, probabilities: list, timings: dict) -> dict:
    """The result record (JSON sidecar) of one `lckd segment` / `lckd batch` case."""
    from .provenance import result_record

    return result_record(
        model=seg.model_record(), modalities=res.modalities, inputs=res.sources, reference=res.reference,
        labels=res.label_convention, volumes_ml=res.volumes_ml, outputs=outputs, probabilities=probabilities,
        warnings=res.warnings, timings=timings, device=str(seg.device), options=run_options(seg, args),
        preprocessing=res.preprocessing, quality=res.quality, notes=res.notes)
