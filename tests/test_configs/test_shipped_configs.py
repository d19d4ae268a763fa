"""Every shipped config loads through MMEngine's Config (mmdet::/mmseg:: bases), builds with tiny encoders, follows
the paper's recipe (SPEC §7), and each experimental switch does what it says."""
import functools
import glob
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

import mmfusion.registry  # noqa: F401  (compat fixes and registries, before anything builds)
from mmfusion.models.backbones.base_vfm import VFMBackbone
from mmfusion.models.backbones.int8_linear import FrozenInt8Linear
from mmfusion.models.backbones.master_aux import mean_pad_channels
from tests._fusion_cfg import shrink_fusion_model
from tests._m2f import det_inputs, seg_inputs

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# The Mask2Former configs (the paper's and the demo's); configs/other_models/ (other mmdet/mmseg models on the fused
# backbone) have their own tests (test_other_models.py).
CONFIGS = sorted(p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
                 if f'{osp.sep}_base_{osp.sep}' not in p and f'{osp.sep}other_models{osp.sep}' not in p)
IDS = [osp.relpath(p, osp.join(ROOT, 'configs')) for p in CONFIGS]


def _is_demo(path):
    """The embedded demo's configs train random encoders from scratch (documented in each): no pretrained file by
    default (tools/demo.py uses the documented checkpoints when present), and their own learning rates."""
    return osp.relpath(path, osp.join(ROOT, 'configs')).startswith('demo' + osp.sep)
# SPEC §7: no weight decay on norms and embeddings, found by module type: norm layers, nn.Embedding (the head's
# query/level embeddings, the pixel decoder's level encoding), and the encoders' learned tokens and position
# embeddings, which are plain parameters added to the token sequence or map: held directly by a module that is not
# a layer, with a broadcast leading dimension of 1 (cls/register/mask tokens (1, n, C), position embeddings
# (1, N, C) or (1, C, h, w)).
NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)
LAYERS = (nn.Linear, nn.modules.conv._ConvNd, nn.Embedding) + NORMS


def _no_decay_by_type(owner: nn.Module, param: nn.Parameter) -> bool:
    if isinstance(owner, NORMS + (nn.Embedding, )):
        return True
    return not isinstance(owner, LAYERS) and param.dim() >= 2 and param.shape[0] == 1


def _registry(scope):
    if scope == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    else:
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    return MODELS


def _load(name, **options):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', name))
    if options:
        cfg.merge_from_dict(options)
    shrink_fusion_model(cfg.model)
    return cfg


def _build(cfg):
    return _registry(cfg.default_scope).build(cfg.model)


@functools.cache
def _shipped(path):
    """A shipped config with tiny encoders that keep their (absent) checkpoint paths, and its model, built once."""
    cfg = Config.fromfile(path)
    shrink_fusion_model(cfg.model, keep_checkpoints=True)
    return cfg, _build(cfg)


def _det_loss(model, num_classes=8):
    model.data_preprocessor.batch_augments = None
    data = model.data_preprocessor(det_inputs(2, (64, 128), num_classes=num_classes), training=True)
    losses = model(**data, mode='loss')
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    return losses


def _optimizer_groups(model, cfg):
    # The paper configs train with AmpOptimWrapper, which MMEngine builds only beside a GPU; the parameter groups
    # are the constructor's either way.
    amp_only = ('loss_scale', 'dtype', 'use_fsdp')
    wrapper = build_optim_wrapper(model, dict({k: v for k, v in cfg.optim_wrapper.items() if k not in amp_only},
                                              type='OptimWrapper'))
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g for g in wrapper.optimizer.param_groups for p in g['params']}


def test_configs_are_found():
    names = set(IDS)
    assert 'mask2former_d3s2_cityscapes.py' in names
    assert len(names) >= 19


