"""What the two foundation-model backbones share: freezing, padding/cropping, and weights that stay put.

Not registered; :class:`~mmfusion.models.backbones.DINOv3ViT` and :class:`~mmfusion.models.backbones.SAM2Hiera`
subclass it.
"""
from __future__ import annotations

import contextlib
import logging
import math
from typing import Sequence, Tuple

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

    Subclasses set ``out_strides`` and ``out_channels`` (tuples, one entry per output, ordered by stride), call
    :meth:`_set_frozen` at the end of ``__init__`` and wrap their forward in :meth:`_grad_context`.

    Weights are set in ``__init__`` (random, or from ``checkpoint``), so the backbone is usable as soon as it is
    built. MMEngine's runner then calls ``init_weights`` on the whole detector, and a parent's ``init_cfg`` (e.g.
    ``Normal`` on every ``Linear``) reaches every descendant; so :meth:`init_weights` loads the checkpoint again
    (it does not recurse into the ``transformers`` / ``sam2`` modules, whose own initialisers are not ours to run).

    Args:
        frozen (bool): No gradients, eval mode kept through ``train()``, forward under ``torch.no_grad()``.
        init_cfg: Must be None; weights come from ``checkpoint``.
    """

    out_strides: Tuple[int, ...]
    out_channels: Tuple[int, ...]

    def __init__(self, frozen: bool, init_cfg=None):
        if init_cfg is not None:
            raise ValueError(f'{type(self).__name__} loads its weights from `checkpoint=`; init_cfg={init_cfg!r} '
                             'would be ignored (or would overwrite them), so it is refused')
        super().__init__(init_cfg=None)
        self.frozen = bool(frozen)
        self._checkpoint = None  # the resolved path, once loaded

    def _set_frozen(self) -> None:
        if self.frozen:
            for p in self.parameters():
                p.requires_grad_(False)
            self.train(False)

    def train(self, mode: bool = True):
        """Set the training mode; a frozen backbone stays in eval mode (dropout, drop-path, RoPE jitter off)."""
        return super().train(mode and not self.frozen)

    def _grad_context(self):
        return torch.no_grad() if self.frozen else contextlib.nullcontext()

    def load_checkpoint(self, checkpoint: str):
        raise NotImplementedError

    def init_weights(self) -> None:
        """Restore the checkpoint's weights (see the class docstring); without a checkpoint, keep what is there."""
        if self._checkpoint is not None:
            print_log(f'{type(self).__name__}: init_weights restores {self._checkpoint}', logger='current',
                      level=logging.DEBUG)
            self.load_checkpoint(self._checkpoint)
        self._is_init = True

    @staticmethod
    def _warn_random(name: str, how_to_get: str) -> None:
        import warnings
        warnings.warn(f'{name}: checkpoint=None, so the weights are random. {how_to_get}', UserWarning, stacklevel=3)
