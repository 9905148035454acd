"""The options of one segmentation run, as one typed, validated value (`SegmentOptions`).

Built once per run from whatever asked for it: the command line (`from_args`), a worker
request (`from_request`), the Slicer Logic's arguments or the Python API's keywords (the
constructor), then carried unchanged to `Segmenter.segment` and recorded in the result
(`lckd.inference.record.run_options`).
Every value is checked here, in `__post_init__` (with the rules of `lckd.base.optionchecks`), so each
entry point refuses a bad one with the same `InputError`. Fields left None take the model
card's value (`for_card`): label convention, window overlap, clean-up rule.

Standard library only: the Slicer GUI process builds these without torch or numpy.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..base import optionchecks as checks
from ..base.segments import check_convention

#: The JSON type a worker request's value of each field must have (checked before any value
#: rule, so a request of the wrong shape is refused as malformed).
_JSON = "json"
#: How a request of the wrong type is told, per JSON type: fields of one type share a line.
_WRONG_TYPE = {bool: "options {names} must be true, false or null (null postprocess follows the model card)",
               str: "options {names} must be strings", int: "option {names} must be an integer",
               float: "option {names} must be a number"}


def _opt(default: Any, json_type: type, hint: str = "") -> Any:
    return field(default=default, metadata={_JSON: json_type, "hint": hint})


@dataclass(frozen=True)
class SegmentOptions:
    """How to segment one case; every field has the default `lckd segment` uses."""

    labels: str | None = _opt(None, str)             # None: the model card's convention
    reference: str | None = _opt(None, str)          # None: first of T1ce, FLAIR, T1, T2 given
    register: bool = _opt(False, bool)
    postprocess: bool | None = _opt(None, bool)      # None: the model card's clean-up rule
    probabilities: bool = _opt(False, bool)
    overlap: float | None = _opt(None, float)        # None: the model card's
    sw_batch_size: int = _opt(1, int)
    mirrors: int = _opt(1, int, " (1, 2, 4 or 8)")
    preprocess: str = _opt("auto", str)
    brain_extractor: str | None = _opt(None, str)    # None: the default backend
    bias_correction: bool = _opt(False, bool)
    max_memory_gb: float | None = _opt(None, float)  # None: $LCKD_MAX_MEMORY_GB, else 80% of memory
    trust_flags: bool = _opt(False, bool)            # the contrast check warns but never refuses

    def __post_init__(self) -> None:
        # The one place a run's options are checked; normalised values replace the given ones.
        set_ = object.__setattr__
        if self.labels is not None:
            check_convention(self.labels)
        set_(self, "register", bool(self.register))
        set_(self, "probabilities", bool(self.probabilities))
        set_(self, "bias_correction", bool(self.bias_correction))
        set_(self, "trust_flags", bool(self.trust_flags))
        if self.postprocess is not None:
            set_(self, "postprocess", bool(self.postprocess))
        set_(self, "overlap", checks.check_overlap(self.overlap))
        set_(self, "sw_batch_size", checks.check_sw_batch_size(self.sw_batch_size))
        checks.check_mirrors(self.mirrors)
        set_(self, "mirrors", int(self.mirrors))
        set_(self, "preprocess", checks.check_preprocess(self.preprocess))
        set_(self, "brain_extractor", checks.check_brain_extractor(self.brain_extractor))
        set_(self, "max_memory_gb", checks.check_max_memory(self.max_memory_gb))

    # -- building ----------------------------------------------------------------------
    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The field names: the run options a worker request may carry."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_args(cls, args: Any) -> SegmentOptions:
        """From a `lckd segment` / `lckd batch` command line (argparse names; `--probabilities DIR`
        is a folder there, so it means True when given)."""
        return cls(labels=args.labels, reference=getattr(args, "reference", None), register=args.register,
                   postprocess=args.postprocess, probabilities=bool(getattr(args, "probabilities", None)),
                   overlap=args.overlap, sw_batch_size=args.sw_batch_size, mirrors=args.mirrors,
                   preprocess=args.preprocess, brain_extractor=args.brain_extractor,
                   bias_correction=args.bias_correction, max_memory_gb=getattr(args, "max_memory", None),
                   trust_flags=bool(getattr(args, "trust_flags", False)))

    @classmethod
    def request_problem(cls, request: dict) -> str | None:
        """Why a worker request's options are not of the right JSON types (None: they are).

        Only the shape: values are checked when the options are built (`from_request`)."""
        for kind, message in _WRONG_TYPE.items():
            fields = [f for f in dataclasses.fields(cls) if f.metadata[_JSON] is kind]
            wrong = [f for f in fields if not _is_json(request.get(f.name), kind)]
            if not wrong:
                continue
            if kind in (bool, str):     # one line names every field of the type, as the protocol always did
                return message.format(names=", ".join(f.name if kind is bool else repr(f.name) for f in fields))
            return message.format(names=repr(wrong[0].name)) + wrong[0].metadata["hint"]
        return None

    @classmethod
    def from_request(cls, request: dict) -> SegmentOptions:
        """From a worker request's options (other keys, the output paths, are ignored; null = default)."""
        given = {name: request[name] for name in cls.names() if request.get(name) is not None}
        if "postprocess" in request:     # null is a value here: follow the model card
            given["postprocess"] = request["postprocess"]
        return cls(**given)

    def to_request(self) -> dict:
        """The options as a worker request carries them (`from_request` reads them back)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> SegmentOptions:
        """A copy with some fields changed (checked again)."""
        return dataclasses.replace(self, **changes)

    # -- what the model card decides ---------------------------------------------------
    def for_card(self, card: Any) -> SegmentOptions:
        """These options with the model card's defaults filled in (label convention, overlap).

        Not checked again: these options were checked when made, and the card's values when
        the card was read (its schema)."""
        resolved = copy.copy(self)
        object.__setattr__(resolved, "labels", self.labels or card.label_convention)
        object.__setattr__(resolved, "overlap", card.overlap if self.overlap is None else self.overlap)
        return resolved

    def cleanup_rule(self, card: Any) -> dict | None:
        """Keyword arguments of `labels.postprocess` for this run, or None for no clean-up:
        None follows the card's rule, True applies it, False never cleans up."""
        if self.postprocess is False or (self.postprocess is None and not card.postprocessing):
            return None
        return dict(card.postprocessing)


def _is_json(value: Any, kind: type) -> bool:
    """Whether a request's value is null or of the JSON type `kind` (true/false is no number)."""
    if value is None:
        return True
    if kind is bool or isinstance(value, bool):
        return isinstance(value, bool) and kind is bool
    return isinstance(value, (int, float) if kind is float else kind)
