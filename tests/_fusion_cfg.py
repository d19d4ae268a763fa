"""Shrinking shipped mmfusion configs to test size: tiny encoders of the real architectures, tiny heads."""
from __future__ import annotations

import copy

from tests._m2f import shrink_mask2former_head
from tests.test_models.test_backbones.vfm_utils import TINY_HIERA, TINY_VIT


def _shrink_encoder(enc: dict) -> None:
    enc['checkpoint'] = None
    if enc['type'] == 'mmfusion.DINOv3ViT':
        enc['arch'] = dict(TINY_VIT)
    elif enc['type'] == 'mmfusion.SAM2Hiera':
        enc['arch'] = dict(TINY_HIERA)
    else:
        raise AssertionError(f'unexpected encoder {enc["type"]}')


def shrink_fusion_model(model_cfg) -> dict:
    """Tiny encoders (random init), neck channels re-derived from them, tiny Mask2Former head. In place."""
    from mmfusion.registry import MODELS
    bb = model_cfg['backbone']
    if bb['type'] == 'mmfusion.MasterAuxBackbone':
        _shrink_encoder(bb['master'])
        _shrink_encoder(bb['auxiliary'])
        built = MODELS.build(copy.deepcopy(bb))
        master_ch = built.master_channels
        neck = model_cfg['neck']
        neck['master_channels'] = list(master_ch)
        neck['aux_channels'] = [dict(zip(built.aux_strides, built.aux_channels))[s] for s in neck['aux_strides']]
    else:
        _shrink_encoder(bb)
        master_ch = MODELS.build(copy.deepcopy(bb)).out_channels
    head = model_cfg.get('panoptic_head') or model_cfg['decode_head']
    shrink_mask2former_head(head, master_ch)
    if 'train_cfg' in model_cfg and model_cfg['train_cfg'] and 'num_points' in model_cfg['train_cfg']:
        model_cfg['train_cfg']['num_points'] = 64
    if model_cfg.get('test_cfg') and 'max_per_image' in model_cfg['test_cfg']:
        model_cfg['test_cfg']['max_per_image'] = 5  # top-k over 6 queries x classes
    return model_cfg
