"""The master/auxiliary fusion of SPEC §6: the auxiliary's map replaces the master's at the injection stride(s)."""
from __future__ import annotations

from typing import Tuple

from mmengine.model import BaseModule
from torch import Tensor

from mmfusion.registry import MODELS
from mmfusion.utils import OptMultiConfig


@MODELS.register_module()
class MetricGuidedNeck(BaseModule):
    """Metric-guided master/auxiliary fusion neck.

    This is an implementation of the fusion in `Metric-Guided Feature Fusion of Visual Foundation Models for
    Segmentation Tasks <https://arxiv.org/abs/2605.16864>`_: the output pyramid is the master's, except at the
    injection stride s* where it is the (channel-aligned) auxiliary's map,
    F(s) = F_aux(s) if s = s* else F_master(s).

    The neck has no arguments and no parameters: it reads the strides, the injected strides and the aligned maps from
    the :class:`~mmfusion.models.backbones.MasterAuxOutputs` that
    :class:`~mmfusion.models.backbones.MasterAuxBackbone` returns, so the backbone's ``inject_stride`` alone decides
    where the auxiliary goes.

    Args:
        init_cfg (:obj:`ConfigDict` or dict or list, optional): Refused: the neck has no parameters to initialise.
            Default: None.

    Examples:
        >>> import torch
        >>> from mmfusion.models.backbones import MasterAuxOutputs
        >>> master = (torch.rand(1, 8, 16, 16), torch.rand(1, 16, 8, 8), None, torch.rand(1, 64, 2, 2))
        >>> aux = torch.rand(1, 32, 4, 4)
        >>> outs = MetricGuidedNeck()(MasterAuxOutputs(master, (aux, ), (aux, ), (4, 8, 16, 32), (16, )))
        >>> [tuple(o.shape) for o in outs]
        [(1, 8, 16, 16), (1, 16, 8, 8), (1, 32, 4, 4), (1, 64, 2, 2)]
        >>> outs[2] is aux, outs[0] is master[0]
        (True, True)
    """

    def __init__(self, init_cfg: OptMultiConfig = None) -> None:
        if init_cfg is not None:
            raise ValueError(f'MetricGuidedNeck has no parameters, so init_cfg={init_cfg!r} would initialise nothing; '
                             'drop it (the fused backbone and the head own every weight)')
        super().__init__(init_cfg=None)

    def forward(self, inputs) -> Tuple[Tensor, ...]:
        """Fuse the two pyramids.

        Args:
            inputs (MasterAuxOutputs): What the fused backbone returns.

        Returns:
            tuple[Tensor]: One map per stride of the master's pyramid.
        """
        if not all(hasattr(inputs, k) for k in ('master', 'injected', 'strides', 'inject_strides')):
            raise TypeError('MetricGuidedNeck expects the MasterAuxOutputs of mmfusion.MasterAuxBackbone, got '
                            f'{type(inputs).__name__}; use MasterAuxBackbone as the backbone')
        outs = list(inputs.master)
        for s, feat in zip(inputs.inject_strides, inputs.injected):
            outs[inputs.strides.index(s)] = feat
        missing = [s for s, o in zip(inputs.strides, outs) if o is None]
        if missing:
            raise ValueError(f'no map at strides {missing}: the master skipped them and the auxiliary was not '
                             'injected there')
        return tuple(outs)
