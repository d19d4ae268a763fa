"""MasterAuxBackbone: both pyramids, the auxiliary frozen (no grad, eval mode, no optimizer) and truncated."""
import json

import pytest
import torch
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import MODELS as ROOT_MODELS

from mmfusion.models.backbones import MasterAuxBackbone, MasterAuxOutputs
from mmfusion.models.necks import MetricGuidedNeck
from tests._stubs import StubPyramid  # noqa: F401  (registers the stand-in backbone)

MASTER = dict(type='StubPyramid', channels=(4, 8, 16, 32))
AUX = dict(type='StubPyramid', channels=(3, 6, 12, 24))


def _fused(**kwargs):
    backbone = MasterAuxBackbone(MASTER, AUX, aux_strides=(16, ), **kwargs)
    neck = MetricGuidedNeck(backbone.master_channels, backbone.aux_channels, aux_strides=backbone.aux_strides)
    return torch.nn.Sequential(backbone, neck)


def test_returns_both_pyramids_with_their_strides_and_channels():
    backbone = MasterAuxBackbone(MASTER, AUX, aux_strides=(8, 16))
    out = backbone(torch.rand(2, 3, 64, 96))
    assert isinstance(out, MasterAuxOutputs)
    assert [tuple(f.shape) for f in out.master] == [(2, 4, 16, 24), (2, 8, 8, 12), (2, 16, 4, 6), (2, 32, 2, 3)]
    assert [tuple(f.shape) for f in out.auxiliary] == [(2, 6, 8, 12), (2, 12, 4, 6)]
    assert (backbone.strides, backbone.master_channels) == ((4, 8, 16, 32), (4, 8, 16, 32))
    assert (backbone.aux_strides, backbone.aux_channels) == ((8, 16), (6, 12))


def test_auxiliary_stops_at_the_strides_it_must_provide():
    backbone = MasterAuxBackbone(MASTER, AUX, aux_strides=(16, ))
    backbone(torch.rand(1, 3, 64, 64))
    assert backbone.auxiliary.out_strides == (16, )
    assert backbone.auxiliary.stages_run == 2  # OS8 and OS16 stages; OS32 is never computed
    assert backbone.master.stages_run == 3


def test_auxiliary_parameters_are_frozen():
    backbone = MasterAuxBackbone(MASTER, AUX, aux_strides=(16, ))
    assert not any(p.requires_grad for p in backbone.auxiliary.parameters())
    assert all(p.requires_grad for p in backbone.master.parameters())


def test_auxiliary_gets_no_grad_and_master_does():
    model = _fused()
    model.train()
    sum(o.sum() for o in model(torch.rand(2, 3, 64, 64))).backward()
    backbone = model[0]
    assert all(p.grad is None for p in backbone.auxiliary.parameters())
    assert backbone.master.stem[0].weight.grad is not None


def test_auxiliary_runs_without_autograd_graph():
    out = MasterAuxBackbone(MASTER, AUX, aux_strides=(16, ))(torch.rand(1, 3, 64, 64))
    assert not out.auxiliary[0].requires_grad and out.master[0].requires_grad


def test_auxiliary_stays_in_eval_mode_through_train():
    backbone = MasterAuxBackbone(MASTER, AUX, aux_strides=(16, ))
    backbone.train()
    assert backbone.training and backbone.master.stages[0][1].training
    assert not any(m.training for m in backbone.auxiliary.modules())
    stats = backbone.auxiliary.stages[0][1].running_mean.clone()
    backbone(torch.rand(2, 3, 64, 64))
    assert torch.equal(backbone.auxiliary.stages[0][1].running_mean, stats)


def test_unfrozen_auxiliary_trains():
    backbone = MasterAuxBackbone(MASTER, AUX, aux_strides=(16, ), freeze_auxiliary=False)
    backbone.train()
    assert backbone.auxiliary.training
    sum(f.sum() for f in backbone(torch.rand(2, 3, 64, 64)).auxiliary).backward()
    assert backbone.auxiliary.stem[0].weight.grad is not None


