"""What one segmentation run records: the options it ran with and its JSON result record.

Used by `lckd segment` and `lckd batch` (the command line is a front end; nothing here
imports it).
"""
from __future__ import annotations

from typing import Any

from .options import SegmentOptions


def run_options(seg: Any, options: SegmentOptions, device: str, threads: int | None) -> dict:
    """The options a case was segmented with, as recorded: the card's defaults resolved, the
    clean-up as the rule applied, and the device and threads asked for."""
    record = options.record(seg.card)
    return {**{k: record.pop(k) for k in ("labels", "register", "reference", "postprocess", "overlap",
                                         "sw_batch_size", "mirrors")},
            "device": device, "threads": threads, **record}


def segment_record(seg: Any, res: Any, options: SegmentOptions, args: Any, outputs: list, probabilities: list,
                   timings: dict) -> dict:
    """The result record (JSON sidecar) of one `lckd segment` / `lckd batch` case."""
    from .record import result_record

    return result_record(
        model=seg.model_record(), modalities=res.modalities, inputs=res.sources, reference=res.reference,
        labels=res.label_convention, volumes_ml=res.volumes_ml, outputs=outputs, probabilities=probabilities,
        warnings=res.warnings, timings=timings, device=str(seg.device),
        options=run_options(seg, options, args.device, args.threads),
        preprocessing=res.preprocessing, quality=res.quality, notes=res.notes)
