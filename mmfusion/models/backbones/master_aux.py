"""A backbone that runs a trainable master and a frozen auxiliary on the same image (SPEC §6, DESIGN.md).

It is what lets the stock mmdet ``Mask2Former`` and mmseg ``EncoderDecoder`` run the fusion unchanged: their
``extract_feat`` calls ``backbone`` then ``neck``; the backbone returns both pyramids and
:class:`~mmfusion.models.necks.MetricGuidedNeck` fuses them into the one pyramid the head expects.
"""
from __future__ import annotations

import copy
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from torch import Tensor

from mmfusion.registry import MODELS
from mmfusion.utils import ConfigType, OptMultiConfig

from ..necks.metric_guided_neck import _check_strides, inject_strides_from_profile


class MasterAuxOutputs(NamedTuple):
    """The two pyramids, each a tuple of (B, C_i, ceil(H/s), ceil(W/s)) maps ordered by stride."""
    master: Tuple[Tensor, ...]
    auxiliary: Tuple[Tensor, ...]


def _build(cfg: Union[ConfigType, nn.Module], name: str) -> nn.Module:
    if isinstance(cfg, nn.Module):
        return cfg
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise TypeError(f'{name} must be a backbone config with a "type" key (or a built nn.Module), got {cfg!r}')
    kind = cfg['type']
    if isinstance(kind, str) and '.' not in kind and kind in MODELS.module_dict:
        # Built from an mmdet/mmseg-scoped config, an unprefixed name would be looked up in that scope only; our
        # own backbones are meant here, so name their scope.
        cfg = dict(cfg, type=f'mmfusion.{kind}')
    return MODELS.build(cfg)


@MODELS.register_module()
class MasterAuxBackbone(BaseModule):
    """Master + auxiliary backbone of metric-guided fusion.

    Runs the master (structure-strong, usually trainable) and the auxiliary (edge-strong, frozen) encoder on the same
    normalised image and returns both pyramids as :class:`MasterAuxOutputs`, to be fused by
    :class:`~mmfusion.models.necks.MetricGuidedNeck`. The auxiliary is built with only the strides it must provide
    (``aux_strides`` is passed to it as ``out_strides``, so e.g. SAM2 Hiera stops after OS16). A frozen auxiliary
    has ``requires_grad=False`` (so optimizer constructors that honour it leave it out), stays in eval mode through
    ``.train()`` and runs under ``torch.no_grad()`` (no activations kept for backward).

    Paper: `Metric-Guided Feature Fusion of Visual Foundation Models for Segmentation Tasks
    <https://arxiv.org/abs/2605.16864>`_.

    Args:
        master (:obj:`ConfigDict` or dict or nn.Module): Master backbone config, e.g.
            ``dict(type='mmfusion.DINOv3ViT', ...)``.
        auxiliary (:obj:`ConfigDict` or dict or nn.Module): Auxiliary backbone config, e.g.
            ``dict(type='mmfusion.SAM2Hiera', ...)``.
        aux_strides (Sequence[int] | str, optional): Strides the auxiliary must provide; given to its config as
            ``out_strides``. ``'auto'`` reads the injection stride(s) from ``profile``. Default: None, i.e. whatever
            the auxiliary config returns.
        freeze_auxiliary (bool): Freeze the auxiliary (the paper's setting; fine-tuning it destroys its EF peak).
            Default: True.
        profile (str, optional): Profile JSON of ``tools/analysis/profile_vfm.py``, read when
            ``aux_strides='auto'``. Default: None.
        init_cfg (:obj:`ConfigDict` or dict or list, optional): Initialization config. Default: None.

    Examples:
        >>> import torch
        >>> from mmfusion.models.necks import MetricGuidedNeck
        >>> backbone = MasterAuxBackbone(  # doctest: +SKIP
        ...     master=dict(type='mmfusion.DINOv3ViT', arch='vitb16'),
        ...     auxiliary=dict(type='mmfusion.SAM2Hiera', arch='base_plus'), aux_strides=(16, ))
        >>> neck = MetricGuidedNeck(backbone.master_channels, backbone.aux_channels,  # doctest: +SKIP
        ...                         aux_strides=backbone.aux_strides, inject_stride=16)
        >>> outs = neck(backbone(torch.rand(1, 3, 256, 512)))  # doctest: +SKIP
    """

    def __init__(self,
                 master: Union[ConfigType, nn.Module],
                 auxiliary: Union[ConfigType, nn.Module],
                 aux_strides: Optional[Union[Sequence[int], str]] = None,
                 freeze_auxiliary: bool = True,
                 profile: Optional[str] = None,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if isinstance(aux_strides, str):
            if aux_strides != 'auto' or profile is None:
                raise ValueError(f"aux_strides={aux_strides!r}: use a tuple of strides, or 'auto' together with "
                                 'profile=PATH to a profile JSON')
            aux_strides = inject_strides_from_profile(profile)
        elif profile is not None:
            raise ValueError(f"profile={profile!r} is only read with aux_strides='auto'")
        if aux_strides is not None:
            aux_strides = _check_strides(aux_strides, 'aux_strides')
            if isinstance(auxiliary, nn.Module):
                raise TypeError('aux_strides needs the auxiliary as a config (it is passed as out_strides); give '
                                'a dict, or a module already built with those strides and aux_strides=None')
            auxiliary = copy.deepcopy(auxiliary)
            given = auxiliary.get('out_strides')
            if given is not None and tuple(given) != aux_strides:
                raise ValueError(f'auxiliary out_strides={tuple(given)} disagrees with aux_strides={aux_strides}; '
                                 'set only aux_strides')
            auxiliary['out_strides'] = aux_strides
        self.master = _build(master, 'master')
        self.auxiliary = _build(auxiliary, 'auxiliary')
        self.freeze_auxiliary = freeze_auxiliary

        self.strides = _attr_tuple(self.master, 'out_strides')
        self.master_channels = _attr_tuple(self.master, 'out_channels')
        built = _attr_tuple(self.auxiliary, 'out_strides')
        if aux_strides is not None and built is not None and built != aux_strides:
            raise ValueError(f'the auxiliary {type(self.auxiliary).__name__} was asked for out_strides={aux_strides} '
                             f'but provides {built}; it must accept an out_strides argument')
        self.aux_strides = built if built is not None else aux_strides
        self.aux_channels = _attr_tuple(self.auxiliary, 'out_channels')
        if freeze_auxiliary:
            self.auxiliary.requires_grad_(False)
            self.auxiliary.eval()

    def train(self, mode: bool = True) -> MasterAuxBackbone:
        """Set the train mode; a frozen auxiliary stays in eval mode (dropout, norm statistics)."""
        super().train(mode)
        if self.freeze_auxiliary:
            self.auxiliary.eval()
        return self

    def forward(self, x: Tensor) -> MasterAuxOutputs:
        """Run both encoders on the same normalised image.

        Args:
            x (Tensor): Images of shape (B, 3, H, W), normalised by the data preprocessor.

        Returns:
            MasterAuxOutputs: ``master`` and ``auxiliary`` pyramids.
        """
        master = tuple(self.master(x))
        if self.freeze_auxiliary:
            # no_grad: a frozen encoder must not keep activations for a backward pass that never reaches it.
            with torch.no_grad():
                auxiliary = tuple(self.auxiliary(x))
        else:
            auxiliary = tuple(self.auxiliary(x))
        return MasterAuxOutputs(master, auxiliary)


def _attr_tuple(module: nn.Module, name: str) -> Optional[Tuple[int, ...]]:
    value = getattr(module, name, None)
    return None if value is None else tuple(int(v) for v in value)
