"""FusionOptimWrapperConstructor: per-parameter lr and weight decay, frozen parameters left out."""
import warnings

import pytest
import torch.nn as nn
from mmengine.optim import DefaultOptimWrapperConstructor, build_optim_wrapper

from mmfusion.engine.optimizers import FusionOptimWrapperConstructor
from mmfusion.models.backbones import DINOv3ViT, SAM2Hiera
from tests.test_models.test_backbones.vfm_utils import TINY_HIERA, TINY_VIT

LR, WD, RATE = 1e-4, 0.05, 0.5
NUM_LAYERS = TINY_VIT['num_hidden_layers']  # 3
EMBED = dict(lr_mult=1.0, decay_mult=0.0)
# Mask2Former's paramwise rules (mmdet's configs, the reference's recipe).
M2F_PARAMWISE = dict(custom_keys={'backbone': dict(lr_mult=0.1, decay_mult=1.0), 'query_embed': EMBED,
                                  'query_feat': EMBED, 'level_embed': EMBED}, norm_decay_mult=0.0)


class Decoder(nn.Module):

    def __init__(self):
        super().__init__()
        self.query_embed = nn.Embedding(4, 8)
        self.query_feat = nn.Embedding(4, 8)
        self.level_embed = nn.Embedding(3, 8)
        self.norm = nn.LayerNorm(8)
        self.proj = nn.Linear(8, 8)


class Backbone(nn.Module):

    def __init__(self):
        super().__init__()
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', UserWarning)
            self.master = DINOv3ViT(arch=dict(TINY_VIT), pyramid='paper', out_strides=(8, 16))
            self.auxiliary = SAM2Hiera(arch=dict(TINY_HIERA), out_strides=(16, ), frozen=True)


class Detector(nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = Backbone()
        self.decoder = Decoder()


@pytest.fixture(scope='module')
def model():
    return Detector()


def groups_by_name(model, optim_wrapper):
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for group in optim_wrapper.optimizer.param_groups:
        for p in group['params']:
            assert names[id(p)] not in out, 'parameter in two groups'
            out[names[id(p)]] = (group['lr'], group['weight_decay'])
    return out


def build(model, paramwise_cfg, constructor=FusionOptimWrapperConstructor):
    cfg = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=LR, weight_decay=WD))
    return constructor(cfg, paramwise_cfg)(model)


@pytest.fixture(scope='module')
def groups(model):
    return groups_by_name(model, build(model, {**M2F_PARAMWISE, 'layer_decay_rate': RATE}))


@pytest.mark.parametrize('name,layer_id', [('backbone.master.vit.embeddings.patch_embeddings.weight', 0),
                                           ('backbone.master.vit.embeddings.cls_token', 0),
                                           ('backbone.master.vit.model.layer.0.mlp.up_proj.weight', 1),
                                           ('backbone.master.vit.model.layer.2.attention.q_proj.weight', 3),
                                           ('backbone.master.vit.norm.weight', NUM_LAYERS + 1),
                                           ('backbone.master.pyramid.convs.0.weight', NUM_LAYERS + 1)])
def test_vit_lr_decays_with_depth_on_top_of_backbone_lr_mult(groups, name, layer_id):
    assert groups[name][0] == pytest.approx(LR * 0.1 * RATE**(NUM_LAYERS + 1 - layer_id))


def test_backbone_norms_lose_weight_decay_despite_the_backbone_custom_key(groups):
    # MMEngine alone gives the 'backbone' custom key's decay to the encoders' LayerNorms; norm_decay_mult composes.
    assert groups['backbone.master.vit.model.layer.1.norm1.weight'][1] == 0.0
    assert groups['backbone.master.vit.norm.bias'][1] == 0.0
    assert groups['backbone.master.vit.model.layer.1.mlp.up_proj.weight'][1] == pytest.approx(WD)


def test_stock_constructor_gives_backbone_norms_weight_decay(model):
    stock = groups_by_name(model, build(model, M2F_PARAMWISE, DefaultOptimWrapperConstructor))
    assert stock['backbone.master.vit.model.layer.1.norm1.weight'][1] == pytest.approx(WD)


def test_no_decay_keys_zero_the_decay_and_keep_the_backbone_lr(model):
    groups = groups_by_name(model, build(model, {**M2F_PARAMWISE, 'no_decay_keys': ('cls_token', 'register_tokens')}))
    for name in ('backbone.master.vit.embeddings.cls_token', 'backbone.master.vit.embeddings.register_tokens'):
        assert groups[name] == (pytest.approx(LR * 0.1), 0.0)
    assert groups['backbone.master.vit.embeddings.patch_embeddings.weight'][1] == pytest.approx(WD)