@pytest.mark.parametrize('path', CONFIGS, ids=IDS)
def test_config_builds_without_reading_pretrained_files(path):
    cfg = Config.fromfile(path)
    assert cfg.default_scope in ('mmdet', 'mmseg')
    assert {'mmfusion.models', 'mmfusion.engine'} <= set(cfg.custom_imports.imports)
    assert 'mmfusion.RNGStateHook' in [h['type'] for h in cfg.get('custom_hooks', [])]  # exact resume everywhere
    bb = cfg.model.backbone
    if bb.type == 'mmfusion.MasterAuxBackbone':
        encoders = [bb.master, *(bb.auxiliary if isinstance(bb.auxiliary, list) else [bb.auxiliary])]
    else:
        encoders = [bb]
    _, model = _shipped(path)
    if _is_demo(path):
        assert all(e.checkpoint is None or e.checkpoint.startswith('checkpoints/') for e in encoders)
        return
    # Weights default to files under checkpoints/ (documented in the README), absent here: building must not read
    # them; init_weights (what the Runner calls before training) stops with the not-found message.
    assert all(e.checkpoint.startswith('checkpoints/') and not osp.exists(osp.join(ROOT, e.checkpoint))
               for e in encoders)
    with pytest.raises(FileNotFoundError, match='not found'):
        model.backbone.init_weights()


@pytest.mark.parametrize('path', CONFIGS, ids=IDS)
def test_recipe_of_every_parameter(path):
    """SPEC §7: backbone at lr x0.1 (tokens and embeddings too), head at the base lr, weight decay 0 on every norm,
    token and position/level/query embedding, frozen parameters absent, full-model clipping 0.01."""
    cfg, model = _shipped(path)
    groups = _optimizer_groups(model, cfg)
    base_lr, base_wd = cfg.optim_wrapper.optimizer.lr, cfg.optim_wrapper.optimizer.weight_decay
    backbone_mult = 0.1
    if _is_demo(path):  # from-scratch schedule: its own lr, the backbone at the base lr; every other rule holds
        backbone_mult = cfg.optim_wrapper.paramwise_cfg.custom_keys['backbone'].lr_mult
    else:
        assert (base_lr, base_wd) == (1e-4, 0.05)
    assert base_wd == 0.05
    assert cfg.optim_wrapper.clip_grad == dict(max_norm=0.01, norm_type=2)
    decay = cfg.optim_wrapper.paramwise_cfg.get('layer_decay_rate', 1.0)
    modules = dict(model.named_modules())
    checked = 0
    for name, param in model.named_parameters():
        if not param.requires_grad:
            assert name not in groups, f'frozen {name} is in the optimizer'
            continue
        group = groups[name]
        lr = base_lr * (backbone_mult if name.startswith('backbone.') else 1.0)
        if decay != 1 and name.startswith('backbone.master.'):
            master = model.backbone.master
            local = name[len('backbone.master.'):]
            lr *= decay**(master.get_num_layers() + 1 - master.get_layer_id(local))
        assert group['lr'] == pytest.approx(lr), name
        owner = modules[name.rsplit('.', 1)[0]] if '.' in name else model
        no_decay = _no_decay_by_type(owner, param)
        assert group.get('weight_decay', base_wd) == pytest.approx(0.0 if no_decay else base_wd), name
        checked += 1
    assert checked == len(groups)


@pytest.mark.parametrize('path', CONFIGS, ids=IDS)
def test_every_frozen_parameter_is_a_pretrained_one(path):
    _, model = _shipped(path)
    pretrained = set()
    for prefix, module in model.named_modules():
        if isinstance(module, VFMBackbone):
            pretrained |= {f'{prefix}.{n}' for n, _ in module.pretrained_parameters()}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen <= pretrained, sorted(frozen - pretrained)[:5]


@pytest.mark.parametrize('stride', [4, 8, 16, 32])
def test_inject_stride_key_alone_changes_the_experiment(stride):
    cfg = _load('mask2former_d3s2_cityscapes.py', **{'model.backbone.inject_stride': stride})
    model = _build(cfg)
    backbone = model.backbone
    assert backbone.auxiliary.out_strides == (stride, )
    i = (4, 8, 16, 32).index(stride)
    assert not list(backbone.master.pyramid.convs[i].parameters())
    _det_loss(model)
    model.eval()
    x = torch.rand(1, 3, 64, 128)
    with torch.no_grad():
        fused = model.neck(backbone(x))
        master = backbone.master(x)
        (aux, ) = backbone.auxiliary(x)
    assert torch.equal(fused[i], mean_pad_channels(aux, backbone.out_channels[i]))
    assert all(torch.equal(fused[j], master[j]) for j in range(4) if j != i)
    with torch.no_grad():
        res = model(**model.data_preprocessor(det_inputs(1, (64, 128), 8), False), mode='predict')
    assert res[0].pred_instances.masks.shape[1:] == (64, 128)


