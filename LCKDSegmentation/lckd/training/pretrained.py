"""Start a training run from a trained model's weights (pre-training, e.g. on phantoms)."""
from __future__ import annotations

from dataclasses import replace

from ..errors import InputError
from ..modelcard import ModelCard, load_model
from ..network import LCKDNet
from ..registry import resolve_model


def start_from(net: LCKDNet, model: str) -> tuple[list[str], dict]:
    """Copy the weights of `model` (registry name or card path, verified like any model) into `net`.

    The source must have the same network configuration (modality order included); the
    training-only bottleneck head may differ. Returns the names of the parts only `net` has
    (they keep their fresh initial values, so the run can say what started from scratch) and
    the source's identity for the card (`source_identity`).
    """
    source, card = load_model(resolve_model(model, allow_download=False))
    if replace(source.cfg, bottleneck_head=False) != replace(net.cfg, bottleneck_head=False):
        raise InputError(f"--init-from {model}: its network is not this run's configuration "
                         f"({source.cfg.name!r} against {net.cfg.name!r}, or other modalities); "
                         f"give a model trained with the same --network")
    own, theirs = net.state_dict(), source.state_dict()
    net.load_state_dict({k: v for k, v in theirs.items() if k in own}, strict=False)
    return sorted(k for k in own if k not in theirs), source_identity(card)


def source_identity(card: ModelCard) -> dict:
    """Name, version and weights sha256 of a starting model: a name alone would not pin the
    weights a run began from once that model is retrained."""
    return {"name": card.name, "version": card.version, "weights_sha256": card.weights.get("sha256")}
