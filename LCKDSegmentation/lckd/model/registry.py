"""Model registry (the resources root's `models/registry.json`): list, resolve, download, verify, cache.

Each entry names a model. A bundled entry points at a card inside the resources folder;
a downloadable entry lists its files with URL, sha256 and size. Downloads go to the cache
folder through a temporary file and are kept only if the sha256 matches.
"""
from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..base.errors import ModelError
from ..base.hashing import sha256_file  # light on purpose: Slicer's GUI process lists models, torch-free
from .resources import cache_dir, resources_dir


@dataclass
class RegistryEntry:
    """One model of the registry."""

    name: str
    description: str = ""
    card: str | None = None           # bundled: card path relative to the resources folder
    files: list = field(default_factory=list)   # downloadable: [{name, url, sha256, size}], one is the card
    bundled: bool = False


def registry_path() -> Path:
    return resources_dir() / "models" / "registry.json"


def list_models(path: str | Path | None = None) -> list[RegistryEntry]:
    """Entries of the registry, bundled default first."""
    p = Path(path) if path else registry_path()
    try:
        data = json.loads(p.read_text())
        entries = [RegistryEntry(**e) for e in data["models"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(f"model registry '{p}' is unreadable: {e}") from None
    return sorted(entries, key=lambda e: not e.bundled)


def default_model_name() -> str:
    return list_models()[0].name


def _download(url: str, dest: Path, sha256: str, size: int | None,
              progress: Callable[[float, str], None] | None) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
            total = size or int(r.headers.get("Content-Length") or 0)
            done = 0
            while True:
                block = r.read(1 << 20)
                if not block:
                    break
                f.write(block)
                done += len(block)
                if progress and total:
                    progress(min(done / total, 1.0), f"downloading {dest.name}")
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ModelError(f"download of '{url}' failed: {e}") from None
    actual = sha256_file(tmp)
    if actual != sha256:
        tmp.unlink(missing_ok=True)
        raise ModelError(f"download of '{url}' is corrupt (sha256 {actual[:12]}... != {sha256[:12]}...); "
                         "nothing was kept")
    tmp.replace(dest)


def resolve_model(model: str | Path | None = None, *,
                  progress: Callable[[float, str], None] | None = None,
                  allow_download: bool = True) -> Path:
    """Path of the model card for `model`: None (bundled default), a registry name, a card
    path (`.json`) or a folder holding one card. Downloads registry models once, verified."""
    if model is None:
        model = default_model_name()
    from ..io.pathcheck import check_path_text, shown_path

    p = Path(model)
    check_path_text(p, f"model '{shown_path(p)}'", ModelError)  # ITK is not involved, but messages must print
    if p.suffix == ".json" and p.is_file():
        return p
    if p.is_dir():
        cards = [c for c in sorted(p.glob("*.json")) if c.name != "registry.json"]
        if len(cards) != 1:
            raise ModelError(f"model folder '{p}' must hold exactly one model card (.json), found {len(cards)}")
        return cards[0]
    entries = {e.name: e for e in list_models()}
    if str(model) not in entries:
        raise ModelError(f"unknown model '{model}': give a model card (.json), a folder, or one of: "
                         + ", ".join(entries))
    entry = entries[str(model)]
    if entry.bundled:
        return resources_dir() / str(entry.card)
    target = cache_dir() / "models" / entry.name
    card_files = [f for f in entry.files if f["name"].endswith(".json")]
    if len(card_files) != 1:
        raise ModelError(f"registry entry '{entry.name}' must list exactly one .json card file")
    for f in entry.files:
        dest = target / f["name"]
        if dest.is_file() and sha256_file(dest) == f["sha256"]:
            continue
        if not allow_download:
            raise ModelError(f"model '{entry.name}' is not downloaded yet (cache: {target})")
        _download(f["url"], dest, f["sha256"], f.get("size"), progress)
    return target / card_files[0]["name"]
