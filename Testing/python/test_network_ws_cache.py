"""Cached standardised weights (WSConv3d, eval mode): same outputs as recomputing them, and
any change of the weights recomputes the cache."""
from __future__ import annotations

import copy

import pytest
import torch

from lckd.model.network import WSConv3d, build_network

SIZE = 32


def _ws(net) -> list[WSConv3d]:
    return [m for m in net.modules() if isinstance(m, WSConv3d)]


def _uncached(net, x, mask) -> torch.Tensor:
    """Network output with every standardised weight recomputed (the reference)."""
    convs = _ws(net)
    for m in convs:
        m.cache_standardised = False
    try:
        with torch.no_grad():
            return net(x, mask).logits
    finally:
        for m in convs:
            m.cache_standardised = True


@pytest.fixture()
def net():
    torch.manual_seed(0)
    return build_network("lite").eval()


@pytest.fixture()
def case():
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, 4, SIZE, SIZE, SIZE, generator=g), torch.tensor([True, True, False, True])


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_cached_output_is_bit_identical_to_recomputed(net, case, mode):
    x, mask = case
    ctx = torch.no_grad if mode == "no_grad" else torch.inference_mode
    with ctx():
        first = net(x, mask).logits      # fills the cache
        second = net(x, mask).logits     # uses it
    reference = _uncached(net, x, mask)
    assert torch.equal(first, reference)
    assert torch.equal(second, reference)


def test_eval_without_grad_reuses_one_tensor_and_training_does_not(net):
    conv = _ws(net)[0]
    with torch.no_grad():
        assert conv.standardised_weight() is conv.standardised_weight()
    net.train()
    with torch.no_grad():
        assert conv.standardised_weight() is not conv.standardised_weight()
    net.eval()
    with torch.enable_grad():   # eval mode, but a gradient may flow to the weight: no cache
        w = conv.standardised_weight()
        assert w.requires_grad and w is not conv.standardised_weight()


def test_in_place_weight_change_invalidates_the_cache(net, case):
    x, mask = case
    with torch.no_grad():
        before = net(x, mask).logits
        conv = _ws(net)[3]
        old = conv.standardised_weight()
        # additive noise (standardisation ignores a plain rescaling)
        conv.weight.add_(torch.randn_like(conv.weight))
        new = conv.standardised_weight()
        after = net(x, mask).logits
    assert new is not old and not torch.equal(new, old)
    assert torch.equal(new, conv._standardise(conv.weight.detach()))
    assert not torch.equal(after, before)
    assert torch.equal(after, _uncached(net, x, mask))


def test_load_state_dict_and_weight_data_replacement_invalidate_the_cache(net, case):
    x, mask = case
    torch.manual_seed(5)
    other = build_network("lite").eval()
    with torch.no_grad():
        net(x, mask)                                 # cache the old weights
        expected = other(x, mask).logits
    net.load_state_dict(other.state_dict())
    with torch.no_grad():
        assert torch.equal(net(x, mask).logits, expected)
    conv = _ws(net)[0]
    with torch.no_grad():
        cached = conv.standardised_weight()
        conv.weight.data = conv.weight.data * 3 + 1   # new storage, not an in-place change
        assert not torch.equal(conv.standardised_weight(), cached)
        assert torch.equal(conv.standardised_weight(), conv._standardise(conv.weight.detach()))


def test_an_optimizer_step_then_eval_recomputes(net, case):
    x, mask = case
    with torch.no_grad():
        net(x, mask)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net(x, mask).logits.square().mean().backward()
    opt.step()
    net.eval()
    with torch.no_grad():
        out = net(x, mask).logits
    assert torch.equal(out, _uncached(net, x, mask))


def test_dtype_change_and_deepcopy(net, case):
    x, mask = case
    with torch.no_grad():
        net(x, mask)
    twin = copy.deepcopy(net)
    net.double()
    with torch.no_grad():
        assert _ws(net)[0].standardised_weight().dtype == torch.float64
        a = twin(x, mask).logits
    assert torch.equal(a, _uncached(twin, x, mask))
