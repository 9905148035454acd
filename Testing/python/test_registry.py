"""Model registry: bundled default, verified download into the cache, corrupt downloads refused."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from lckd.base.errors import ModelError
from lckd.base.hashing import sha256_file
from lckd.model.modelcard import ModelCard, load_model, save_model
from lckd.model.network import build_network
from lckd.model.registry import list_models, resolve_model


def test_bundled_default_is_first_and_loads():
    entries = list_models()
    assert entries[0].bundled
    net, card = load_model(resolve_model(None))
    assert card.name == entries[0].name and card.architecture["name"] == "lite"


def _registry_with_download(tmp_path, sha_override=None):
    """A resources folder whose registry lists one model served from a file:// URL."""
    src = tmp_path / "server"
    torch.manual_seed(0)
    card_path = save_model(build_network("lite"), ModelCard(name="remote", version="2", architecture={}), src)
    files = []
    for f in (card_path, src / "remote.safetensors"):
        files.append({"name": f.name, "url": f.as_uri(), "sha256": sha_override or sha256_file(f),
                      "size": f.stat().st_size})
    res = tmp_path / "resources"
    (res / "models").mkdir(parents=True)
    (res / "models" / "registry.json").write_text(json.dumps({"format_version": 1, "models": [
        {"name": "remote", "description": "test", "files": files}]}))
    return res


def test_download_is_verified_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("LCKD_RESOURCES", str(_registry_with_download(tmp_path)))
    monkeypatch.setenv("LCKD_CACHE_DIR", str(tmp_path / "cache"))
    card = resolve_model("remote")
    assert card == tmp_path / "cache" / "models" / "remote" / "remote.json"
    load_model(card)
    shutil.rmtree(tmp_path / "server")      # second call must not need the server
    assert resolve_model("remote") == card


def test_corrupt_download_is_not_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("LCKD_RESOURCES", str(_registry_with_download(tmp_path, sha_override="0" * 64)))
    monkeypatch.setenv("LCKD_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(ModelError, match="corrupt"):
        resolve_model("remote")
    assert not any((tmp_path / "cache").rglob("*.json"))


def test_unknown_model_names_the_choices():
    with pytest.raises(ModelError, match="lckd-lite-phantom"):
        resolve_model("no-such-model")
