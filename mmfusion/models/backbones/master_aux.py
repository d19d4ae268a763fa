"""The fused backbone of metric-guided fusion (SPEC §6, DESIGN.md): a master and a frozen auxiliary on one image.

It owns every decision of the fusion: the injection stride(s) s*, which encoder is frozen, and how the auxiliary's
channels are aligned to the master's. The stock mmdet ``Mask2Former`` / mmseg ``EncoderDecoder`` run it unchanged:
their ``extract_feat`` calls ``backbone`` then ``neck``, and :class:`~mmfusion.models.necks.MetricGuidedNeck` puts the
aligned auxiliary maps in place of the master's, learning where from this backbone's output.
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import itertools
import math
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from torch import Tensor
from torch.distributed.fsdp import FullyShardedDataParallel
from torch.func import functional_call

from mmfusion.metrics import injection_stride, load_profile
from mmfusion.registry import MODELS
from mmfusion.utils import ConfigType, OptConfigType, OptMultiConfig

from .base_vfm import VFMBackbone
from .int8_linear import quantise_linears_

InjectStride = Union[int, Sequence[int], str]

_ALIGN_MODES = ('mean_pad', 'conv')
# Default norm of align='conv' (never mutated: _build_norm copies it).
_GN32 = dict(type='GN', num_groups=32)
# align_norm_cfg's default, told apart from a value the config sets (which only align='conv' reads).
_ALIGN_NORM_UNSET = object()


class MasterAuxOutputs(NamedTuple):
    """What :class:`MasterAuxBackbone` returns; maps are (B, C, ceil(H/s), ceil(W/s)).

    Attributes:
        master (tuple): The master's maps, one per entry of ``strides``; None at the injected strides (the master
            does not compute the levels the auxiliary replaces).
        auxiliary (tuple): The auxiliary's own maps, one per injected stride (for profiling).
        injected (tuple): The auxiliary's maps aligned to the master's channels, one per injected stride.
        strides (tuple[int]): Strides of the fused pyramid.
        inject_strides (tuple[int]): The injected strides s*, increasing.
    """
    master: Tuple[Optional[Tensor], ...]
    auxiliary: Tuple[Tensor, ...]
    injected: Tuple[Tensor, ...]
    strides: Tuple[int, ...]
    inject_strides: Tuple[int, ...]


def _int_tuple(value, name: str) -> Tuple[int, ...]:
    if isinstance(value, int):
        return (value, )
    try:
        return tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f'{name} must be an int or a sequence of ints, got {value!r}') from None


def inject_strides_from_profile(profile: str, auxiliary: Optional[str] = None) -> Tuple[int, ...]:
    """The injection stride(s) s* recorded in a profile JSON written by ``tools/analysis/profile_vfm.py``.

    The JSON's ``selection.inject_stride`` wins when present (an int or a list); otherwise s* is the auxiliary's EF
    peak (:func:`mmfusion.metrics.injection_stride`).

    Args:
        profile (str): Path to the profile JSON.
        auxiliary (str, optional): Encoder whose EF decides s* when the JSON names no ``inject_stride``. Defaults to
            None, i.e. ``selection.auxiliary``.

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
    return (injection_stride(ef), )


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
    """A norm layer from a small set of types; kept local so the fusion needs no compiled mmcv."""
    if norm_cfg is None:
        return None
    cfg = dict(norm_cfg)
    kind = cfg.pop('type')
    cfg.pop('requires_grad', None)
    if kind == 'GN':
        groups = cfg.pop('num_groups', 32)
        if channels % groups:
            raise ValueError(f"align_norm_cfg GN(num_groups={groups}) cannot normalise {channels} master channels; "
                             f"pick num_groups dividing {channels} or align_norm_cfg=dict(type='BN')")
        return nn.GroupNorm(groups, channels, **cfg)
    if kind in ('BN', 'BN2d'):
        return nn.BatchNorm2d(channels, **cfg)
    if kind == 'SyncBN':
        return nn.SyncBatchNorm(channels, **cfg)
    raise ValueError(f"align_norm_cfg type {kind!r} is not supported; use 'GN', 'BN', 'SyncBN' or None")