def test_aux_dtype_key_alone_stores_the_auxiliary_in_int8():
    float_model = _build(_load('mask2former_d3s2_cityscapes.py'))
    cfg = _load('mask2former_d3s2_cityscapes.py', **{'model.backbone.aux_dtype': 'qint8'})
    model = _build(cfg)
    aux = model.backbone.auxiliary
    assert any(isinstance(m, FrozenInt8Linear) for m in aux.modules())
    assert not any(type(m) is nn.Linear for m in aux.modules())
    assert all(type(m) is not FrozenInt8Linear for m in model.backbone.master.modules())
    groups = _optimizer_groups(model, cfg)
    assert not any(n.startswith('backbone.auxiliary.') for n in groups)
    model.train()
    _det_loss(model)
    assert any(p.grad is not None for p in model.backbone.master.parameters())
    # its checkpoint is a float one: it loads strictly into the model without the key, and back
    state = model.state_dict()
    assert state.keys() == float_model.state_dict().keys()
    float_model.load_state_dict(state)
    model.load_state_dict(float_model.state_dict())


# Table 6 settings and RQ5: (config, master trains its pretrained weights, auxiliary trains).
SWITCHES = [
    ('mask2former_d3s2_cityscapes.py', True, False),  # A
    ('ablations/mask2former_d3s2_fzmaster_cityscapes.py', False, False),  # B
    ('baselines/mask2former_s2d3_cityscapes.py', True, False),  # C
    ('ablations/mask2former_s2d3_fzmaster_cityscapes.py', False, False),  # D
    ('ablations/mask2former_d3s2_ftaux_cityscapes.py', True, True),  # RQ5
]


@pytest.mark.parametrize('name,master_trains,aux_trains', SWITCHES, ids=[s[0] for s in SWITCHES])
def test_freezing_switches_set_grads_modes_and_optimizer(name, master_trains, aux_trains):
    cfg = _load(name)
    model = _build(cfg)
    groups = _optimizer_groups(model, cfg)
    model.train()
    _det_loss(model)
    for role, trains in (('master', master_trains), ('auxiliary', aux_trains)):
        encoder = getattr(model.backbone, role)
        # DINOv3's mask token serves masked pretraining only and never trains.
        pretrained = {f'backbone.{role}.{n}': p for n, p in encoder.pretrained_parameters()
                      if not n.endswith('mask_token')}
        assert all(p.requires_grad == trains for p in pretrained.values())
        assert all((n in groups) == trains for n in pretrained)
        assert all(groups[n]['lr'] == pytest.approx(1e-5) for n in pretrained if trains)
        if trains:
            assert sum(p.grad.abs().sum() for p in pretrained.values()) > 0
        else:
            assert all(p.grad is None for p in pretrained.values())
        trunk = [m for prefix in encoder.pretrained_modules if getattr(encoder, prefix, None) is not None
                 for m in getattr(encoder, prefix).modules()]
        assert all(m.training == trains for m in trunk)


def test_fused_panoptic_model_predict():
    cfg = _load('mask2former_d3s2_coco_panoptic.py')
    cfg.model.data_preprocessor.batch_augments = None
    model = _build(cfg).eval()
    with torch.no_grad():
        res = model(**model.data_preprocessor(det_inputs(1, (64, 96), 133), False), mode='predict')
    assert res[0].pred_panoptic_seg.sem_seg.shape == (1, 64, 96)


def test_fused_semantic_model_loss_and_predict():
    cfg = _load('mask2former_d3s2_cityscapes_semantic.py')
    cfg.model.data_preprocessor.size = (64, 128)
    model = _build(cfg)
    losses = model(**model.data_preprocessor(seg_inputs(2, (64, 128), 19), True), mode='loss')
    assert torch.isfinite(sum(v for k, v in losses.items() if 'loss' in k))
    model.eval()
    with torch.no_grad():
        res = model(**model.data_preprocessor(seg_inputs(1, (64, 128), 19), False), mode='predict')
    assert res[0].pred_sem_seg.data.shape == (1, 64, 128)
