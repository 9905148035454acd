"""A scan that is one channel of a 4D file (standard library only, so the CLI can name one cheaply).

The Medical Segmentation Decathlon's brain-tumour images hold FLAIR, T1, T1ce and T2 as the
four volumes of one 4D NIfTI; `lckd segment --stack FILE --channels LIST` and `lckd batch
--channels` turn each named channel into a `StackChannel`, which `lckd.io.imageio.read_image`
reads (the file once for all its channels).
"""
from __future__ import annotations

import os
from typing import Union

from .pathcheck import shown_path

PathLike = Union[str, "os.PathLike[str]"]


class StackChannel(os.PathLike):
    """One channel of a file that holds several scans as channels of a 4D image (the Medical
    Segmentation Decathlon's brain-tumour layout), usable wherever a scan's path is.

    It is the file's path for everything that asks for a path (`os.fspath`, `str`, the check
    that an output never replaces an input); `read_image` reads only its channel.
    """

    def __init__(self, path: PathLike, index: int, count: int):
        self.path, self.index, self.count = os.fspath(path), int(index), int(count)

    def __fspath__(self) -> str:
        return self.path

    def __str__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"StackChannel({self.path!r}, {self.index}, {self.count})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StackChannel) and (self.path, self.index, self.count) == \
            (other.path, other.index, other.count)

    def __hash__(self) -> int:
        return hash((self.path, self.index, self.count))

    def describe(self) -> str:
        """'<file> (channel 2 of 4)': how records and messages name it."""
        return f"{shown_path(self.path)} (channel {self.index + 1} of {self.count})"


def parse_channels(text: str | None) -> list[str] | None:
    """'T1,T1ce,T2,FLAIR' -> canonical names in channel order (aliases ok); None if not given."""
    if not text:
        return None
    from ..base.errors import InputError
    from ..base.modalities import canonical

    names = [canonical(t.strip()) for t in text.split(",") if t.strip()]
    if not names or len(set(names)) != len(names):
        raise InputError(f"--channels must name each scan once, in channel order (e.g. T1,T1ce,T2,FLAIR), "
                         f"got '{text}'")
    return names
