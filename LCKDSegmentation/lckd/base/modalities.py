"""Modality names, aliases, subsets and guessing a modality from a series name."""
from __future__ import annotations

import itertools
import re
from collections.abc import Iterable

from .errors import InputError

#: Canonical modality names, in the order the networks use unless a model card says otherwise.
MODALITIES: tuple[str, ...] = ("T1", "T1ce", "T2", "FLAIR")

_ALIASES = {
    "t1": "T1", "t1n": "T1", "t1w": "T1", "t1native": "T1", "t1pre": "T1",
    "t1ce": "T1ce", "t1c": "T1ce", "t1gd": "T1ce", "t1post": "T1ce", "t1contrast": "T1ce",
    "t2": "T2", "t2w": "T2",
    "flair": "FLAIR", "t2f": "FLAIR", "t2flair": "FLAIR",
}

#: Default order for choosing the reference grid among the given inputs.
REFERENCE_PREFERENCE: tuple[str, ...] = ("T1ce", "FLAIR", "T1", "T2")


def default_reference(names: Iterable[str]) -> str:
    """The reference modality when none is asked for: the first of REFERENCE_PREFERENCE given.

    The one rule for the output grid of inference, the Slicer selection and the grid a
    training or evaluation case is read onto (the highest-resolution scan in clinical
    protocols comes first, so the others are resampled onto it rather than the reverse).
    """
    given = list(names)  # canonical names
    if not given:
        raise InputError("no input image given: give at least one of T1, T1ce, T2, FLAIR")
    return next((m for m in REFERENCE_PREFERENCE if m in given), given[0])


def canonical(name: str) -> str:
    """Map a modality name or alias (any case, '-', '_' ignored) to its canonical name."""
    key = re.sub(r"[\s_\-]", "", str(name)).lower()
    if key in _ALIASES:
        return _ALIASES[key]
    raise InputError(
        f"unknown modality '{name}': use one of {', '.join(MODALITIES)} "
        "(aliases t1n, t1c, t2w, t2f are accepted)"
    )


def all_subsets(order: Iterable[str] = MODALITIES) -> list[tuple[str, ...]]:
    """The 15 non-empty subsets of the modalities, smallest first, each in `order`."""
    order = tuple(order)
    return [c for k in range(1, len(order) + 1) for c in itertools.combinations(order, k)]


def subset_key(mods: Iterable[str]) -> str:
    """Stable text key of a subset, e.g. 'T1ce+FLAIR' (in canonical order)."""
    present = {canonical(m) for m in mods}
    return "+".join(m for m in MODALITIES if m in present)


def parse_subset(text: str) -> tuple[str, ...]:
    """Parse 't2,flair' or 'T2+FLAIR' into canonical names (canonical order, no duplicates)."""
    parts = [p for p in re.split(r"[,+\s]+", text.strip()) if p]
    if not parts:
        raise InputError("empty modality list: give at least one of T1, T1ce, T2, FLAIR")
    present = {canonical(p) for p in parts}
    return tuple(m for m in MODALITIES if m in present)


# Patterns searched in a normalised series name (lower case, '-' and '.' as spaces, '_' kept
# as a separate word). A named family (FLAIR, T2, T1) decides; generic contrast words
# ('post', 'gad', '+c', 'with contrast') turn a T1, or a series that names no family, into
# T1ce; a post-contrast FLAIR stays FLAIR.
_FLAIR = r"flair|\bt2f\b|dark[\W_]*fluid|\btirm\b"
_T1_FLAIR = r"\bt1[\W_]*(w[\W_]*)?flair"          # T1-weighted FLAIR is a T1 sequence
_T2 = (r"\bt2\b(?!\s*\*)|\bt2w\b|t2[\W_]*(tse|fse|frfse|space|blade|weighted|ax|sag|cor|tra)\b"
       r"|_ t2\b|\bt2 _")
_T2_STAR = r"t2\s*\*|t2[\W_]*star"                   # T2* (gradient echo) is not a T2 scan
_T1 = (r"\bt1\b|\bt1n\b|\bt1w\b|t1[\W_]*(pre|native|mprage|tse|se|fl|fl2d|fl3d|ax|sag|cor|tra)\b"
       r"|\bmprage\b|\bspgr\b|\bbravo\b|\btfe\b|_ t1\b|\bt1 _")
_T1CE = r"t1[\W_]*(ce|c|gd|post|contrast|km)\b|\bce[\W_]*t1|\bmprage[\W_]*(post|gd|ce)"
_CONTRAST = r"\+\s*c\b|\bc\s*\+|\bpost\b|\bgad|gado|\bgd\b|contrast|\bce\b"
_NO_CONTRAST = r"\bpre\b|\bnative\b|\bnon[\W_]*contrast|\bwithout\b|\bw/o\b"


def guess_modality(series_name: str) -> str | None:
    """Guess the modality of a volume from its name ('AX T1 POST GD' -> 'T1ce'), or None."""
    text = " " + re.sub(r"[\-\.]", " ", str(series_name).lower()) + " "
    text = re.sub(r"\s+", " ", text.replace("_", " _ "))
    t1_flair = re.search(_T1_FLAIR, text) is not None
    if re.search(_FLAIR, text) and not t1_flair:
        return "FLAIR"
    if re.search(_T2, text) and not re.search(_T2_STAR, text):
        return "T2"
    t1 = t1_flair or re.search(_T1, text) is not None
    contrast = (re.search(_T1CE, text) or re.search(_CONTRAST, text)) and not re.search(_NO_CONTRAST, text)
    if contrast:
        return "T1ce"
    return "T1" if t1 else None