def test_mask_token_is_not_trained(groups):
    assert 'backbone.master.vit.embeddings.mask_token' not in groups


@pytest.mark.parametrize('name', ['decoder.query_embed.weight', 'decoder.query_feat.weight',
                                  'decoder.level_embed.weight'])
def test_embeddings_have_no_weight_decay_and_full_lr(groups, name):
    assert groups[name] == (pytest.approx(LR), 0.0)


def test_decoder_norm_has_no_weight_decay(groups):
    assert groups['decoder.norm.weight'] == (pytest.approx(LR), 0.0)


def test_decoder_linear_keeps_defaults(groups):
    assert groups['decoder.proj.weight'] == (pytest.approx(LR), pytest.approx(WD))


def test_frozen_auxiliary_is_left_out(model, groups):
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(groups) == trainable
    assert not any(n.startswith('backbone.auxiliary.') for n in groups)


def test_frozen_left_out_even_without_paramwise_cfg(model):
    ours = groups_by_name(model, build(model, None))
    stock = groups_by_name(model, build(model, None, DefaultOptimWrapperConstructor))
    assert any(n.startswith('backbone.auxiliary.') for n in stock)  # what MMEngine does
    assert not any(n.startswith('backbone.auxiliary.') for n in ours)


def test_no_decay_by_default(model):
    groups = groups_by_name(model, build(model, M2F_PARAMWISE))
    assert groups['backbone.master.vit.embeddings.patch_embeddings.weight'][0] == pytest.approx(LR * 0.1)


def test_decay_restricted_to_prefixes(model):
    groups = groups_by_name(model, build(model, {**M2F_PARAMWISE, 'layer_decay_rate': RATE,
                                                 'layer_decay_prefixes': ['backbone.other']}))
    assert groups['backbone.master.vit.embeddings.patch_embeddings.weight'][0] == pytest.approx(LR * 0.1)


def test_hiera_master_decays_by_its_own_layer_ids():
    model = nn.Module()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        model.backbone = SAM2Hiera(arch=dict(TINY_HIERA), frozen=False)
    groups = groups_by_name(model, build(model, {'layer_decay_rate': RATE}))
    num = len(model.backbone.trunk.blocks)  # 5
    assert groups['backbone.trunk.patch_embed.proj.weight'][0] == pytest.approx(LR * RATE**(num + 1))
    assert groups['backbone.trunk.blocks.4.mlp.layers.0.weight'][0] == pytest.approx(LR * RATE)


def test_built_from_config_by_registry_name(model):
    wrapper = build_optim_wrapper(model, dict(
        type='OptimWrapper', constructor='mmfusion.FusionOptimWrapperConstructor',
        optimizer=dict(type='AdamW', lr=LR, weight_decay=WD),
        paramwise_cfg={**M2F_PARAMWISE, 'layer_decay_rate': RATE}))
    groups = groups_by_name(model, wrapper)
    assert groups['backbone.master.vit.embeddings.cls_token'][0] == pytest.approx(LR * 0.1 * RATE**(NUM_LAYERS + 1))


def test_invalid_rate_is_rejected():
    with pytest.raises(ValueError, match='layer_decay_rate'):
        FusionOptimWrapperConstructor(dict(optimizer=dict(type='AdamW', lr=LR)), dict(layer_decay_rate=1.5))


def test_every_embedding_has_no_weight_decay_whatever_its_name():
    """detectron2 Mask2Former's rule (WEIGHT_DECAY_EMBED = 0) by type: an nn.Embedding no key names, as mmdet's
    pixel decoder level_encoding, loses its decay; a Linear beside it keeps the optimizer's."""
    model = nn.Module()
    model.level_encoding = nn.Embedding(3, 8)
    model.proj = nn.Linear(8, 8)
    groups = groups_by_name(model, build(model, dict(custom_keys={})))
    assert groups['level_encoding.weight'] == (LR, 0.0)
    assert groups['proj.weight'] == (LR, WD)
    stock = groups_by_name(model, build(model, dict(custom_keys={}), DefaultOptimWrapperConstructor))
    assert stock['level_encoding.weight'] == (LR, WD)  # what MMEngine alone does


def test_layer_decay_prefixes_without_a_decay_rate_are_refused():
    with pytest.raises(ValueError, match=r'layer_decay_prefixes=\[.backbone.master.\].*layer_decay_rate is 1'):
        FusionOptimWrapperConstructor(dict(optimizer=dict(type='AdamW', lr=LR)),
                                      dict(layer_decay_prefixes=['backbone.master']))
