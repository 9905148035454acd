"""Start a training run from a trained model's weights (pre-training, e.g. on phantoms)."""
from __future__ import annotations

from dataclasses import replace

from ...base.errors import InputError
from ...model.modelcard import ModelCard, load_model
from ...model.network import LCKDNet
from ...model.registry import resolve_model


def start_from(net: LCKDNet, model: str, partial: bool = False) -> tuple[list[str], dict]:
    """Copy the weights of `model` (registry name or card path, verified like any model) into `net`.

    The source must have the same network configuration (modality order included); the
    training-only bottleneck head may differ. With `partial`, the source may be another
    configuration of the same family with the same modalities (e.g. `lite` into `lite-wide`):
    every tensor whose name and shape match is copied, the rest start fresh. Returns the
    names of the tensors that were not copied (they keep their fresh initial values, so the
    run can say what started from scratch) and the source's identity for the card
    (`source_identity`, with the share of tensors copied when partial).
    """
    source, card = load_model(resolve_model(model, allow_download=False))
    same = replace(source.cfg, bottleneck_head=False) == replace(net.cfg, bottleneck_head=False)
    if not same and not (partial and source.cfg.modalities == net.cfg.modalities):
        raise InputError(f"--init-from {model}: its network is not this run's configuration "
                         f"({source.cfg.name!r} against {net.cfg.name!r}, or other modalities); "
                         f"give a model trained with the same --network, or --init-partial")
    own, theirs = net.state_dict(), source.state_dict()
    copied = {k: v for k, v in theirs.items() if k in own and own[k].shape == v.shape}
    net.load_state_dict(copied, strict=False)
    identity = source_identity(card)
    if not same:
        identity["network"] = source.cfg.name
        identity["tensors_copied"] = f"{len(copied)} of {len(own)}"
    return sorted(k for k in own if k not in copied), identity


def source_identity(card: ModelCard) -> dict:
    """Name, version and weights sha256 of a starting model: a name alone would not pin the
    weights a run began from once that model is retrained."""
    return {"name": card.name, "version": card.version, "weights_sha256": card.weights.get("sha256")}
