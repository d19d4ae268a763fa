"""Sharding the fused model with FSDP (MMEngine's ``FlexibleRunner`` + ``FSDPStrategy``).

:func:`fusion_wrap_policy` says which modules become their own FSDP unit: every transformer block of the encoders
(by class name, e.g. transformers' ``DINOv3ViTLayer``) and every fully frozen encoder (the auxiliary) as one unit.
Everything else (the master's embeddings, final norm and pyramid, the neck, the Mask2Former head) stays in the root
unit. A config names it by its registry key::

    strategy = dict(
        type='FSDPStrategy',
        model_wrapper=dict(
            auto_wrap_policy=dict(type='mmfusion.fusion_wrap_policy', layer_classes=['DINOv3ViTLayer'])))

Why the frozen auxiliary is a unit of its own: FSDP flattens the parameters of a unit into one tensor, and with
``use_orig_params=False`` that tensor needs one ``requires_grad`` for all of them. A unit holding only frozen
parameters satisfies this whatever ``use_orig_params`` is, is sharded like the rest (a 7B master's auxiliary is not
replicated on every rank), and is moved to the device by FSDP (an ignored module would not be). The root unit still
mixes trainable parameters with the master's frozen ``mask_token``: MMEngine's default ``use_orig_params=True``
allows that, and it keeps the original parameter names, which the optimizer constructor
(:class:`~mmfusion.engine.optimizers.FusionOptimWrapperConstructor`: frozen parameters left out, no decay on norms and
embeddings) and checkpoints rely on.
"""
from __future__ import annotations

import warnings
from functools import partial
from typing import Dict, Sequence, Tuple

import torch.nn as nn
from mmengine.model import is_model_wrapper
from mmengine.registry import FUNCTIONS as MMENGINE_FUNCTIONS
from mmengine.registry import Registry
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp import StateDictType
from torch.distributed.fsdp.wrap import lambda_auto_wrap_policy

from mmfusion.models.backbones.base_vfm import VFMBackbone

# MMEngine's FSDP wrapper looks ``auto_wrap_policy`` up in its root FUNCTIONS registry; a child with the 'mmfusion'
# scope makes ``type='mmfusion.fusion_wrap_policy'`` resolvable from any config scope.
FUNCTIONS = MMENGINE_FUNCTIONS.children.get('mmfusion') or Registry(
    'function', parent=MMENGINE_FUNCTIONS, scope='mmfusion')

#: Transformer blocks of the encoders mmfusion builds (transformers' DINOv3, sam2's Hiera).
BLOCK_CLASSES = ('DINOv3ViTLayer', 'MultiScaleBlock')


def _is_frozen_encoder(module: nn.Module) -> bool:
    params = list(module.parameters())
    return isinstance(module, VFMBackbone) and bool(params) and not any(p.requires_grad for p in params)


def _own_unit(module: nn.Module, layer_classes: Sequence[str], frozen_encoders: bool) -> bool:
    return type(module).__name__ in layer_classes or (frozen_encoders and _is_frozen_encoder(module))


@FUNCTIONS.register_module()
def fusion_wrap_policy(module: nn.Module,
                       recurse: bool,
                       nonwrapped_numel: int,
                       layer_classes: Sequence[str] = ('DINOv3ViTLayer', ),
                       frozen_encoders: bool = True) -> bool:
    """FSDP auto-wrap policy: one unit per transformer block and one per fully frozen encoder.

    A policy in torch's callable form (``module, recurse, nonwrapped_numel``), built on torch's
    ``lambda_auto_wrap_policy``; MMEngine binds the keyword arguments from the config.

    Args:
        module (nn.Module): The module FSDP asks about.
        recurse (bool): True when FSDP asks whether to look inside ``module``; False when it asks whether to wrap it.
        nonwrapped_numel (int): Parameters of ``module`` not yet in a unit (unused: units follow the structure).
        layer_classes (Sequence[str]): Class names of the blocks that become units. Default: ``('DINOv3ViTLayer',)``
            (the DINOv3 master's blocks); add ``'MultiScaleBlock'`` to shard a fine-tuned SAM2 Hiera block by block.
        frozen_encoders (bool): Make every mmfusion encoder whose parameters are all frozen (the auxiliary) a unit.
            Default: True.

    Returns:
        bool: Whether to recurse into / wrap ``module``.
    """
    unknown = [c for c in layer_classes if not isinstance(c, str)]
    if unknown:
        raise TypeError(f'fusion_wrap_policy: layer_classes must be class names (str), got {unknown!r}; e.g. '
                        f'layer_classes={list(BLOCK_CLASSES)!r}')
    lambda_fn = partial(_own_unit, layer_classes=tuple(layer_classes), frozen_encoders=frozen_encoders)
    return lambda_auto_wrap_policy(module, recurse, nonwrapped_numel, lambda_fn=lambda_fn)


def state_dict_shapes(model: nn.Module) -> Dict[str, Tuple[int, ...]]:
    """The keys of ``model``'s state dict with their full (unsharded) shapes, without gathering any weight.

    For a plain module or a DDP-style wrapper these are its (inner) module's ``state_dict()`` entries. For an FSDP
    root they come from FSDP's sharded state dict, whose entries know their global shapes (one small metadata
    exchange, so every rank must call it). Calling ``state_dict()`` on the module inside an FSDP wrapper instead would
    gather every unit's weights, report the root unit's as flat shards, and mark the inner units as roots, which
    breaks the next load or forward of the wrapper.

    Args:
        model (nn.Module): A module, or a model wrapper (DDP, FSDP).

    Returns:
        dict[str, tuple[int, ...]]: State-dict key -> shape.
    """
    if isinstance(model, FSDP):
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', FutureWarning)  # torch's notice that ShardedTensor becomes DTensor
            with FSDP.state_dict_type(model, StateDictType.SHARDED_STATE_DICT):
                return {k: tuple(v.shape) for k, v in model.state_dict().items()}
    module = model.module if is_model_wrapper(model) else model
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}
