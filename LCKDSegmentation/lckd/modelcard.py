"""Model cards and weights: safetensors + a JSON card, sha256-verified, never pickle.

A model is two files side by side: `<name>.safetensors` (the state dict) and
`<name>.json` (the card). The card records everything needed to rebuild and use the
network and to tell users how good it is (see `ModelCard`).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .errors import ModelError
from .modalities import MODALITIES
from .network import LCKDNet, NetConfig, build_network

CARD_FORMAT = 1


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


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
    training: dict = field(default_factory=dict)       # data, preset, steps, time, hardware
    teachers: dict = field(default_factory=dict)       # elected, single-modality table, history
    evaluation: dict = field(default_factory=dict)     # per-subset Dice / HD95 on held-out cases
    weights: dict = field(default_factory=dict)        # file, sha256, size
    format_version: int = CARD_FORMAT

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict, source: str = "model card") -> "ModelCard":
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
    from .imageio import atomic_path

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
    """Read and sanity-check a model card (no weights are touched)."""
    p = Path(card_path)
    if not p.is_file():
        raise ModelError(f"model card not found: '{p}'")
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"model card '{p}' is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ModelError(f"model card '{p}' is not a JSON object")
    return ModelCard.from_dict(data, source=f"model card '{p}'")


def load_model(card_path: str | Path, device: str | torch.device = "cpu") -> tuple[LCKDNet, ModelCard]:
    """Load a model from its card: verify the weights' sha256, rebuild, load strictly, eval mode.

    Refuses (ModelError) a tampered or truncated weights file, a card whose architecture
    or modality order the code cannot build, and weights that do not fit the architecture.
    """
    p = Path(card_path)
    card = read_card(p)
    wfile = p.parent / str(card.weights.get("file", f"{card.name}.safetensors"))
    if not wfile.is_file():
        raise ModelError(f"weights file of model '{card.name}' not found: '{wfile}'")
    expected = card.weights.get("sha256")
    if not expected:
        raise ModelError(f"model card '{p}' has no sha256 for its weights; refusing to load unverified weights")
    actual = sha256_file(wfile)
    if actual != expected:
        raise ModelError(f"weights file '{wfile}' does not match its model card (sha256 {actual[:12]}... "
                         f"!= {expected[:12]}...): it was modified or is corrupt")
    if sorted(card.modalities) != sorted(MODALITIES):
        raise ModelError(f"model card '{p}' lists modalities {card.modalities}; this code supports {list(MODALITIES)}")
    try:
        cfg = NetConfig.from_dict(card.architecture)
    except (TypeError, ValueError) as e:
        raise ModelError(f"model card '{p}' describes an architecture this code cannot build: {e}") from None
    if list(cfg.modalities) != list(card.modalities):
        raise ModelError(f"model card '{p}': modality order {card.modalities} differs from its architecture's "
                         f"{list(cfg.modalities)}")
    net = build_network(cfg)
    try:
        state = load_file(str(wfile))
        net.load_state_dict(state, strict=True)
    except (RuntimeError, OSError, ValueError) as e:
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
