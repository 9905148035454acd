"""The LCKD network: one shared encoder applied per present modality, a decoder over all slots.

Missing-modality rule (our choice, documented in README "Method"): only the scans that are
present are encoded, so the cost grows with the number of scans. Every missing modality's
slot, at the bottleneck and at every skip level, is filled with the mean of the present
modalities' features at that level. The authors' code encodes a zero image for a missing
scan and fills only the bottleneck; filling the skips from the present scans too means the
decoder never sees features of an empty image, and nothing is computed for absent scans.

Two configurations share this code: ``paper`` (the authors' 3D ResNet-50 + ASPP design,
about 43.7 M parameters) and ``lite`` (the CPU default).
"""
from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..base.modalities import MODALITIES

Triple = tuple  # (d, h, w) integers


@dataclass(frozen=True)
class NetConfig:
    """Architecture of an LCKD network (stored verbatim in the model card)."""

    name: str
    modalities: tuple = MODALITIES
    stem_channels: int = 64
    stem_kernel: int = 7
    stem_stride: Triple = (1, 2, 2)
    stem_pool: bool = True            # 3x3x3 max-pool (stride 2) after the stem, as ResNet does
    block: str = "bottleneck"         # "bottleneck" (x4 expansion) or "basic"
    stage_blocks: tuple = (3, 4, 6, 3)
    stage_widths: tuple = (64, 128, 256, 320)
    stage_strides: tuple = (1, 2, 2, 2)
    feature_channels: int = 256       # per-modality bottleneck channels (distillation space)
    aspp_dilations: tuple = (1, 2, 4, 8)
    decoder_widths: tuple = (256, 128, 64, 32)
    weight_std: bool = True
    out_channels: int = 3             # sigmoid regions ET, TC, WT
    negative_slope: float = 0.01
    bottleneck_head: bool = False     # training-only region head on the fused bottleneck (see LCKDNet)

    @property
    def expansion(self) -> int:
        return 4 if self.block == "bottleneck" else 1

    def to_dict(self) -> dict:
        """JSON-friendly form (tuples become lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> NetConfig:
        """Inverse of `to_dict`; unknown keys are an error so a mismatched card is refused."""
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown architecture fields: {sorted(unknown)}")
        values: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**values)


PAPER = NetConfig(name="paper")

# The CPU default. Most of the paper model's cost is at full and half resolution; `lite`
# starts with a stride-2 stem and finishes with a trilinear x2 upsampling of the logits (as
# the paper model does in-plane), and keeps few channels per level. Its last stage keeps
# stride 1, so the bottleneck is at 1/16 like the paper's (4^3 voxels for a 64^3 training
# patch): at 1/32 a 64^3 patch leaves 2^3 bottleneck voxels, instance norm makes every
# modality's feature nearly the same there, and distillation has nothing to act on.
LITE = NetConfig(
    name="lite",
    stem_channels=16,
    stem_kernel=3,
    stem_stride=(2, 2, 2),
    stem_pool=False,
    block="basic",
    stage_blocks=(1, 1, 1, 1),
    stage_widths=(24, 32, 48, 64),
    stage_strides=(2, 2, 2, 1),
    feature_channels=48,
    aspp_dilations=(1, 2, 3),
    decoder_widths=(48, 32, 24, 16),
    weight_std=True,
)

# Half of lite's channels everywhere (about a quarter of its parameters): the capacity
# table's point below the default (README "Capacity against speed"), cross-validated with
# the same recipe to show what capacity buys on 18 training cases.
LITE_SMALL = replace(
    LITE,
    name="lite-small",
    stem_channels=8,
    stage_widths=(12, 16, 24, 32),
    feature_channels=24,
    decoder_widths=(24, 16, 12, 8),
)

# Lite's resolution plan with wider deep levels (about 3.8x the parameters): capacity where it
# costs little time. Parameters grow with width squared at the 1/8 and 1/16 levels, where a
# window has 512 and 64 voxels per channel; the full- and half-resolution layers, which hold
# most of the time, keep lite's widths. A training step costs about 1.3x lite's on one core.
LITE_WIDE = replace(
    LITE,
    name="lite-wide",
    stage_widths=(24, 48, 96, 160),
    feature_channels=96,
    decoder_widths=(96, 48, 24, 16),
)

CONFIGS = {"paper": PAPER, "lite": LITE, "lite-small": LITE_SMALL, "lite-wide": LITE_WIDE}


def conv3d(x: torch.Tensor, w: torch.Tensor, bias, stride, padding, dilation, groups) -> torch.Tensor:
    """F.conv3d, but CPU float32 inference goes straight to oneDNN (mkldnn).

    For a single window (batch 1) PyTorch's CPU dispatch picks its generic im2col kernel,
    which on a 16-channel 32^3 map is about 15x slower than oneDNN (25 ms vs 1.7 ms, 2
    threads); the decoder's full-resolution blocks spent most of the sliding window there.
    Training (autograd) keeps F.conv3d.
    """
    if (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and torch.backends.mkldnn.is_available() and isinstance(padding, tuple)):
        return torch.mkldnn_convolution(x.contiguous(), w.contiguous(), bias, padding, stride, dilation, groups)
    return F.conv3d(x, w, bias, stride, padding, dilation, groups)


class WSConv3d(nn.Conv3d):
    """3D convolution with weight standardisation (zero mean, unit variance per output filter).

    In eval mode without autograd the standardised weight is computed once and reused:
    recomputing every filter's statistics on every sliding window was about a quarter of the
    network's time at small patches. The cache is keyed on the weight tensor's identity,
    storage, dtype, device and autograd version counter, so any in-place change (optimizer
    step, ``load_state_dict``, ``.to()``, ``weight.data = ...``) recomputes it; ``train()``
    and loading a state dict also drop it. It costs one extra copy of the weights.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cache_standardised = True   # False: recompute every call (tests compare both)
        self._ws_cache: tuple | None = None

    def _standardise(self, w: torch.Tensor) -> torch.Tensor:
        flat = w.flatten(1)
        mean = flat.mean(1).view(-1, 1, 1, 1, 1)
        std = torch.sqrt(flat.var(1, unbiased=False) + 1e-10).view(-1, 1, 1, 1, 1)
        return (w - mean) / std

    def _cache_key(self, w: torch.Tensor) -> tuple | None:
        try:
            version = w._version
        except RuntimeError:      # an inference tensor has no version counter: never cache
            return None
        return (w.data_ptr(), w.dtype, w.device, version)

    def standardised_weight(self) -> torch.Tensor:
        """The standardised weight; cached in eval mode when no gradient can flow to it."""
        w = self.weight
        if self.training or not self.cache_standardised or (torch.is_grad_enabled() and w.requires_grad):
            self._ws_cache = None
            return self._standardise(w)
        key = self._cache_key(w)
        if key is None:
            return self._standardise(w)
        cached = self._ws_cache
        # a weak reference, not id(): a new weight tensor may reuse a freed one's id
        if cached is None or cached[0]() is not w or cached[1] != key:
            with torch.no_grad():
                cached = self._ws_cache = (weakref.ref(w), key, self._standardise(w))
        return cached[2]

    def train(self, mode: bool = True) -> WSConv3d:
        self._ws_cache = None
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._ws_cache = None
        super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        return {**state, "_ws_cache": None}    # a weak reference cannot be pickled or copied

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv3d(x, self.standardised_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)


