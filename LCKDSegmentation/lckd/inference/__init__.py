"""Segmenting one case: `segmenter` (the pipeline: `Segmenter`, `SegmentationResult`), `options`
(`SegmentOptions`, checked once), `inputchecks` (reading and checking the scans), `quality` (the
per-run estimate and its features), `record` (run-time notice and the JSON run record) and
`resultfiles` (writing a result, all or nothing).

`from lckd.inference import Segmenter, SegmentationResult, SegmentOptions` is the public API.
The names are loaded on first use, so importing `lckd.inference.options` (the Slicer GUI and the
worker protocol do) does not import torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .options import SegmentOptions
    from .segmenter import SegmentationResult, Segmenter

__all__ = ["Segmenter", "SegmentationResult", "SegmentOptions"]


def __getattr__(name: str) -> Any:
    if name in ("Segmenter", "SegmentationResult"):
        from . import segmenter
        return getattr(segmenter, name)
    if name == "SegmentOptions":
        from .options import SegmentOptions
        return SegmentOptions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
