"""What the foundation-model backbones share: freezing the pretrained trunk, padding/cropping, loading weights in
``init_weights``.

Not registered; :class:`~mmfusion.models.backbones.DINOv3ViT` and :class:`~mmfusion.models.backbones.SAM2Hiera`
subclass it.
"""
from __future__ import annotations

import contextlib
import logging
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch import Tensor


def check_strides(out_strides: Sequence[int], allowed: Sequence[int] | None = None) -> Tuple[int, ...]:
    """``out_strides`` as a strictly increasing tuple of positive ints (outputs are ordered by stride).

    Args:
        out_strides (Sequence[int]): Requested output strides.
        allowed (Sequence[int], optional): The strides the backbone can give. Defaults to any.

    Returns:
        tuple[int, ...]: The strides.
    """
    strides = (int(out_strides), ) if isinstance(out_strides, int) else tuple(int(s) for s in out_strides)
    if not strides or any(s <= 0 for s in strides) or list(strides) != sorted(set(strides)):
        raise ValueError(f'out_strides must be strictly increasing positive ints, got {out_strides!r}')
    if allowed is not None and not set(strides) <= set(allowed):
        raise ValueError(f'out_strides {strides} not available; this backbone gives strides {tuple(allowed)}')
    return strides


def check_skip_strides(skip_strides: Sequence[int], out_strides: Sequence[int]) -> frozenset:
    """``skip_strides`` as a set: entries of ``out_strides``, leaving at least one output to compute.

    Args:
        skip_strides (Sequence[int]): Strides not to compute.
        out_strides (Sequence[int]): The backbone's output strides.
    """
    skip = frozenset(int(s) for s in ((skip_strides, ) if isinstance(skip_strides, int) else skip_strides))
    if not skip <= set(out_strides):
        raise ValueError(f'skip_strides {tuple(sorted(skip))} must be among out_strides {tuple(out_strides)}')
    if skip == set(out_strides):
        raise ValueError(f'skip_strides {tuple(sorted(skip))} leaves no output of out_strides {tuple(out_strides)}')
    return skip


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Zero-pad ``x`` (B, C, H, W) at the bottom and right to a multiple of ``multiple``.

    Zero is the dataset mean after ImageNet normalisation, i.e. a neutral grey border.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    return F.pad(x, (0, pw, 0, ph)) if ph or pw else x


def crop_to_stride(feat: Tensor, size: Tuple[int, int], stride: int) -> Tensor:
    """Crop a map computed on a padded input back to ``(ceil(H / stride), ceil(W / stride))``."""
    return feat[..., :math.ceil(size[0] / stride), :math.ceil(size[1] / stride)]


