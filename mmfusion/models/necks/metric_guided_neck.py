"""The master/auxiliary fusion of SPEC §6: the auxiliary's map replaces the master's at the injection stride(s)."""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from torch import Tensor

from mmfusion.metrics import load_profile
from mmfusion.registry import MODELS
from mmfusion.utils import OptConfigType, OptMultiConfig

InjectStride = Union[int, Sequence[int], str]

_ALIGN_MODES = ('mean_pad', 'conv')
# Default norm of align='conv' (never mutated: _build_norm copies it).
_GN32 = dict(type='GN', num_groups=32)


def _int_tuple(value: Any, name: str) -> Tuple[int, ...]:
    """``value`` as a tuple of ints; a bare int becomes a 1-tuple."""
    if isinstance(value, int):
        return (value, )
    try:
        return tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f'{name} must be an int or a sequence of ints, got {value!r}') from None


def inject_strides_from_profile(profile: str, auxiliary: Optional[str] = None) -> Tuple[int, ...]:
    """The injection stride(s) s* recorded in a profile JSON written by ``tools/analysis/profile_vfm.py``.

    The JSON's ``selection.inject_stride`` wins when present (an int or a list); otherwise s* is the stride where the
    auxiliary's EF peaks (SPEC §4: s* = argmax_s EF_aux(s); a tie goes to the finer stride).

    Args:
        profile (str): Path to the profile JSON (schema: ``{"encoders": {name: {"strides": [...], "EF": [...],
            ...}}, "selection": {"master", "auxiliary", "inject_stride"}, "meta": {}}``).
        auxiliary (str, optional): Encoder whose EF decides s* when the JSON names no ``inject_stride``.
            Defaults to None, i.e. ``selection.auxiliary``.

    Returns:
        tuple[int]: The injection stride(s).
    """
    data = load_profile(profile)
    selection = data['selection'] or {}
    if selection.get('inject_stride') is not None:
        return _int_tuple(selection['inject_stride'], f'selection.inject_stride in {profile}')
    name = auxiliary or selection.get('auxiliary')
    if name is None:
        raise ValueError(f'{profile} names neither selection.inject_stride nor selection.auxiliary; re-run '
                         'profile_vfm with a selection, or give inject_stride as an int')
    if name not in data['profiles']:
        raise KeyError(f'auxiliary {name!r} is not profiled in {profile} (encoders: {sorted(data["profiles"])})')
    ef = {s: m['EF'] for s, m in data['profiles'][name].items() if 'EF' in m}
    if not ef:
        raise ValueError(f'{profile}: encoders.{name} has no "EF" values to choose the injection stride from')
    return (max(sorted(ef), key=lambda s: ef[s]), )  # max keeps the first maximum: ties go to the finer stride


def mean_pad_channels(x: Tensor, channels: int) -> Tensor:
    """Parameter-free channel alignment of the reference implementation (SPEC §6).

    With fewer channels than wanted, the map is concatenated with copies of its per-pixel channel mean; with more, it
    keeps ``channels`` evenly spaced channels (indices ``floor(i * C / channels)``, starting at 0).

    Args:
        x (Tensor): Feature map of shape (B, C, H, W).
        channels (int): Wanted channel count.

    Returns:
        Tensor: Map of shape (B, channels, H, W).
    """
    c = x.shape[1]
    if c == channels:
        return x
    if c < channels:
        mean = x.mean(dim=1, keepdim=True)
        return torch.cat([x, mean.expand(-1, channels - c, -1, -1)], dim=1)
    index = torch.div(torch.arange(channels, device=x.device) * c, channels, rounding_mode='floor')
    return x.index_select(1, index)


def _build_norm(norm_cfg: OptConfigType, channels: int) -> Optional[nn.Module]:
    """A norm layer from a small set of types; kept local so the neck needs no compiled mmcv."""
    if norm_cfg is None:
        return None
    cfg = dict(norm_cfg)
    kind = cfg.pop('type')
    cfg.pop('requires_grad', None)
    if kind == 'GN':
        groups = cfg.pop('num_groups', 32)
        if channels % groups:
            raise ValueError(f"norm_cfg GN(num_groups={groups}) cannot normalise {channels} master channels; pick "
                             f"num_groups dividing {channels} or norm_cfg=dict(type='BN')")
        return nn.GroupNorm(groups, channels, **cfg)
    if kind in ('BN', 'BN2d'):
        return nn.BatchNorm2d(channels, **cfg)
    if kind == 'SyncBN':
        return nn.SyncBatchNorm(channels, **cfg)
    raise ValueError(f"norm_cfg type {kind!r} is not supported; use 'GN', 'BN', 'SyncBN' or norm_cfg=None")