def _encoder_class(cfg: dict, name: str) -> type:
    kind = cfg['type']
    cls = kind if isinstance(kind, type) else MODELS.get(kind)
    if cls is None:
        raise KeyError(f'{name} type {kind!r} is not registered; use e.g. mmfusion.DINOv3ViT or mmfusion.SAM2Hiera')
    return cls


def _accepts(cls: type, arg: str) -> bool:
    return arg in inspect.signature(cls.__init__).parameters


def _set_owned(cfg: dict, key: str, value, owner: str, name: str) -> None:
    """Write a decision the fused backbone owns into an encoder config, refusing a conflicting value there."""
    given = cfg.get(key)
    if given is not None and given != value and not (isinstance(given, (list, tuple)) and tuple(given) == value):
        raise ValueError(f'{name}.{key}={given!r} disagrees with the fused backbone\'s {owner}; the backbone owns '
                         f'it: set only model.backbone.{owner}')
    cfg[key] = value


@MODELS.register_module()
class MasterAuxBackbone(BaseModule):
    """Master + auxiliary backbone of metric-guided fusion.

    Runs the master (structure-strong) and the auxiliary (edge-strong) encoder on the same normalised image. The
    injection stride(s) s* are decided here, once: the auxiliary is built to return only those strides (so it stops
    after the deepest one, e.g. SAM2 Hiera never runs its OS32 stage for s* = 16), the master is built to skip them
    (no parameters and no compute for the levels that get replaced, so DDP needs no ``find_unused_parameters``), and
    the auxiliary's maps are aligned to the master's channel counts. Channel counts are read from the built encoders.
    :class:`~mmfusion.models.necks.MetricGuidedNeck` then assembles the fused pyramid.

    Freezing is decided here too: ``freeze_auxiliary`` / ``freeze_master`` set the encoders' ``frozen`` (an encoder
    config stating another ``frozen`` is refused, naming the key that owns the decision). A
    frozen auxiliary has ``requires_grad=False``, stays in eval mode through ``.train()`` and runs under
    ``torch.no_grad()``; it must inject its own pretrained features, so an auxiliary with new, randomly initialised
    layers (e.g. a projecting pyramid) is refused.

    Beyond the paper, ``auxiliary`` may be a list of encoder configs, each injected at its own stride(s):
    ``auxiliary=[sam2, other], inject_stride=[16, 8]`` (one int or list per auxiliary, strides distinct). The same
    rules hold for each: it returns (and runs up to) only its strides, ``freeze_auxiliary`` applies to all, and the
    master skips every injected level. ``tools/analysis/profile_vfm.py`` proposes such a plan from a profile.

    Paper: `Metric-Guided Feature Fusion of Visual Foundation Models for Segmentation Tasks
    <https://arxiv.org/abs/2605.16864>`_.

    Args:
        master (:obj:`ConfigDict` or dict): Master backbone config, e.g. ``dict(type='mmfusion.DINOv3ViT', ...)``.
            Its ``out_strides`` are the fused pyramid's strides.
        auxiliary (:obj:`ConfigDict` or dict or list): Auxiliary backbone config, e.g.
            ``dict(type='mmfusion.SAM2Hiera', ...)``, or a list of them; each must accept ``out_strides`` (set here to
            its injected strides).
        inject_stride (int | Sequence[int] | str): Stride(s) where the auxiliary replaces the master. An int is the
            paper's setting; a list injects at several strides (beyond the paper); ``'auto'`` reads s* from
            ``profile``. With several auxiliaries, a list with one int or list per auxiliary. Default: 16.
        profile (str, optional): Profile JSON of ``tools/analysis/profile_vfm.py``, read (at build time) only when
            ``inject_stride='auto'``. Default: None.
        freeze_master (bool): Freeze the master's pretrained weights (its new layers, e.g. a pyramid's projections,
            still train). Default: False.
        freeze_auxiliary (bool): Freeze the auxiliary (the paper's setting; fine-tuning it destroys its EF peak).
            Default: True.
        align (str): Channel alignment of the injected maps: ``'mean_pad'`` (the paper's, parameter-free; see
            :func:`mean_pad_channels`) or ``'conv'`` (a learned 1x1 conv followed by ``align_norm_cfg``).
            Default: 'mean_pad'.
        align_norm_cfg (:obj:`ConfigDict` or dict, optional): Norm after the 1x1 conv of ``align='conv'`` ('GN', 'BN',
            'SyncBN' or None); refused with ``align='mean_pad'``, which has no norm. Default: dict(type='GN',
            num_groups=32) with ``align='conv'``.
        aux_dtype (str, optional): Keep the frozen auxiliary's weights in this dtype. ``'bfloat16'`` or
            ``'float16'``: half its resident weight memory; by default its forward runs in that dtype too, and its
            maps are cast back to the input's dtype (fast on GPUs with half precision, slower on CPUs without bf16
            instructions). ``'qint8'`` (CPU): its ``nn.Linear`` layers keep int8 weights (symmetric per output
            channel) and run PyTorch's dynamic int8 kernel, a quarter of their float32 memory and faster on CPUs, at
            a small feature error; the other layers stay float32. Checkpoints keep float weights under the usual
            keys (the int8 ones dequantised, which load back to the same integers), so they load into a float model
            and back. See :class:`~mmfusion.models.backbones.int8_linear.FrozenInt8Linear`. Default: None (the
            auxiliary's own dtype).
        aux_compute_dtype (str, optional): With half-precision ``aux_dtype``, run the auxiliary's forward in this
            dtype instead (``'float32'``): its weights are cast for the forward only, and those copies are freed
            before the master's autograd graph grows (the auxiliary runs first), so the training step's peak memory
            keeps the half-precision saving at full-precision speed and accuracy (up to the weights' rounding).
            Default: None (compute in ``aux_dtype``).
        init_cfg (:obj:`ConfigDict` or dict or list, optional): Initialization config. Default: None.

    Examples:
        >>> import torch
        >>> from mmfusion.models.necks import MetricGuidedNeck
        >>> from tests.test_models.test_backbones.vfm_utils import TINY_HIERA, TINY_VIT
        >>> backbone = MasterAuxBackbone(  # doctest: +SKIP
        ...     master=dict(type='mmfusion.DINOv3ViT', arch=TINY_VIT),
        ...     auxiliary=dict(type='mmfusion.SAM2Hiera', arch=TINY_HIERA), inject_stride=16)
        >>> outs = MetricGuidedNeck()(backbone(torch.rand(1, 3, 64, 128)))  # doctest: +SKIP
        >>> [tuple(o.shape) for o in outs]  # doctest: +SKIP
        [(1, 128, 16, 32), (1, 256, 8, 16), (1, 512, 4, 8), (1, 1024, 2, 4)]
    """

    def __init__(self,
                 master: ConfigType,
                 auxiliary: Union[ConfigType, Sequence[ConfigType]],
                 inject_stride: InjectStride = 16,
                 profile: Optional[str] = None,
                 freeze_master: bool = False,
                 freeze_auxiliary: bool = True,
                 align: str = 'mean_pad',
                 align_norm_cfg: OptConfigType = _ALIGN_NORM_UNSET,
                 aux_dtype: Optional[str] = None,
                 aux_compute_dtype: Optional[str] = None,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(init_cfg=init_cfg)
        several = isinstance(auxiliary, (list, tuple))
        aux_cfgs = [_as_config(a, f'auxiliary[{i}]') for i, a in enumerate(auxiliary)] if several \
            else [_as_config(auxiliary, 'auxiliary')]
        if not aux_cfgs:
            raise ValueError('auxiliary is an empty list; give one auxiliary config or several')
        # One tuple of strides per auxiliary: inject_stride is a list with one entry (an int or a list) per auxiliary
        # when there are several, else an int, a list or 'auto'.
        self.aux_groups = self._resolve_groups(inject_stride, profile, len(aux_cfgs) if several else None)
        self.inject_strides = tuple(sorted(s for group in self.aux_groups for s in group))
        if align not in _ALIGN_MODES:
            raise ValueError(f'align={align!r} is not one of {_ALIGN_MODES}')
        self.align = align
        if align_norm_cfg is _ALIGN_NORM_UNSET:
            align_norm_cfg = _GN32
        elif align != 'conv':
            raise ValueError(f'align_norm_cfg={align_norm_cfg!r} is read only with align=\'conv\' (a learned 1x1 conv '
                             f'and norm); align={align!r} is parameter-free: drop align_norm_cfg or set align=\'conv\'')
        self.freeze_master = bool(freeze_master)
        self.freeze_auxiliary = bool(freeze_auxiliary)

        master_cfg = _as_config(master, 'master')
        master_cls = _encoder_class(master_cfg, 'master')
        self._master_skips = _accepts(master_cls, 'skip_strides')
        if self._master_skips:
            _set_owned(master_cfg, 'skip_strides', self.inject_strides, 'inject_stride', 'master')
        if _accepts(master_cls, 'frozen'):
            _set_owned(master_cfg, 'frozen', self.freeze_master, 'freeze_master', 'master')
        self.master = MODELS.build(master_cfg)
        self.strides = _attr_tuple(self.master, 'out_strides', 'master')
        self.out_channels = _attr_tuple(self.master, 'out_channels', 'master')
        missing = [s for s in self.inject_strides if s not in self.strides]
        if missing:
            raise ValueError(f'inject_stride {missing} is not a stride of the master (out_strides={self.strides}); '
                             'inject at one of them')

        aux_names = [f'auxiliary[{i}]' if several else 'auxiliary' for i in range(len(aux_cfgs))]
        auxiliaries = [self._build_auxiliary(cfg, group, name)
                       for cfg, group, name in zip(aux_cfgs, self.aux_groups, aux_names)]
        self.auxiliary = nn.ModuleList(auxiliaries) if several else auxiliaries[0]
        self.aux_dtype = _aux_dtype(aux_dtype, self.freeze_auxiliary)
        self.aux_compute_dtype = _compute_dtype(aux_compute_dtype, self.aux_dtype)
        if self.aux_dtype == 'qint8':
            for name, aux in zip(aux_names, auxiliaries):
                if not quantise_linears_(aux):
                    raise ValueError(f"aux_dtype='qint8' stores nn.Linear weights in int8, but the {name} "
                                     f'{type(aux).__name__} has no nn.Linear layer; drop aux_dtype')
        elif self.aux_dtype is not None:
            self.auxiliary.to(self.aux_dtype)
        channels = {s: c for aux in auxiliaries for s, c in zip(aux.out_strides, aux.out_channels)}
        self.aux_channels = tuple(channels[s] for s in self.inject_strides)
        if self.freeze_master and not isinstance(self.master, VFMBackbone):
            self.master.requires_grad_(False)  # an encoder without the VFM contract: all its weights are pretrained

        if align == 'conv':
            self.align_convs = nn.ModuleDict()
            for s, c_in in zip(self.inject_strides, self.aux_channels):
                c_out = self.out_channels[self.strides.index(s)]
                norm = _build_norm(align_norm_cfg, c_out)
                conv = nn.Conv2d(c_in, c_out, kernel_size=1, bias=norm is None)
                self.align_convs[str(s)] = nn.Sequential(conv, norm) if norm is not None else nn.Sequential(conv)
        self.train(self.training)

    def _build_auxiliary(self, cfg: dict, strides: Tuple[int, ...], name: str) -> nn.Module:
        cls = _encoder_class(cfg, name)
        if not _accepts(cls, 'out_strides'):
            raise TypeError(f'the {name} {cls.__name__} takes no out_strides argument; the fused backbone must tell '
                            'it which strides to return')
        _set_owned(cfg, 'out_strides', strides, 'inject_stride', name)
        if _accepts(cls, 'frozen'):
            _set_owned(cfg, 'frozen', self.freeze_auxiliary, 'freeze_auxiliary', name)
        aux = MODELS.build(cfg)
        provided = _attr_tuple(aux, 'out_strides', name)
        _attr_tuple(aux, 'out_channels', name)
        if provided != strides:
            raise ValueError(f'the {name} {type(aux).__name__} was asked for out_strides={strides} but provides '
                             f'{provided}')
        if not self.freeze_auxiliary:
            return aux
        if not isinstance(aux, VFMBackbone):
            aux.requires_grad_(False)  # an encoder without the VFM contract: all its weights are pretrained
            return aux
        new = [n for n, _ in aux.new_parameters()]
        if new:
            raise ValueError(f'the frozen {name} {type(aux).__name__} has new, randomly initialised layers '
                             f'({", ".join(new[:3])}{", ..." if len(new) > 3 else ""}) that would inject a random '
                             "projection; give it a parameter-free output (DINOv3: pyramid=dict(type='paper', "
                             'project=False)), or freeze_auxiliary=False')
        return aux

    @property
    def auxiliaries(self) -> Tuple[nn.Module, ...]:
        """The auxiliary encoders, one per entry of :attr:`aux_groups`."""
        return tuple(self.auxiliary) if isinstance(self.auxiliary, nn.ModuleList) else (self.auxiliary, )

    @staticmethod
    def _resolve_groups(inject_stride: InjectStride, profile: Optional[str],
                        num_aux: Optional[int]) -> Tuple[Tuple[int, ...], ...]:
        if isinstance(inject_stride, str):
            if inject_stride != 'auto':
                raise ValueError(f"inject_stride={inject_stride!r}: use an int, a list of ints or 'auto'")
            if num_aux is not None:
                raise ValueError("inject_stride='auto' reads one auxiliary's s* from a profile; with several "
                                 'auxiliaries give one stride (or list) per auxiliary, e.g. inject_stride=[16, 8]')
            if profile is None:
                raise ValueError("inject_stride='auto' needs profile=PATH to a JSON written by "
                                 'tools/analysis/profile_vfm.py')
            groups = (inject_strides_from_profile(profile), )
        else:
            if profile is not None:
                raise ValueError(f"profile={profile!r} is only read with inject_stride='auto'; drop it or set "
                                 "inject_stride='auto'")
            if num_aux is None:
                groups = (_int_tuple(inject_stride, 'inject_stride'), )
            else:
                if isinstance(inject_stride, int) or len(inject_stride) != num_aux:
                    raise ValueError(f'inject_stride={inject_stride!r} must give one stride (or list of strides) per '
                                     f'auxiliary: {num_aux} entries, e.g. [16, 8]')
                groups = tuple(_int_tuple(g, f'inject_stride[{i}]') for i, g in enumerate(inject_stride))
        groups = tuple(tuple(sorted(g)) for g in groups)
        flat = [s for g in groups for s in g]
        if not all(groups) or len(set(flat)) != len(flat) or any(s <= 0 for s in flat):
            raise ValueError(f'inject_stride must name distinct positive strides (one auxiliary per stride), got '
                             f'{inject_stride!r}')
        return groups

    def train(self, mode: bool = True) -> MasterAuxBackbone:
        """Set the train mode; a frozen auxiliary stays in eval mode (dropout, norm statistics)."""
        super().train(mode)
        if self.freeze_auxiliary:
            self.auxiliary.eval()
        if self.freeze_master and not isinstance(self.master, VFMBackbone):
            self.master.eval()
        return self

    def forward(self, x: Tensor) -> MasterAuxOutputs:
        """Run both encoders on the same normalised image and align the auxiliary's maps.

        Args:
            x (Tensor): Images of shape (B, 3, H, W), normalised by the data preprocessor.

        Returns:
            MasterAuxOutputs: the master's pyramid (None where injected), the auxiliary's maps raw and aligned.
        """
        by_stride = {}
        # The auxiliary runs first: a frozen one under no_grad keeps no activations for a backward pass that never
        # reaches it, and its transient ones are freed before the master's autograd graph grows, so they do not add
        # to the training step's peak memory.
        with torch.no_grad() if self.freeze_auxiliary else contextlib.nullcontext():
            compute = self.aux_compute_dtype or self.aux_dtype
            x_aux = x if compute in (None, 'qint8') else x.to(compute)  # int8 Linear layers take float input
            for encoder, group in zip(self.auxiliaries, self.aux_groups):
                by_stride.update((s, f.to(x.dtype)) for s, f in zip(group, self._run_auxiliary(encoder, x_aux)))
        aux = tuple(by_stride[s] for s in self.inject_strides)
        master = tuple(self.master(x))
        if len(master) != len(self.strides):
            raise ValueError(f'the master returned {len(master)} maps for out_strides={self.strides}')
        if not self._master_skips:
            master = tuple(None if s in self.inject_strides else m for s, m in zip(self.strides, master))
        size = x.shape[-2:]
        injected = []
        for s, a in zip(self.inject_strides, aux):
            want = (x.shape[0], math.ceil(size[0] / s), math.ceil(size[1] / s))
            if (a.shape[0], *a.shape[-2:]) != want:
                raise ValueError(f'at stride {s} the auxiliary map is {tuple(a.shape)}; the fused pyramid needs '
                                 f'(B, C, ceil(H/{s}), ceil(W/{s})) = (B, C, {want[1]}, {want[2]})')
            c_out = self.out_channels[self.strides.index(s)]
            injected.append(self.align_convs[str(s)](a) if self.align == 'conv' else mean_pad_channels(a, c_out))
        return MasterAuxOutputs(master, aux, tuple(injected), self.strides, self.inject_strides)

    def _run_auxiliary(self, encoder: nn.Module, x: Tensor):
        if self.aux_compute_dtype is None:
            return encoder(x)
        if isinstance(encoder, FullyShardedDataParallel):
            raise RuntimeError('aux_compute_dtype cannot run an FSDP-sharded auxiliary (its weights are flattened '
                               'shards); under FSDP drop aux_dtype/aux_compute_dtype and set the strategy\'s '
                               'mixed_precision instead')
        # Weights kept in aux_dtype, computed in aux_compute_dtype: copies live for this forward only.
        tensors = {name: t.to(self.aux_compute_dtype) if t.is_floating_point() else t
                   for name, t in itertools.chain(encoder.named_parameters(), encoder.named_buffers())}
        return functional_call(encoder, tensors, (x, ))


def _compute_dtype(name: Optional[str], storage: Union[torch.dtype, str, None]) -> Optional[torch.dtype]:
    if name is None:
        return None
    if name == 'qint8':
        raise ValueError("aux_compute_dtype='qint8': int8 is a storage dtype of the auxiliary, set "
                         "aux_dtype='qint8' (and no aux_compute_dtype)")
    if name not in ('float32', 'bfloat16', 'float16'):
        raise ValueError(f"aux_compute_dtype={name!r}: use 'float32' (or 'bfloat16', 'float16') or None")
    if storage == 'qint8':
        raise ValueError(f"aux_compute_dtype={name!r} with aux_dtype='qint8': the int8 Linear layers compute "
                         'with float activations already; drop aux_compute_dtype')
    if storage is None:
        raise ValueError(f"aux_compute_dtype={name!r} needs aux_dtype (the dtype the weights are kept in), e.g. "
                         "aux_dtype='bfloat16', aux_compute_dtype='float32'")
    dtype = getattr(torch, name)
    return None if dtype == storage else dtype


def _aux_dtype(name: Optional[str], frozen: bool) -> Union[torch.dtype, str, None]:
    if name is None:
        return None
    dtypes = dict(bfloat16=torch.bfloat16, float16=torch.float16, qint8='qint8')
    if name not in dtypes:
        raise ValueError(f"aux_dtype={name!r}: use 'bfloat16', 'float16', 'qint8' or None")
    if not frozen:
        raise ValueError(f'aux_dtype={name!r} is for a frozen auxiliary (no gradients or optimizer state in '
                         'reduced precision); set freeze_auxiliary=True or aux_dtype=None')
    return dtypes[name]


def _as_config(cfg: ConfigType, name: str) -> dict:
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise TypeError(f'{name} must be a backbone config with a "type" key, got {type(cfg).__name__}; the fused '
                        'backbone builds its encoders itself (it sets their strides and freezing)')
    cfg = copy.deepcopy(dict(cfg))
    kind = cfg['type']
    if isinstance(kind, str) and '.' not in kind and kind in MODELS.module_dict:
        # Built from an mmdet/mmseg-scoped config, an unprefixed name would be looked up in that scope only; our
        # own backbones are meant here, so name their scope.
        cfg['type'] = f'mmfusion.{kind}'
    return cfg


def _attr_tuple(module: nn.Module, name: str, role: str) -> Tuple[int, ...]:
    value = getattr(module, name, None)
    if value is None:
        raise AttributeError(f'the {role} {type(module).__name__} has no {name} attribute; mmfusion encoders state '
                             'out_strides and out_channels')
    return tuple(int(v) for v in value)
