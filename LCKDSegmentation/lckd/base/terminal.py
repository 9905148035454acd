"""Text a run prints on a terminal: the volumes table, the device line, the plus-minus sign.

Shared by the `lckd` commands (segment, batch, demo, cross-validation) so that each says
these things the same way; standard library only (torch is asked only for a CPU's threads,
and only once a model is loaded).
"""
from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any


def print_volumes(volumes: Mapping[str, float], modalities: Sequence[str]) -> None:
    """The region volume table (mL) of one result, after the scans it used."""
    from .segments import REGION_NAMES, REGION_PARTS

    print(f"modalities used: {', '.join(modalities)}")
    print(f"{'region':<44}{'volume (mL)':>12}")
    for key, name in REGION_NAMES.items():   # classes NCR, ED, ET, then the nested regions TC, WT
        row = f"{name} ({key} = {REGION_PARTS[key]})" if key in REGION_PARTS else f"{name} ({key})"
        print(f"{row:<44}{volumes[key]:>12.2f}")


def device_line(seg: Any, asked: str) -> str:
    """'device: cpu, 2 threads (no GPU found: ...)': said once, so a slow CPU run is not a surprise."""
    if seg.device.type != "cpu":
        return f"device: {seg.device}"
    import torch

    line = f"device: cpu, {torch.get_num_threads()} thread(s)"
    if asked in ("auto", "gpu"):
        line += " (no GPU found: the network runs on the CPU, several times slower than on a GPU)"
    return line


def plus_minus() -> str:
    """The plus-minus sign, or '+/-' where stdout's encoding lacks it (an ASCII locale)."""
    try:
        "\u00b1".encode(getattr(sys.stdout, "encoding", None) or "ascii")
        return "\u00b1"
    except (UnicodeEncodeError, LookupError):
        return "+/-"
