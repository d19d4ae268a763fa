"""Activation checkpointing of the encoders (``with_cp=True``): the same gradients, and the blocks really recompute.

A checkpointed block keeps no activations in the forward pass and runs its forward again during backward, so a
module inside it is called twice per training step; counting those calls shows that checkpointing is on (a flag
that is set but never reaches the forward would leave the count at one and only cost the memory it was meant to
save). The hook sits on a module inside the block because transformers checkpoints a layer's ``forward``, not its
``__call__`` (hooks on the layer itself run once either way), and it is a pre-hook because torch's non-reentrant
checkpoint stops the recompute as soon as the saved tensors backward needs are back, which can be inside the
module's forward, before its (post-)hooks would run.
"""
import warnings

import pytest
import torch

from mmfusion.models.backbones import DINOv3ViT, SAM2Hiera
from mmfusion.models.backbones.master_aux import MasterAuxBackbone

from .vfm_utils import TINY_HIERA, TINY_VIT

# No stochastic depth and no RoPE jitter: the two models of a pair must compute the same function.
VIT = {**TINY_VIT, 'pos_embed_rescale': None}
HIERA = {**TINY_HIERA, 'drop_path_rate': 0.0}


def _build(cls, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)  # random weights
        return cls(**kwargs)


def _pair(cls, **kwargs):
    """The same encoder without and with checkpointing, same weights, in training mode."""
    plain, cp = _build(cls, **kwargs, with_cp=False), _build(cls, **kwargs, with_cp=True)
    cp.load_state_dict(plain.state_dict())
    return plain.train(), cp.train()


def _count_calls(modules):
    counts = [0] * len(modules)
    for i, module in enumerate(modules):
        module.register_forward_pre_hook(lambda *_, i=i: counts.__setitem__(i, counts[i] + 1))
    return counts


def _train_step(model, x):
    """Forward and backward of a loss that reads every output level."""
    outs = [o for o in model(x) if o is not None]
    sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs).backward()


def _assert_same_gradients(plain, cp):
    checked = 0
    for (name, a), b in zip(plain.named_parameters(), cp.parameters()):
        if a.requires_grad:
            assert a.grad is not None and b.grad is not None, name
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6, msg=name)
            checked += 1
    assert checked > 10


ENCODERS = {
    'dinov3': (DINOv3ViT, dict(arch=VIT), lambda m: [layer.mlp for layer in m.vit.model.layer]),
    'sam2_hiera': (SAM2Hiera, dict(arch=HIERA, frozen=False), lambda m: [block.mlp for block in m.trunk.blocks]),
}


@pytest.mark.parametrize('name', sorted(ENCODERS))
def test_checkpointing_gives_the_same_gradients(name):
    cls, kwargs, _ = ENCODERS[name]
    plain, cp = _pair(cls, **kwargs)
    x = torch.randn(2, 3, 64, 64)
    _train_step(plain, x)
    _train_step(cp, x)
    _assert_same_gradients(plain, cp)


@pytest.mark.parametrize('name', sorted(ENCODERS))
def test_checkpointed_blocks_run_twice_per_training_step(name):
    cls, kwargs, inner = ENCODERS[name]
    plain, cp = _pair(cls, **kwargs)
    plain_counts, cp_counts = _count_calls(inner(plain)), _count_calls(inner(cp))
    x = torch.randn(1, 3, 64, 64)
    _train_step(plain, x)
    _train_step(cp, x)
    assert plain_counts == [1] * len(plain_counts)
    assert cp_counts == [2] * len(cp_counts)  # forward, then the recompute in backward
    assert len(cp_counts) >= 3


@pytest.mark.parametrize('name', sorted(ENCODERS))
def test_no_recompute_without_gradients(name):
    """Evaluation (and frozen encoders) run under no_grad: nothing to recompute, each block runs once."""
    cls, kwargs, inner = ENCODERS[name]
    _, cp = _pair(cls, **kwargs)
    counts = _count_calls(inner(cp))
    with torch.no_grad():
        cp(torch.randn(1, 3, 64, 64))
    assert counts == [1] * len(counts)


def test_fused_backbone_checkpoints_the_trainable_master_only():
    """``model.backbone.master.with_cp=True`` (the 7B config): master blocks recompute, the frozen auxiliary's run
    once under no_grad."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        fused = MasterAuxBackbone(master=dict(type='mmfusion.DINOv3ViT', arch=VIT, with_cp=True),
                                  auxiliary=dict(type='mmfusion.SAM2Hiera', arch=HIERA), inject_stride=16).train()
    master_counts = _count_calls([layer.mlp for layer in fused.master.vit.model.layer])
    aux_counts = _count_calls([block.mlp for block in fused.auxiliary.trunk.blocks])
    out = fused(torch.randn(1, 3, 64, 64))
    sum(m.sum() for m in out.master if m is not None).backward()
    assert master_counts == [2] * len(master_counts)
    assert aux_counts == [1] * len(aux_counts)
