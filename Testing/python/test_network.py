"""LCKD network: shapes for every subset, presence masks, the fill rule, parameter counts."""
from __future__ import annotations

import pytest
import torch

from lckd.base.modalities import MODALITIES, all_subsets
from lckd.model.network import build_network, count_parameters, fill_missing

SIZE = 32  # smaller than two bottleneck voxels: padded inside the network, cropped back


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_network("lite").eval()


def _mask(subset) -> torch.Tensor:
    return torch.tensor([m in subset for m in MODALITIES])


@pytest.mark.parametrize("subset", all_subsets(), ids=lambda s: "+".join(s))
def test_every_subset_gives_region_logits(net, subset):
    x = torch.randn(1, 4, SIZE, SIZE, SIZE)
    with torch.no_grad():
        out = net(x, _mask(subset))
    assert out.logits.shape == (1, 3, SIZE, SIZE, SIZE)
    assert torch.isfinite(out.logits).all()
    c = net.cfg.feature_channels
    assert out.features.shape[:3] == (1, 4, c)
    for i, m in enumerate(MODALITIES):
        # absent slots of the returned bottleneck are zero; present ones are real encodings
        assert bool(out.features[0, i].abs().sum() > 0) == (m in subset)


def test_output_ignores_voxels_of_absent_scans(net):
    torch.manual_seed(1)
    x = torch.randn(1, 4, SIZE, SIZE, SIZE)
    y = x.clone()
    y[:, 0] = torch.randn(SIZE, SIZE, SIZE) * 100  # T1 garbage
    y[:, 2] = float("nan")                          # T2 not even finite
    mask = _mask(("T1ce", "FLAIR"))
    with torch.no_grad():
        a = net(x, mask).logits
        b = net(y, mask).logits
    assert torch.equal(a, b)


def test_missing_slots_are_filled_with_mean_of_present(net):
    captured = {}

    def hook(module, args):
        captured["bottleneck"], captured["skips"] = args

    handle = net.decoder.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            net(torch.randn(1, 4, SIZE, SIZE, SIZE), _mask(("T1", "T2")))
    finally:
        handle.remove()
    m = len(MODALITIES)
    for level in [captured["bottleneck"]] + list(captured["skips"]):
        slots = level.view(1, m, level.shape[1] // m, *level.shape[2:])
        mean = (slots[:, 0] + slots[:, 2]) / 2  # T1 and T2 present
        torch.testing.assert_close(slots[:, 1], mean)   # T1ce missing
        torch.testing.assert_close(slots[:, 3], mean)   # FLAIR missing
        assert not torch.allclose(slots[:, 0], slots[:, 2])


def test_fill_missing_scatter_and_mean():
    feats = torch.arange(3 * 2, dtype=torch.float32).view(3, 2)  # encodings of 3 present pairs
    present = torch.tensor([[True, False, True], [False, True, False]])
    filled, scattered = fill_missing(feats, present)
    assert torch.equal(scattered[0, 0], feats[0]) and torch.equal(scattered[0, 2], feats[1])
    assert torch.equal(scattered[1, 1], feats[2]) and scattered[0, 1].abs().sum() == 0
    assert torch.equal(filled[0, 1], (feats[0] + feats[1]) / 2)
    assert torch.equal(filled[1, 0], feats[2]) and torch.equal(filled[1, 2], feats[2])


def test_batch_may_mix_subsets(net):
    torch.manual_seed(2)
    x = torch.randn(2, 4, SIZE, SIZE, SIZE)
    masks = torch.stack([_mask(("T1ce",)), _mask(("T1", "T2", "FLAIR"))])
    with torch.no_grad():
        both = net(x, masks).logits
        one = net(x[1:], masks[1]).logits
    torch.testing.assert_close(both[1:], one, rtol=1e-4, atol=1e-5)


def test_trains_with_batch_size_one_and_odd_sizes():
    torch.manual_seed(3)
    net = build_network("lite").train()
    x = torch.randn(1, 4, 40, 36, 33)  # not multiples of 32: padded inside, cropped back
    out = net(x, _mask(("FLAIR",)))
    assert out.logits.shape == (1, 3, 40, 36, 33)
    out.logits.mean().backward()
    assert net.encoder.stem[0].weight.grad is not None


def test_bottleneck_head_predicts_at_bottleneck_resolution_in_training_only():
    torch.manual_seed(4)
    net = build_network("lite", bottleneck_head=True).train()
    x = torch.randn(2, 4, 32, 32, 32)
    out = net(x, _mask(("T2", "FLAIR")))
    assert out.bottleneck_logits.shape == (2, 3) + tuple(out.features.shape[3:])
    out.bottleneck_logits.mean().backward()
    assert net.encoder.stem[0].weight.grad is not None     # the head trains the encoder
    with torch.no_grad():
        assert net.eval()(x, _mask(("T2",))).bottleneck_logits is None
    # the head changes nothing else: same weights without it give the same segmentation
    plain = build_network("lite").eval()
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("bottleneck_head.")})
    with torch.no_grad():
        torch.testing.assert_close(plain(x).logits, net(x).logits)
    assert "bottleneck_head" not in dict(build_network("lite").named_children())


def test_no_modality_is_refused(net):
    with pytest.raises(ValueError):
        net(torch.zeros(1, 4, SIZE, SIZE, SIZE), torch.zeros(4, dtype=torch.bool))


def test_paper_configuration_matches_the_authors_size():
    net = build_network("paper")
    n = count_parameters(net)
    assert abs(n - 43.66e6) / 43.66e6 < 0.10, n
    assert net.encoder.stages[-1][-1].body[-2].out_channels == 1280  # 320 x 4
    assert net.size_multiple == (16, 32, 32)  # 80x160x160 patches give 5x5x5 bottlenecks


def test_lite_is_much_smaller_than_paper():
    assert count_parameters(build_network("lite")) < count_parameters(build_network("paper")) / 20


def test_lite_small_has_about_a_quarter_of_lite_and_runs_every_subset():
    small = build_network("lite-small")
    ratio = count_parameters(small) / count_parameters(build_network("lite"))
    assert 0.2 < ratio < 0.35, ratio
    small.eval()
    with torch.no_grad():
        out = small(torch.randn(1, 4, SIZE, SIZE, SIZE), torch.tensor([False, True, False, True]))
    assert out.logits.shape == (1, 3, SIZE, SIZE, SIZE)


def test_command_line_network_names_are_the_configurations():
    """The parsers list the names without importing torch; they must match the real table."""
    from lckd.model.network import CONFIGS
    from lckd.research.training.presets import NETWORK_NAMES

    assert sorted(NETWORK_NAMES) == sorted(CONFIGS)


@pytest.mark.parametrize("cin,cout,k,stride,pad,dil", [(16, 16, 3, 1, 1, 1), (16, 24, 3, 2, 1, 1),
                                                       (16, 24, 1, 2, 0, 1), (8, 8, 3, 1, 2, 2)])
def test_inference_convolution_matches_pytorch(cin, cout, k, stride, pad, dil):
    """The oneDNN shortcut used for CPU inference computes what F.conv3d computes."""
    import torch.nn.functional as F

    from lckd.model.network import conv3d

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, cin, 17, 18, 19, generator=gen)
    w, b = torch.randn(cout, cin, k, k, k, generator=gen), torch.randn(cout, generator=gen)
    with torch.inference_mode():
        fast = conv3d(x, w, b, (stride,) * 3, (pad,) * 3, (dil,) * 3, 1)
    ref = F.conv3d(x, w, b, stride, pad, dil)
    assert fast.shape == ref.shape
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-3)