def test_plain_adamw_over_trainable_params_excludes_auxiliary():
    model = _fused()
    optimizer = torch.optim.AdamW(p for p in model.parameters() if p.requires_grad)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g['params']}
    assert not in_optimizer & {id(p) for p in model[0].auxiliary.parameters()}
    assert {id(p) for p in model[0].master.parameters()} <= in_optimizer


def test_mmengine_constructor_with_paramwise_cfg_excludes_auxiliary():
    # Without a paramwise_cfg MMEngine hands model.parameters() (frozen ones included) to the optimizer; with one it
    # skips requires_grad=False parameters. Our configs always set one (norm/backbone multipliers).
    model = _fused()
    constructor = DefaultOptimWrapperConstructor(dict(optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05)),
                                                 paramwise_cfg=dict(norm_decay_mult=0.0))
    optimizer = constructor(model).optimizer
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g['params']}
    assert not in_optimizer & {id(p) for p in model[0].auxiliary.parameters()}
    assert {id(p) for p in model[0].master.parameters()} <= in_optimizer


def test_project_constructor_without_paramwise_cfg_excludes_auxiliary():
    from mmfusion.engine.optimizers import LayerDecayOptimWrapperConstructor
    model = _fused()
    optimizer = LayerDecayOptimWrapperConstructor(dict(optimizer=dict(type='AdamW', lr=1e-4)))(model).optimizer
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g['params']}
    assert not in_optimizer & {id(p) for p in model[0].auxiliary.parameters()}
    assert {id(p) for p in model[0].master.parameters()} <= in_optimizer


def test_conflicting_auxiliary_out_strides_fail():
    with pytest.raises(ValueError, match='set only aux_strides'):
        MasterAuxBackbone(MASTER, dict(AUX, out_strides=(8, )), aux_strides=(16, ))


def test_auto_aux_strides_from_profile(tmp_path):
    path = tmp_path / 'profile.json'
    path.write_text(json.dumps(dict(encoders=dict(sam2=dict(strides=[4, 8, 16, 32], EF=[6.6, 8.59, 17.13, 12.47])),
                                    selection=dict(master='dinov3', auxiliary='sam2'), meta={})))
    backbone = MasterAuxBackbone(MASTER, AUX, aux_strides='auto', profile=str(path))
    assert backbone.aux_strides == (16, )


def test_builds_from_root_registry_with_scope_prefix():
    cfg = dict(type='mmfusion.MasterAuxBackbone', master=dict(MASTER, type='mmfusion.StubPyramid'),
               auxiliary=dict(AUX, type='mmfusion.StubPyramid'), aux_strides=(16, ))
    backbone = ROOT_MODELS.build(cfg)
    assert isinstance(backbone, MasterAuxBackbone)


def test_tiny_dinov3_master_with_sam2_auxiliary_fuses_at_os16():
    from tests.test_models.test_backbones.vfm_utils import TINY_HIERA, TINY_VIT
    backbone = MasterAuxBackbone(dict(type='DINOv3ViT', arch=TINY_VIT, pyramid='paper', frozen=False),
                                 dict(type='SAM2Hiera', arch=TINY_HIERA), aux_strides=(16, ))
    blocks_run = []
    for block in backbone.auxiliary.trunk.blocks:
        block.register_forward_hook(lambda *args: blocks_run.append(1))
    neck = MetricGuidedNeck(backbone.master_channels, backbone.aux_channels, aux_strides=backbone.aux_strides)
    backbone.train()
    outs = neck(backbone(torch.rand(1, 3, 64, 96)))
    assert [tuple(o.shape[-2:]) for o in outs] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    assert tuple(o.shape[1] for o in outs) == backbone.master_channels
    assert len(blocks_run) == sum(TINY_HIERA['stages'][:3])  # the OS32 stage never runs
    assert not backbone.auxiliary.training
    sum(o.mean() for o in outs).backward()
    assert all(p.grad is None for p in backbone.auxiliary.parameters())
