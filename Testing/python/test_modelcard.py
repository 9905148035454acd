"""Model cards and weights: round trip, sha256 verification, refusal of mismatched cards."""
from __future__ import annotations

import json

import pytest
import torch

from lckd.base.errors import ModelError
from lckd.base.hashing import sha256_file
from lckd.model.modelcard import ModelCard, load_model, read_card, save_model
from lckd.model.network import build_network


@pytest.fixture()
def saved(tmp_path):
    torch.manual_seed(0)
    net = build_network("lite").eval()
    card = ModelCard(name="m", version="1", architecture={}, patch_size=[64, 64, 64])
    return net, save_model(net, card, tmp_path)


def test_round_trip_gives_identical_outputs(saved):
    net, card_path = saved
    loaded, card = load_model(card_path)
    x = torch.randn(1, 4, 64, 64, 64)
    present = torch.tensor([True, False, True, True])
    with torch.no_grad():
        assert torch.equal(net(x, present).logits, loaded(x, present).logits)
    assert card.architecture["name"] == "lite" and card.weights["sha256"] == sha256_file(
        card_path.parent / card.weights["file"])
    assert json.loads(card_path.read_text())["modalities"] == ["T1", "T1ce", "T2", "FLAIR"]


def test_tampered_weights_are_refused(saved):
    _, card_path = saved
    weights = card_path.parent / "m.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF  # one flipped byte deep in a tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match its model card"):
        load_model(card_path)


def test_card_describing_another_architecture_is_refused(saved):
    _, card_path = saved
    d = json.loads(card_path.read_text())
    d["architecture"]["stage_widths"] = [8, 16, 24, 32]   # weights no longer fit
    card_path.write_text(json.dumps(d))
    with pytest.raises(ModelError, match="do not fit the architecture"):
        load_model(card_path)
    d["architecture"]["attention"] = True                 # a field this code does not know
    card_path.write_text(json.dumps(d))
    with pytest.raises(ModelError, match="cannot build"):
        load_model(card_path)


def test_card_with_other_modality_order_is_refused(saved):
    _, card_path = saved
    d = json.loads(card_path.read_text())
    d["modalities"] = ["FLAIR", "T1", "T1ce", "T2"]
    card_path.write_text(json.dumps(d))
    with pytest.raises(ModelError, match="modality order"):
        load_model(card_path)
    d["modalities"] = ["T1", "T1ce", "T2", "PD"]
    card_path.write_text(json.dumps(d))
    with pytest.raises(ModelError, match="supports"):
        load_model(card_path)


def test_missing_or_broken_card(tmp_path, saved):
    with pytest.raises(ModelError, match="not found"):
        read_card(tmp_path / "nothing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        read_card(bad)
    _, card_path = saved
    d = json.loads(card_path.read_text())
    del d["weights"]["sha256"]
    card_path.write_text(json.dumps(d))
    with pytest.raises(ModelError, match="unverified"):
        load_model(card_path)
