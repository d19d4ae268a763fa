"""Every shipped config loads through MMEngine's Config (mmdet::/mmseg:: bases) and builds, with tiny encoders."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config

import mmfusion  # noqa: F401
from tests._fusion_cfg import shrink_fusion_model
from tests._m2f import det_inputs, seg_inputs

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
                 if f'{osp.sep}_base_{osp.sep}' not in p)


def _registry(scope):
    if scope == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    else:
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    return MODELS


def test_configs_are_found():
    names = {osp.relpath(p, osp.join(ROOT, 'configs')) for p in CONFIGS}
    assert 'mask2former_d3s2_cityscapes.py' in names
    assert len(names) >= 15


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: osp.relpath(p, osp.join(ROOT, 'configs')))
def test_config_builds(path):
    cfg = Config.fromfile(path)
    assert cfg.default_scope in ('mmdet', 'mmseg')
    assert 'mmfusion' in cfg.custom_imports.imports
    # Weights default to files under checkpoints/ (documented in the README).
    bb = cfg.model.backbone
    encoders = [bb.master, bb.auxiliary] if bb.type == 'mmfusion.MasterAuxBackbone' else [bb]
    assert all(e.checkpoint.startswith('checkpoints/') for e in encoders)
    shrink_fusion_model(cfg.model)
    model = _registry(cfg.default_scope).build(cfg.model)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
    if bb.type == 'mmfusion.MasterAuxBackbone':
        assert all(not p.requires_grad for p in model.backbone.auxiliary.parameters())


def _fused_cfg(name):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', name))
    shrink_fusion_model(cfg.model)
    return cfg


def test_fused_instance_model_loss_and_predict():
    cfg = _fused_cfg('mask2former_d3s2_cityscapes.py')
    cfg.model.data_preprocessor.batch_augments = None
    model = _registry('mmdet').build(cfg.model)
    data = model.data_preprocessor(det_inputs(2, (64, 128), num_classes=8), training=True)
    losses = model(**data, mode='loss')
    assert {'loss_cls', 'loss_mask', 'loss_dice'} <= set(losses)
    sum(losses.values()).backward()
    master = model.backbone.master
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in master.parameters())
    assert all(p.grad is None for p in model.backbone.auxiliary.parameters())
    model.eval()
    with torch.no_grad():
        res = model(**model.data_preprocessor(det_inputs(1, (64, 128), 8), False), mode='predict')
    assert res[0].pred_instances.masks.shape[1:] == (64, 128)


def test_fused_panoptic_model_predict():
    cfg = _fused_cfg('mask2former_d3s2_coco_panoptic.py')
    cfg.model.data_preprocessor.batch_augments = None
    model = _registry('mmdet').build(cfg.model).eval()
    with torch.no_grad():
        res = model(**model.data_preprocessor(det_inputs(1, (64, 96), 133), False), mode='predict')
    assert res[0].pred_panoptic_seg.sem_seg.shape == (1, 64, 96)


def test_fused_semantic_model_loss_and_predict():
    cfg = _fused_cfg('mask2former_d3s2_cityscapes_semantic.py')
    cfg.model.data_preprocessor.size = (64, 128)
    model = _registry('mmseg').build(cfg.model)
    losses = model(**model.data_preprocessor(seg_inputs(2, (64, 128), 19), True), mode='loss')
    assert torch.isfinite(sum(v for k, v in losses.items() if 'loss' in k))
    model.eval()
    with torch.no_grad():
        res = model(**model.data_preprocessor(seg_inputs(1, (64, 128), 19), False), mode='predict')
    assert res[0].pred_sem_seg.data.shape == (1, 64, 128)
