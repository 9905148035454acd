"""Model cards and weights: safetensors + a JSON card, sha256-verified, never pickle.

A model is two files side by side: `<name>.safetensors` (the state dict) and
`<name>.json` (the card). The card records everything needed to rebuild and use the
network and to tell users how good it is (see `ModelCard`).

A card is input like any other: `read_card` checks it against `modelcard.schema.json`
(types, ranges, nesting depth) before anything uses it, and `load_model` refuses weights
outside the card's folder, weights that are not safetensors, and weights whose tensors
do not add up to the architecture, all before any large allocation. torch is imported
only to build or load a network, so reading a card is instant.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..base.errors import ModelError
from ..base.hashing import sha256_file
from ..base.modalities import MODALITIES

if TYPE_CHECKING:
    import torch

    from .network import LCKDNet

CARD_FORMAT = 1
#: Largest card file read (a real card is ~15 kB).
MAX_CARD_BYTES = 5_000_000
#: Largest safetensors header accepted (the tensor index; ~20 kB for the paper network).
MAX_SAFETENSORS_HEADER = 50_000_000


@lru_cache(maxsize=1)
def card_schema() -> dict:
    """The JSON schema of model cards (`lckd/modelcard.schema.json`)."""
    return json.loads((Path(__file__).with_name("modelcard.schema.json")).read_text(encoding="utf-8"))


@dataclass
class ModelCard:
    """What a model is, how to run it, and how well it does (stored as JSON)."""

    name: str
    version: str
    architecture: dict                       # NetConfig.to_dict()
    modalities: list = field(default_factory=lambda: list(MODALITIES))
    label_convention: str = "brats2018"      # labels the model's regions map to by default
    regions: list = field(default_factory=lambda: ["ET", "TC", "WT"])
    patch_size: list = field(default_factory=lambda: [96, 96, 96])     # (z, y, x) voxels
    spacing: list = field(default_factory=lambda: [1.0, 1.0, 1.0])     # (x, y, z) mm
    overlap: float = 1 / 3
    preprocessing: dict = field(default_factory=lambda: {"normalisation": "z-score over non-zero voxels",
                                                         "clip_percentiles": [0.5, 99.5]})
    description: str = ""
    intended_use: str = "Research only. Not a medical device; not for clinical use."
    scope: str = ""                          # one line shown at every run: what the model was trained on
    postprocessing: dict = field(default_factory=dict)  # default clean-up (labels.labels_for_run; {} = none)
    training: dict = field(default_factory=dict)       # data, preset, steps, time, hardware
    teachers: dict = field(default_factory=dict)       # elected, single-modality table, history
    evaluation: dict = field(default_factory=dict)     # per-subset Dice / HD95 on held-out cases
    quality: dict = field(default_factory=dict)        # per-run quality calibration (lckd.research.calibration)
    weights: dict = field(default_factory=dict)        # file, sha256, size
    format_version: int = CARD_FORMAT

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict, source: str = "model card") -> ModelCard:
        known = set(cls.__dataclass_fields__)
        missing = {"name", "version", "architecture"} - set(d)
        if missing:
            raise ModelError(f"{source}: missing fields {sorted(missing)}")
        return cls(**{k: v for k, v in d.items() if k in known})

    def expected_dice(self, subset_key: str) -> dict | None:
        """Validation Dice {ET, TC, WT} for a subset key like 'T1ce+FLAIR', if the card has it."""
        table = self.evaluation.get("per_subset", {})
        row = table.get(subset_key)
        return None if row is None else {r: row.get(r) for r in ("ET", "TC", "WT")}


def save_model(net: LCKDNet, card: ModelCard, out_dir: str | Path) -> Path:
    """Write `<name>.safetensors` and `<name>.json` into out_dir; returns the card path.

    The card's architecture and modalities are taken from the network, and the weights'
    sha256 and size are filled in, so a saved card always matches its weights.
    """
    # imported here: imageio is a sibling module with no dependency back on this one
    from safetensors.torch import save_file

    from ..io.atomicwrite import atomic_path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{card.name}.safetensors"
    state = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp), metadata={"model": card.name, "version": card.version})
    card.architecture = net.cfg.to_dict()
    card.modalities = list(net.modalities)
    card.weights = {"file": weights.name, "sha256": sha256_file(weights), "size": weights.stat().st_size}
    card_path = out / f"{card.name}.json"
    with atomic_path(card_path) as tmp:
        Path(tmp).write_text(card.to_json() + "\n")
    return card_path


def read_card(card_path: str | Path) -> ModelCard:
    """Read a model card and check it against the card schema (no weights are touched).

    Raises `ModelError` naming the card and the first wrong field.
    """
    from ..io.pathcheck import check_path_text, shown_path
    from .schema import loads_limited, validate

    p = Path(card_path)
    label = f"model card '{shown_path(p)}'"
    check_path_text(p, label, ModelError)
    if not p.is_file():
        raise ModelError(f"model card not found: '{shown_path(p)}'")
    try:
        if p.stat().st_size > MAX_CARD_BYTES:
            raise ModelError(f"{label} is {p.stat().st_size} bytes; a model card is at most {MAX_CARD_BYTES}")
        data = loads_limited(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        raise ModelError(f"{label} is not valid JSON: {str(e)[:160]}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{label} is not a JSON object")
    problems = validate(data, card_schema())
    if problems:
        more = f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})" if len(problems) > 1 else ""
        what = "describes an architecture this code cannot build" if problems[0].startswith("architecture") \
            else "is invalid"
        raise ModelError(f"{label} {what}: {problems[0]}{more}")
    card = ModelCard.from_dict(data, source=label)
    if sorted(card.modalities) != sorted(MODALITIES):
        raise ModelError(f"{label} lists modalities {card.modalities}; this code supports {list(MODALITIES)}")
    if card.weights:
        weights_path(p, card)  # a card naming weights outside its folder is refused whatever the command
    return card


def weights_path(card_path: str | Path, card: ModelCard) -> Path:
    """The card's weights file, which must lie in the card's own folder (`ModelError` otherwise)."""
    p = Path(card_path)
    name = str(card.weights.get("file", f"{card.name}.safetensors"))
    from ..io.pathcheck import check_path_text, printable

    # Card text is input: a NUL byte or a lone surrogate would raise inside resolve() below.
    check_path_text(name, f"model card '{printable(p)}': weights file name", ModelError)
    folder = p.parent.resolve()
    wfile = (p.parent / name)
    if Path(name).is_absolute() or folder not in wfile.resolve().parents:
        raise ModelError(f"model card '{p}': weights file '{name}' is outside the card's folder; "
                         "a card may only name a file next to it")
    if not name.endswith(".safetensors"):
        raise ModelError(f"model card '{p}': weights file '{name}' is not a .safetensors file; "
                         "only safetensors weights are loaded (nothing is ever unpickled)")
    return wfile


def safetensors_numel(path: Path) -> int:
    """Number of tensor elements a safetensors file declares, from its header alone.

    Raises `ModelError` when the file is not a well-formed safetensors file (checked before
    the weights are loaded, so a disguised pickle or a truncated file is refused cleanly).
    """
    bad = f"weights '{path}' are not a valid safetensors file"
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ModelError(f"{bad} (too short)")
            (n,) = struct.unpack("<Q", head)
            if n < 2 or n > MAX_SAFETENSORS_HEADER or 8 + n > size:
                raise ModelError(f"{bad} (header length {n} does not fit the file's {size} bytes)")
            header = json.loads(f.read(n).decode("utf-8"))
    except OSError as e:
        raise ModelError(f"weights '{path}' cannot be read: {e.strerror or e}") from None
    except (ValueError, RecursionError):
        raise ModelError(f"{bad} (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise ModelError(f"{bad} (its header is not a JSON object)")
    total, end = 0, 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        try:
            shape = [int(s) for s in entry["shape"]]
            lo, hi = (int(v) for v in entry["data_offsets"])
        except (TypeError, KeyError, ValueError):
            raise ModelError(f"{bad} (tensor '{str(key)[:60]}' has no valid shape/offsets)") from None
        count = 1
        for s in shape:
            count *= s
        total += count
        end = max(end, hi)
    if 8 + n + end > size:
        raise ModelError(f"{bad} (it is truncated: {size} bytes, its header needs {8 + n + end})")
    return total


def load_model(card_path: str | Path, device: str | torch.device = "cpu") -> tuple[LCKDNet, ModelCard]:
    """Load a model from its card: verify the weights' sha256, rebuild, load strictly, eval mode.

    Refuses (ModelError) a card that fails the schema, weights outside the card's folder or
    not in safetensors format, a tampered or truncated weights file, a card whose
    architecture or modality order the code cannot build, and weights that do not fit the
    architecture (counted on an empty 'meta' network before any memory is allocated).
    """
    import torch
    from safetensors.torch import load_file

    from .network import NetConfig, build_network

    p = Path(card_path)
    card = read_card(p)
    wfile = weights_path(p, card)
    if not wfile.is_file():
        raise ModelError(f"weights file of model '{card.name}' not found: '{wfile}'")
    expected = card.weights.get("sha256")
    if not expected:
        raise ModelError(f"model card '{p}' has no sha256 for its weights; refusing to load unverified weights")
    actual = sha256_file(wfile)
    if actual != expected:
        raise ModelError(f"weights file '{wfile}' does not match its model card (sha256 {actual[:12]}... "
                         f"!= {expected[:12]}...): it was modified or is corrupt")
    try:
        cfg = NetConfig.from_dict(card.architecture)
    except (TypeError, ValueError) as e:
        raise ModelError(f"model card '{p}' describes an architecture this code cannot build: {e}") from None
    if list(cfg.modalities) != list(card.modalities):
        raise ModelError(f"model card '{p}': modality order {card.modalities} differs from its architecture's "
                         f"{list(cfg.modalities)}")
    declared = safetensors_numel(wfile)
    try:
        with torch.device("meta"):
            needed = sum(t.numel() for t in build_network(cfg).state_dict().values())
    except (TypeError, ValueError, RuntimeError) as e:
        raise ModelError(f"model card '{p}' describes an architecture this code cannot build: {e}") from None
    if needed != declared:
        raise ModelError(f"weights '{wfile}' do not fit the architecture in '{p}': the weights hold {declared} "
                         f"values, the architecture needs {needed}")
    net = build_network(cfg)
    try:
        state = load_file(str(wfile))
        net.load_state_dict(state, strict=True)
    except Exception as e:  # safetensors raises its own SafetensorError besides the usual ones
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"weights '{wfile}' do not fit the architecture in '{p}': {first}") from None
    return net.to(device).eval(), card


def card_summary(card: ModelCard) -> dict[str, Any]:
    """Flat, human-oriented view of the important card fields (for `lckd info`)."""
    return {
        "name": card.name,
        "version": card.version,
        "architecture": card.architecture.get("name"),
        "modalities": ", ".join(card.modalities),
        "labels": card.label_convention,
        "patch size (z,y,x)": "x".join(str(s) for s in card.patch_size),
        "spacing (mm)": "x".join(f"{s:g}" for s in card.spacing),
        "teachers": ", ".join(card.teachers.get("elected", [])) or "-",
        "intended use": card.intended_use,
    }
