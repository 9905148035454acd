"""Resumable checkpoints without pickle: tensors in safetensors, everything else in JSON.

`checkpoint.safetensors` holds the network (`model.*`), the optimizer's per-parameter
state (`optim.<index>.<key>`, e.g. SGD momentum buffers or Adam moments) and the torch
RNG state (`rng.torch`, uint8). `checkpoint.json` holds the step, the training config, the
teacher election history, the optimizer's parameter groups and its non-tensor state. The
data sampler needs no state: its batches are a function of (seed, rank, step).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ...base.errors import InputError

WEIGHTS = "checkpoint.safetensors"
META = "checkpoint.json"
FORMAT = 1


def save_checkpoint(folder: str | Path, net: torch.nn.Module, optimizer: torch.optim.Optimizer, meta: dict) -> Path:
    """Write the checkpoint pair into `folder` (atomically, tensors first); returns the JSON path."""
    from ...io.atomicwrite import atomic_path

    folder = Path(folder)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    opt = optimizer.state_dict()
    scalars: dict = {}
    for idx, state in opt["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    tensors["rng.torch"] = torch.get_rng_state()
    step = int(meta["step"])
    with atomic_path(folder / WEIGHTS, what="checkpoint") as tmp:
        save_file(tensors, str(tmp), metadata={"step": str(step)})
    doc = dict(meta, format=FORMAT, optimizer={"param_groups": opt["param_groups"], "scalars": scalars})
    with atomic_path(folder / META, what="checkpoint") as tmp:
        Path(tmp).write_text(json.dumps(doc, indent=1) + "\n")
    return folder / META


def read_checkpoint(folder: str | Path) -> tuple[dict, dict]:
    """(tensors, meta) of a checkpoint folder; InputError when missing or inconsistent."""
    folder = Path(folder)
    wp, mp = folder / WEIGHTS, folder / META
    if not wp.is_file() or not mp.is_file():
        raise InputError(f"no checkpoint to resume in {folder} (expected {WEIGHTS} and {META})")
    meta = json.loads(mp.read_text())
    tensors = load_file(str(wp))
    from safetensors import safe_open
    with safe_open(str(wp), framework="pt") as f:
        saved_step = int((f.metadata() or {}).get("step", -1))
    if saved_step != int(meta["step"]):
        raise InputError(f"checkpoint in {folder} is inconsistent: tensors of step {saved_step}, "
                         f"JSON of step {meta['step']} (interrupted while saving?)")
    return tensors, meta


def restore(tensors: dict, meta: dict, net: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load weights, optimizer state and the torch RNG state saved by `save_checkpoint`."""
    net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, key = k.split(".", 2)
            state.setdefault(int(idx), {})[key] = v
    for idx, extra in meta["optimizer"]["scalars"].items():
        state.setdefault(int(idx), {}).update(extra)
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