@MODELS.register_module()
class MetricGuidedNeck(BaseModule):
    """Metric-guided master/auxiliary fusion neck.

    This is an implementation of the fusion in `Metric-Guided Feature Fusion of Visual Foundation Models for
    Segmentation Tasks <https://arxiv.org/abs/2605.16864>`_: the output pyramid is the master's, except at the
    injection stride s* where it is the (channel-aligned) auxiliary's map,
    F(s) = F_aux(s) if s = s* else F_master(s). s* is the auxiliary's Edge-Fidelity peak in an offline profile.

    The input is what :class:`~mmfusion.models.backbones.MasterAuxBackbone` returns: ``dict(master=..., auxiliary=...)``
    (or an object with those attributes, or a ``(master, auxiliary)`` pair), each a sequence of maps ordered by
    stride. The master's map at s* is computed by the master and dropped, so under DDP the master's parameters that
    feed only that level get no gradient: set ``find_unused_parameters=True`` in ``model_wrapper_cfg``.

    Args:
        master_channels (Sequence[int]): Channels of the master's maps, one per entry of ``strides``.
        aux_channels (Sequence[int]): Channels of the auxiliary's maps, one per entry of ``aux_strides``.
        strides (Sequence[int]): Output strides of the master's pyramid and of the output, increasing.
            Default: (4, 8, 16, 32).
        aux_strides (Sequence[int], optional): Strides the auxiliary provides, increasing. Default: None, i.e. the
            same as ``strides``.
        inject_stride (int | Sequence[int] | str): Stride(s) where the auxiliary replaces the master. An int is the
            paper's setting; a list injects at several strides (beyond the paper); ``'auto'`` reads s* from
            ``profile``. Default: 16.
        align (str): Channel alignment of the injected map: ``'mean_pad'`` (the paper's, parameter-free; see
            :func:`mean_pad_channels`) or ``'conv'`` (a learned 1x1 conv followed by ``norm_cfg``).
            Default: 'mean_pad'.
        profile (str, optional): Profile JSON written by ``tools/analysis/profile_vfm.py``; only read, and then
            required, when ``inject_stride='auto'``. Default: None.
        norm_cfg (:obj:`ConfigDict` or dict, optional): Norm after the 1x1 conv of ``align='conv'`` ('GN', 'BN',
            'SyncBN' or None). Default: dict(type='GN', num_groups=32).
        init_cfg (:obj:`ConfigDict` or dict or list, optional): Initialization config. Default: None.

    Examples:
        >>> import torch
        >>> neck = MetricGuidedNeck(master_channels=(8, 16, 32, 64), aux_channels=(12, ), aux_strides=(16, ))
        >>> master = [torch.rand(1, c, 64 // s, 64 // s) for c, s in zip((8, 16, 32, 64), (4, 8, 16, 32))]
        >>> aux = [torch.rand(1, 12, 4, 4)]
        >>> outs = neck(dict(master=master, auxiliary=aux))
        >>> [tuple(o.shape) for o in outs]
        [(1, 8, 16, 16), (1, 16, 8, 8), (1, 32, 4, 4), (1, 64, 2, 2)]
        >>> torch.equal(outs[2][:, :12], aux[0]), outs[0] is master[0]
        (True, True)
    """

    def __init__(self,
                 master_channels: Sequence[int],
                 aux_channels: Sequence[int],
                 strides: Sequence[int] = (4, 8, 16, 32),
                 aux_strides: Optional[Sequence[int]] = None,
                 inject_stride: InjectStride = 16,
                 align: str = 'mean_pad',
                 profile: Optional[str] = None,
                 norm_cfg: OptConfigType = _GN32,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.strides = _check_strides(strides, 'strides')
        self.aux_strides = self.strides if aux_strides is None else _check_strides(aux_strides, 'aux_strides')
        self.master_channels = _int_tuple(master_channels, 'master_channels')
        self.aux_channels = _int_tuple(aux_channels, 'aux_channels')
        if len(self.master_channels) != len(self.strides):
            raise ValueError(f'master_channels={self.master_channels} has {len(self.master_channels)} entries but '
                             f'strides={self.strides} has {len(self.strides)}; give one channel count per stride')
        if len(self.aux_channels) != len(self.aux_strides):
            raise ValueError(f'aux_channels={self.aux_channels} has {len(self.aux_channels)} entries but '
                             f'aux_strides={self.aux_strides} has {len(self.aux_strides)}; give one channel count '
                             'per auxiliary stride (aux_strides defaults to strides)')
        self.inject_strides = self._resolve_inject(inject_stride, profile)
        if align not in _ALIGN_MODES:
            raise ValueError(f'align={align!r} is not one of {_ALIGN_MODES}')
        self.align = align
        self.out_channels = self.master_channels
        if align == 'conv':
            self.align_convs = nn.ModuleDict()
            for s in self.inject_strides:
                c_in, c_out = self.aux_channels[self.aux_strides.index(s)], self.master_channels[self.strides.index(s)]
                norm = _build_norm(norm_cfg, c_out)
                conv = nn.Conv2d(c_in, c_out, kernel_size=1, bias=norm is None)
                self.align_convs[str(s)] = nn.Sequential(conv, norm) if norm is not None else nn.Sequential(conv)

    def _resolve_inject(self, inject_stride: InjectStride, profile: Optional[str]) -> Tuple[int, ...]:
        if isinstance(inject_stride, str):
            if inject_stride != 'auto':
                raise ValueError(f"inject_stride={inject_stride!r}: use an int, a list of ints or 'auto'")
            if profile is None:
                raise ValueError("inject_stride='auto' needs profile=PATH to a JSON written by "
                                 'tools/analysis/profile_vfm.py')
            strides = inject_strides_from_profile(profile)
            source = f' (from {profile})'
        else:
            if profile is not None:
                raise ValueError(f"profile={profile!r} is only read with inject_stride='auto'; drop it or set "
                                 "inject_stride='auto'")
            strides = _int_tuple(inject_stride, 'inject_stride')
            source = ''
        if not strides or len(set(strides)) != len(strides):
            raise ValueError(f'inject_stride{source} must name distinct strides, got {strides}')
        for s in strides:
            if s not in self.strides:
                raise ValueError(f'inject_stride {s}{source} is not in strides={self.strides}; inject at one of them')
            if s not in self.aux_strides:
                raise ValueError(f'inject_stride {s}{source} is not in aux_strides={self.aux_strides}; add {s} to '
                                 'aux_strides (and to the auxiliary backbone)')
        return tuple(sorted(strides))

    @staticmethod
    def _split(inputs: Any) -> Tuple[Sequence[Tensor], Sequence[Tensor]]:
        if isinstance(inputs, dict):
            return inputs['master'], inputs['auxiliary']
        if hasattr(inputs, 'master') and hasattr(inputs, 'auxiliary'):
            return inputs.master, inputs.auxiliary
        if isinstance(inputs, (list, tuple)) and len(inputs) == 2 and not isinstance(inputs[0], Tensor):
            return inputs[0], inputs[1]
        raise TypeError('MetricGuidedNeck expects dict(master=maps, auxiliary=maps) as returned by '
                        f'mmfusion.MasterAuxBackbone, got {type(inputs).__name__}; use MasterAuxBackbone as the '
                        'backbone')

    def forward(self, inputs: Union[Dict[str, Sequence[Tensor]], Any]) -> Tuple[Tensor, ...]:
        """Fuse the two pyramids.

        Args:
            inputs (dict): ``dict(master=maps, auxiliary=maps)``, maps ordered like ``strides`` / ``aux_strides``.

        Returns:
            tuple[Tensor]: One map per entry of ``strides`` with ``out_channels`` channels.
        """
        master, aux = self._split(inputs)
        if len(master) != len(self.strides):
            raise ValueError(f'got {len(master)} master maps for strides={self.strides}; the master backbone must '
                             'return one map per stride')
        if len(aux) != len(self.aux_strides):
            raise ValueError(f'got {len(aux)} auxiliary maps for aux_strides={self.aux_strides}; the auxiliary '
                             'backbone must return one map per auxiliary stride')
        outs = list(master)
        for s in self.inject_strides:
            i, j = self.strides.index(s), self.aux_strides.index(s)
            m, a = master[i], aux[j]
            if a.shape[-2:] != m.shape[-2:] or a.shape[0] != m.shape[0]:
                raise ValueError(f'at stride {s} the auxiliary map is {tuple(a.shape)} but the master map is '
                                 f'{tuple(m.shape)}; both backbones must return (B, C, ceil(H/{s}), ceil(W/{s}))')
            if a.shape[1] != self.aux_channels[j]:
                raise ValueError(f'at stride {s} the auxiliary map has {a.shape[1]} channels, aux_channels says '
                                 f'{self.aux_channels[j]}')
            if self.align == 'conv':
                outs[i] = self.align_convs[str(s)](a)
            else:
                outs[i] = mean_pad_channels(a, self.master_channels[i])
        return tuple(outs)


def _check_strides(strides: Sequence[int], name: str) -> Tuple[int, ...]:
    strides = _int_tuple(strides, name)
    if not strides or any(s <= 0 for s in strides) or list(strides) != sorted(set(strides)):
        raise ValueError(f'{name}={strides} must be distinct positive strides in increasing order, e.g. (4, 8, 16, 32)')
    return strides