class VFMBackbone(BaseModule):
    """Base of the VFM backbones.

    A VFM backbone is a pretrained trunk (the submodules named in :attr:`pretrained_modules`, whose weights come from
    ``checkpoint``) plus, optionally, new layers (e.g. a pyramid's projections) that start random and always train.
    ``frozen`` freezes the trunk only: its parameters get ``requires_grad=False``, it stays in eval mode through
    ``train()`` and runs under ``torch.no_grad()`` (subclasses wrap the trunk's forward in :meth:`_grad_context`);
    a frozen layer is therefore always a pretrained one.

    Building reads no file. The checkpoint is loaded by :meth:`init_weights`, the OpenMMLab way: MMEngine's Runner
    calls it before training and skips it when it loads a trained checkpoint for testing or inference, so those
    need only the trained checkpoint. Without ``checkpoint`` the trunk keeps its random initialisation (with a
    warning at build time).

    Subclasses set ``out_strides`` and ``out_channels`` (tuples, one entry per output, ordered by stride), call
    :meth:`_set_frozen` at the end of ``__init__`` and implement :meth:`load_checkpoint`.

    Args:
        frozen (bool): Freeze the pretrained trunk.
        checkpoint (str, optional): Pretrained weights, loaded by :meth:`init_weights`. Default: None.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=PATH)`` is the same as ``checkpoint=PATH``;
            other initialisers are refused (they would overwrite pretrained weights). Default: None.
    """

    out_strides: Tuple[int, ...]
    out_channels: Tuple[int, ...]
    #: Submodules whose weights come from the checkpoint (the rest are new layers).
    pretrained_modules: Tuple[str, ...] = ()
    #: The normalised input the trunk was pretrained on (RGB, 0-255 scale, the data preprocessor's terms); a built
    #: model's ``data_preprocessor`` must give it (:func:`mmfusion.utils.normalisation.check_input_normalisation`).
    #: None: not stated.
    input_mean: Optional[Tuple[float, ...]] = None
    input_std: Optional[Tuple[float, ...]] = None

    def __init__(self, frozen: bool, checkpoint: Optional[str] = None, init_cfg=None):
        if init_cfg is not None:
            kind = init_cfg.get('type') if isinstance(init_cfg, dict) else None
            if kind != 'Pretrained' or 'checkpoint' not in init_cfg:
                raise ValueError(f'{type(self).__name__} loads pretrained weights only; init_cfg={init_cfg!r} is not '
                                 "supported: use checkpoint=PATH or init_cfg=dict(type='Pretrained', checkpoint=PATH)")
            if checkpoint is not None and checkpoint != init_cfg['checkpoint']:
                raise ValueError(f'{type(self).__name__}: checkpoint={checkpoint!r} and init_cfg checkpoint '
                                 f'{init_cfg["checkpoint"]!r} disagree; set one of them')
            checkpoint = init_cfg['checkpoint']
        super().__init__(init_cfg=None)
        self.frozen = bool(frozen)
        self.checkpoint = checkpoint

    def _check_with_cp(self, with_cp: bool) -> None:
        """Refuse activation checkpointing of a frozen trunk: it runs under no_grad, with no backward to recompute."""
        if with_cp and self.frozen:
            raise ValueError(f'{type(self).__name__}: with_cp=True checkpoints activations for the backward pass, '
                             'but frozen=True runs the trunk under no_grad (nothing to recompute); drop with_cp or '
                             'unfreeze the encoder (in a fused backbone: freeze_master / freeze_auxiliary)')

    def pretrained_parameters(self):
        """``(name, parameter)`` of the trunk, the parameters the checkpoint provides."""
        for prefix in self.pretrained_modules:
            module = getattr(self, prefix, None)
            if module is not None:
                yield from module.named_parameters(prefix=prefix)

    def new_parameters(self):
        """``(name, parameter)`` of the layers that start random (not in the checkpoint)."""
        pretrained = {id(p) for _, p in self.pretrained_parameters()}
        return [(n, p) for n, p in self.named_parameters() if id(p) not in pretrained]

    def _set_frozen(self) -> None:
        if self.frozen:
            for _, param in self.pretrained_parameters():
                param.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True):
        """Set the training mode; a frozen trunk stays in eval mode (dropout, drop-path, RoPE jitter off)."""
        super().train(mode)
        if self.frozen:
            for prefix in self.pretrained_modules:
                module = getattr(self, prefix, None)
                if module is not None:
                    module.train(False)
        return self

    def _grad_context(self):
        return torch.no_grad() if self.frozen else contextlib.nullcontext()

    def load_checkpoint(self, checkpoint: str):
        raise NotImplementedError

    def init_weights(self) -> None:
        """Load ``checkpoint`` into the trunk (a missing file stops with instructions); without one, keep the
        random weights. New layers keep their initialisation."""
        if self.checkpoint is not None:
            print_log(f'{type(self).__name__}: loading pretrained weights from {self.checkpoint}', logger='current',
                      level=logging.INFO)
            self.load_checkpoint(self.checkpoint)
        self._is_init = True

    def _warn_if_random(self, how_to_get: str) -> None:
        if self.checkpoint is None:
            import warnings
            warnings.warn(f'{type(self).__name__}: checkpoint=None, so the weights are random. {how_to_get}',
                          UserWarning, stacklevel=3)
