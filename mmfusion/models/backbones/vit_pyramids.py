"""Pyramids for plain ViTs: every block gives a map at the patch stride, and a pyramid turns the maps of the blocks
it reads into one map per output stride.

Shared by :class:`~mmfusion.models.backbones.DINOv3ViT` and :class:`~mmfusion.models.backbones.HFBackbone` (CLIP,
SigLIP, SAM, DINOv2, ... any encoder whose blocks all run at one stride). A pyramid is built from the ViT's width,
depth and patch size, states the blocks it reads in ``taps``, and maps ``{block index: (B, C, H/p, W/p)}`` computed
on an input padded to ``padded_hw`` to one map per output stride (None for the skipped ones):

- ``'paper'``: the reference implementation of `Metric-Guided Feature Fusion of Visual Foundation Models for
  Segmentation Tasks <https://arxiv.org/abs/2605.16864>`_ (SPEC §5). The last block's map, resampled (nearest) to
  every stride, then a new 1x1 conv per level to ``128 * s / 4`` channels (128/256/512/1024 for OS 4/8/16/32).
  ``project=False`` drops the convs (a parameter-free pyramid of the raw features, e.g. for a frozen auxiliary).
- ``'simple_fpn'``: ViTDet's simple feature pyramid (`Li et al., 2022 <https://arxiv.org/abs/2203.16527>`_) from
  the last block: transposed convs for strides below the patch size, identity at it, max-pooling above; then
  1x1 conv + LayerNorm + 3x3 conv + LayerNorm per level.
- ``'multilayer'``: one block's map per level, resized (bilinear) to its stride, optionally projected by a 1x1 conv.

Example:
    >>> import torch
    >>> from mmfusion.models.backbones.vit_pyramids import build_pyramid
    >>> pyramid = build_pyramid('paper', embed_dim=768, num_layers=12, patch_size=16, out_strides=(4, 8, 16, 32))
    >>> maps = {11: torch.randn(1, 768, 32, 64)}  # block 11's map of a 512 x 1024 input
    >>> [tuple(o.shape) for o in pyramid(maps, (512, 1024))]
    [(1, 128, 128, 256), (1, 256, 64, 128), (1, 512, 32, 64), (1, 1024, 16, 32)]
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map (ViTDet's norm in the simple feature pyramid)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _level_sizes(padded_hw: Tuple[int, int], strides: Sequence[int]) -> List[Tuple[int, int]]:
    return [(math.ceil(padded_hw[0] / s), math.ceil(padded_hw[1] / s)) for s in strides]


def _channels_per_level(channels, strides: Sequence[int], default) -> Tuple[int, ...]:
    if channels is None:
        return tuple(default(s) for s in strides)
    if isinstance(channels, int):
        return (channels, ) * len(strides)
    channels = tuple(int(c) for c in channels)
    if len(channels) != len(strides):
        raise ValueError(f'channels {channels} must have one entry per stride {tuple(strides)}')
    return channels


class PaperPyramid(nn.Module):
    """SPEC §5: the last block's normed map, resampled (nearest) to each stride, then a 1x1 conv per level.

    Args:
        embed_dim (int): ViT width.
        num_layers (int): ViT depth (the map is taken after the last block).
        out_strides (Sequence[int]): Output strides.
        channels (int | Sequence[int], optional): Channels per level. Defaults to None, i.e. ``128 * s / 4`` as in
            the reference (128/256/512/1024 for OS 4/8/16/32).
        project (bool): Apply the 1x1 convs. False gives the raw ViT features at every stride (``embed_dim``
            channels, no parameters). Defaults to True.
        skip (Sequence[int]): Strides not computed (None in the output, no parameters). Defaults to ().
    """

    def __init__(self, embed_dim: int, num_layers: int, out_strides: Sequence[int], channels=None,
                 project: bool = True, skip: Sequence[int] = ()):
        super().__init__()
        self.out_strides = tuple(out_strides)
        self.skip = frozenset(skip)
        self.taps = (num_layers - 1, )
        if project:
            self.out_channels = _channels_per_level(channels, out_strides, lambda s: 128 * s // 4)
            self.convs = nn.ModuleList(
                nn.Identity() if s in self.skip else nn.Conv2d(embed_dim, c, 1)
                for s, c in zip(self.out_strides, self.out_channels))
        else:
            if channels is not None:
                raise ValueError('channels cannot be set when project=False')
            self.out_channels = (embed_dim, ) * len(out_strides)
            self.convs = None

    def forward(self, maps: Dict[int, Tensor], padded_hw: Tuple[int, int]) -> List[Tensor]:
        feat = maps[self.taps[0]]
        outs = []
        for i, size in enumerate(_level_sizes(padded_hw, self.out_strides)):
            if self.out_strides[i] in self.skip:
                outs.append(None)
                continue
            level = feat if tuple(feat.shape[-2:]) == size else F.interpolate(feat, size=size, mode='nearest')
            outs.append(self.convs[i](level) if self.convs is not None else level)
        return outs


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid (Li et al., 2022) from the last block's normed map.

    Strides below the patch size are reached by stride-2 transposed convs (LayerNorm + GELU between two of them),
    the patch stride is the identity, larger strides are max-pooled (``ceil_mode`` so odd grids keep their last
    row). Every level then gets a 1x1 conv + LayerNorm + 3x3 conv + LayerNorm.

    Args:
        embed_dim (int): ViT width.
        num_layers (int): ViT depth.
        patch_size (int): ViT patch size (the stride of the tokens).
        out_strides (Sequence[int]): Output strides; each a power-of-two multiple or fraction of ``patch_size``.
        channels (int | Sequence[int], optional): Channels per level. Defaults to None, i.e. 256 (ViTDet).
        skip (Sequence[int]): Strides not computed (None in the output, no parameters). Defaults to ().
    """

    def __init__(self, embed_dim: int, num_layers: int, patch_size: int, out_strides: Sequence[int], channels=None,
                 skip: Sequence[int] = ()):
        super().__init__()
        self.out_strides = tuple(out_strides)
        self.skip = frozenset(skip)
        self.taps = (num_layers - 1, )
        self.out_channels = _channels_per_level(channels, out_strides, lambda s: 256)
        self.scales = nn.ModuleList()
        for stride, out_c in zip(out_strides, self.out_channels):
            ratio = math.log2(stride / patch_size)
            if ratio != int(ratio):
                raise ValueError(f'simple_fpn needs strides that are power-of-two multiples of the patch size '
                                 f'{patch_size}, got {stride}')
            layers: List[nn.Module] = []
            dim = embed_dim
            for k in range(max(0, -int(ratio))):
                if k:
                    layers += [LayerNorm2d(dim), nn.GELU()]
                layers.append(nn.ConvTranspose2d(dim, dim // 2, 2, stride=2))
                dim //= 2
            if ratio > 0:
                layers.append(nn.MaxPool2d(2**int(ratio), ceil_mode=True))
            layers += [
                nn.Conv2d(dim, out_c, 1, bias=False), LayerNorm2d(out_c),
                nn.Conv2d(out_c, out_c, 3, padding=1, bias=False), LayerNorm2d(out_c)
            ]
            self.scales.append(nn.Identity() if stride in self.skip else nn.Sequential(*layers))

    def forward(self, maps: Dict[int, Tensor], padded_hw: Tuple[int, int]) -> List[Optional[Tensor]]:
        feat = maps[self.taps[0]]
        return [None if s in self.skip else scale(feat) for s, scale in zip(self.out_strides, self.scales)]


class MultiLayerPyramid(nn.Module):
    """One block output per level, normed by the final norm, resized (bilinear) to the level's stride.

    Args:
        embed_dim (int): ViT width.
        num_layers (int): ViT depth.
        out_strides (Sequence[int]): Output strides.
        layers (Sequence[int], optional): Block index (0-based) per level, finest stride first. Defaults to None,
            i.e. evenly spaced ending at the last block (2, 5, 8, 11 for 12 blocks and 4 levels).
        channels (int | Sequence[int], optional): 1x1-conv projection per level. Defaults to None (no projection,
            ``embed_dim`` channels, no parameters).
        skip (Sequence[int]): Strides not computed (None in the output, no parameters; blocks read only by them
            are not run). Defaults to ().
    """

    def __init__(self, embed_dim: int, num_layers: int, out_strides: Sequence[int], layers=None, channels=None,
                 skip: Sequence[int] = ()):
        super().__init__()
        self.out_strides = tuple(out_strides)
        self.skip = frozenset(skip)
        n = len(out_strides)
        if layers is None:
            layers = [math.ceil((i + 1) * num_layers / n) - 1 for i in range(n)]
        self.level_taps = tuple(int(i) for i in layers)
        if len(self.level_taps) != n or not all(0 <= i < num_layers for i in self.level_taps):
            raise ValueError(f'layers {tuple(layers)} must give one block index in [0, {num_layers}) per stride '
                             f'{tuple(out_strides)}')
        self.taps = tuple(t for t, s in zip(self.level_taps, self.out_strides) if s not in self.skip)
        if channels is None:
            self.out_channels = (embed_dim, ) * n
            self.convs = None
        else:
            self.out_channels = _channels_per_level(channels, out_strides, None)
            self.convs = nn.ModuleList(
                nn.Identity() if s in self.skip else nn.Conv2d(embed_dim, c, 1)
                for s, c in zip(self.out_strides, self.out_channels))

    def forward(self, maps: Dict[int, Tensor], padded_hw: Tuple[int, int]) -> List[Optional[Tensor]]:
        outs = []
        for i, (tap, size) in enumerate(zip(self.level_taps, _level_sizes(padded_hw, self.out_strides))):
            if self.out_strides[i] in self.skip:
                outs.append(None)
                continue
            feat = maps[tap]
            if tuple(feat.shape[-2:]) != size:
                feat = F.interpolate(feat, size=size, mode='bilinear', align_corners=False)
            outs.append(self.convs[i](feat) if self.convs is not None else feat)
        return outs


PYRAMIDS = {'paper': PaperPyramid, 'simple_fpn': SimpleFeaturePyramid, 'multilayer': MultiLayerPyramid}


def build_pyramid(pyramid: Union[str, dict], embed_dim: int, num_layers: int, patch_size: int,
                  out_strides: Sequence[int], skip: Sequence[int] = ()) -> nn.Module:
    """A pyramid of :data:`PYRAMIDS` by name, or from a dict with ``type=`` and the pyramid's own options.

    Args:
        pyramid (str | dict): ``'paper'``, ``'simple_fpn'``, ``'multilayer'``, or e.g.
            ``dict(type='paper', project=False)``.
        embed_dim (int): ViT width.
        num_layers (int): ViT depth.
        patch_size (int): Stride of the ViT's tokens.
        out_strides (Sequence[int]): Output strides.
        skip (Sequence[int]): Strides not computed (None in the output, no parameters). Defaults to ().

    Returns:
        nn.Module: The pyramid, with ``taps``, ``out_strides`` and ``out_channels``.
    """
    cfg = dict(type=pyramid) if isinstance(pyramid, str) else dict(pyramid)
    kind = cfg.pop('type', None)
    if kind not in PYRAMIDS:
        raise KeyError(f'Unknown pyramid {kind!r}; choose one of {sorted(PYRAMIDS)}')
    common = dict(embed_dim=embed_dim, num_layers=num_layers, out_strides=tuple(out_strides), skip=frozenset(skip))
    if kind == 'simple_fpn':
        common['patch_size'] = patch_size
    return PYRAMIDS[kind](**common, **cfg)