def _conv(cfg: NetConfig, cin: int, cout: int, k: int = 3, stride=1, dilation: int = 1,
          bias: bool = False) -> nn.Conv3d:
    cls = WSConv3d if cfg.weight_std else nn.Conv3d
    pad = dilation * (k // 2)
    return cls(cin, cout, k, stride=stride, padding=pad, dilation=dilation, bias=bias)


def _norm_act(cfg: NetConfig, c: int) -> nn.Sequential:
    return nn.Sequential(nn.InstanceNorm3d(c, affine=True), nn.LeakyReLU(cfg.negative_slope, inplace=True))


def _conv_norm_act(cfg: NetConfig, cin: int, cout: int, k: int = 3, stride=1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(_conv(cfg, cin, cout, k, stride, dilation), *_norm_act(cfg, cout))


class BasicBlock(nn.Module):
    """Two 3x3x3 convolutions with a residual connection (projection when the shape changes)."""

    def __init__(self, cfg: NetConfig, cin: int, width: int, stride: int = 1):
        super().__init__()
        cout = width
        self.conv1 = _conv_norm_act(cfg, cin, width, 3, stride)
        self.conv2 = _conv(cfg, width, cout, 3)
        self.norm2 = nn.InstanceNorm3d(cout, affine=True)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(_conv(cfg, cin, cout, 1, stride), nn.InstanceNorm3d(cout, affine=True))
        self.act = nn.LeakyReLU(cfg.negative_slope, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = x if self.short is None else self.short(x)
        return self.act(self.norm2(self.conv2(self.conv1(x))) + res)


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 reduce, 3x3x3 (strided), 1x1 expand x4, residual."""

    def __init__(self, cfg: NetConfig, cin: int, width: int, stride: int = 1):
        super().__init__()
        cout = width * 4
        self.body = nn.Sequential(
            _conv_norm_act(cfg, cin, width, 1),
            _conv_norm_act(cfg, width, width, 3, stride),
            _conv(cfg, width, cout, 1),
            nn.InstanceNorm3d(cout, affine=True),
        )
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(_conv(cfg, cin, cout, 1, stride), nn.InstanceNorm3d(cout, affine=True))
        self.act = nn.LeakyReLU(cfg.negative_slope, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = x if self.short is None else self.short(x)
        return self.act(self.body(x) + res)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: dilated branches plus a global-pool branch.

    The global branch has no instance norm: normalising a 1x1x1 map is undefined, which is
    what forced the authors to patch PyTorch for batch size 1.
    """

    def __init__(self, cfg: NetConfig, channels: int):
        super().__init__()
        self.branches = nn.ModuleList(
            _conv_norm_act(cfg, channels, channels, 1 if d == 1 else 3, 1, d) for d in cfg.aspp_dilations
        )
        self.global_branch = nn.Sequential(nn.Conv3d(channels, channels, 1, bias=True),
                                           nn.LeakyReLU(cfg.negative_slope, inplace=True))
        self.project = _conv_norm_act(cfg, channels * (len(cfg.aspp_dilations) + 1), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.global_branch(x.mean(dim=(2, 3, 4), keepdim=True)).expand_as(x)
        return self.project(torch.cat([b(x) for b in self.branches] + [g], dim=1))


class Encoder(nn.Module):
    """Shared single-modality encoder: returns skip features (fine to coarse) and the bottleneck."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.stem = _conv_norm_act(cfg, 1, cfg.stem_channels, cfg.stem_kernel, cfg.stem_stride)
        self.pool = nn.MaxPool3d(3, 2, 1) if cfg.stem_pool else None
        block = Bottleneck if cfg.block == "bottleneck" else BasicBlock
        stages, cin = [], cfg.stem_channels
        for n, width, stride in zip(cfg.stage_blocks, cfg.stage_widths, cfg.stage_strides):
            blocks = []
            for i in range(n):
                blocks.append(block(cfg, cin, width, stride if i == 0 else 1))
                cin = width * cfg.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.reduce = _conv_norm_act(cfg, cin, cfg.feature_channels, 1)
        self.aspp = ASPP(cfg, cfg.feature_channels)
        self.skip_channels = [cfg.stem_channels] + [w * cfg.expansion for w in cfg.stage_widths[:-1]]

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = self.stem(x)
        skips = [x]
        if self.pool is not None:
            x = self.pool(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i < len(self.stages) - 1:
                skips.append(x)
        return skips, self.aspp(self.reduce(x))


class Decoder(nn.Module):
    """Transposed-conv upsampling over the concatenated modality slots, with squeezed skips."""

    def __init__(self, cfg: NetConfig, skip_channels: Sequence[int], scales: Sequence[int]):
        super().__init__()
        m = len(cfg.modalities)
        cin = cfg.feature_channels * m
        self.ups, self.squeezes, self.blocks = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        # decoder stage i upsamples to skip level len(skips)-1-i
        for width, skip_c, scale in zip(cfg.decoder_widths, reversed(skip_channels), reversed(scales)):
            self.ups.append(nn.ConvTranspose3d(cin, width, scale, stride=scale, bias=False))
            self.squeezes.append(_conv_norm_act(cfg, skip_c * m, width, 1))
            self.blocks.append(BasicBlock(cfg, width, width))
            cin = width
        self.head = nn.Conv3d(cin, cfg.out_channels, 1)

    def forward(self, bottleneck: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        x = bottleneck
        for up, squeeze, block, skip in zip(self.ups, self.squeezes, self.blocks, reversed(skips)):
            x = block(up(x) + squeeze(skip))
        return self.head(x)


class LCKDOutput(NamedTuple):
    """Network output: region logits and the per-modality bottleneck features."""

    logits: torch.Tensor      # (B, 3, D, H, W): ET, TC, WT (apply sigmoid)
    features: torch.Tensor    # (B, M, C, d, h, w): bottleneck of each present modality (zeros where absent)
    present: torch.Tensor     # (B, M) bool
    bottleneck_logits: torch.Tensor | None = None  # (B, 3, d, h, w): training with bottleneck_head only


def fill_missing(feats: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scatter encodings of present (sample, modality) pairs into (B, M, ...) slots.

    Returns (filled, scattered): `scattered` holds zeros in missing slots; in `filled`
    each missing slot holds the mean of that sample's present modalities.
    """
    b, m = present.shape
    flat = present.reshape(-1)
    scattered = feats.new_zeros((b * m,) + tuple(feats.shape[1:]))
    scattered = scattered.index_copy(0, flat.nonzero().squeeze(1), feats)
    scattered = scattered.view((b, m) + tuple(feats.shape[1:]))
    mask = present.view((b, m) + (1,) * (feats.dim() - 1))
    mean = scattered.sum(1, keepdim=True) / mask.sum(1, keepdim=True).to(feats.dtype)
    return torch.where(mask, scattered, mean), scattered


class LCKDNet(nn.Module):
    """LCKD segmentation network for any non-empty subset of its modalities.

    With ``bottleneck_head`` a 1x1x1 convolution predicts the regions from the fused
    bottleneck, in training mode only (deep supervision of the distillation space). Without
    it the skips alone can carry the segmentation, and distillation then has a trivial
    minimum: a bottleneck that no longer depends on the modality (README "Method notes").
    """

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        pool = 2 if cfg.stem_pool else 1
        scales = [s * (pool if i == 0 else 1) for i, s in enumerate(cfg.stage_strides)]
        self.decoder = Decoder(cfg, self.encoder.skip_channels, scales)
        self.bottleneck_head = (nn.Conv3d(cfg.feature_channels * len(cfg.modalities), cfg.out_channels, 1)
                                if cfg.bottleneck_head else None)
        self.stem_stride = tuple(cfg.stem_stride)
        total = 1
        for s in scales:
            total *= s
        # input sizes must divide by this (per axis); forward pads to it
        self.size_multiple = tuple(total * s for s in self.stem_stride)

    @property
    def modalities(self) -> tuple:
        return tuple(self.cfg.modalities)

    def forward(self, x: torch.Tensor, present: torch.Tensor | None = None) -> LCKDOutput:
        """x: (B, M, D, H, W) in the model's modality order; present: (B, M) bool or (M,).

        Absent channels are never read. Every sample needs at least one present modality.
        """
        b, m = x.shape[:2]
        if m != len(self.modalities):
            raise ValueError(f"expected {len(self.modalities)} modality channels, got {m}")
        if present is None:
            present = torch.ones(b, m, dtype=torch.bool, device=x.device)
        present = present.to(device=x.device, dtype=torch.bool)
        if present.dim() == 1:
            present = present.unsqueeze(0).expand(b, m)
        if not bool(present.any(1).all()):
            raise ValueError("every sample needs at least one present modality")
        size = tuple(x.shape[2:])
        # pad to a multiple of the total stride, and to at least two bottleneck voxels per
        # axis (instance norm is undefined on a single voxel)
        pads = [max((-n) % k, 2 * k - n) for n, k in zip(size, self.size_multiple)]
        if any(pads):
            x = F.pad(x, (0, pads[2], 0, pads[1], 0, pads[0]))

        singles = x[present].unsqueeze(1)            # (P, 1, D, H, W): present scans only
        skips, bottleneck = self.encoder(singles)
        filled_skips = [fill_missing(s, present)[0].flatten(1, 2) for s in skips]
        filled, scattered = fill_missing(bottleneck, present)
        fused = filled.flatten(1, 2)
        logits = self.decoder(fused, filled_skips)
        coarse = self.bottleneck_head(fused) if self.bottleneck_head is not None and self.training else None
        if self.stem_stride != (1, 1, 1):
            logits = F.interpolate(logits, scale_factor=self.stem_stride, mode="trilinear", align_corners=False)
        if any(pads):
            logits = logits[:, :, : size[0], : size[1], : size[2]]
        return LCKDOutput(logits, scattered, present, coarse)


def build_network(config: str | NetConfig | dict, **changes) -> LCKDNet:
    """Build a network from a config name ('paper', 'lite'), a NetConfig or its dict form.

    `changes` replace fields of the configuration (e.g. ``bottleneck_head=True``).
    """
    if isinstance(config, str):
        if config not in CONFIGS:
            raise ValueError(f"unknown network configuration '{config}': use one of {sorted(CONFIGS)}")
        config = CONFIGS[config]
    elif isinstance(config, dict):
        config = NetConfig.from_dict(config)
    return LCKDNet(replace(config, **changes) if changes else config)


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
