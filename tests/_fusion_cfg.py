"""Shrinking shipped mmfusion configs to test size: tiny encoders of the real architectures, tiny heads."""
from __future__ import annotations

import copy

from tests._m2f import shrink_mask2former_head
from tests.test_models.test_backbones.hf_utils import tiny_hf_config
from tests.test_models.test_backbones.vfm_utils import TINY_HIERA, TINY_VIT


def shrink_encoder(enc: dict, keep_checkpoint: bool = False) -> dict:
    """A tiny encoder of the same family, in place; its checkpoint is dropped (random weights) unless kept."""
    if not keep_checkpoint:
        enc['checkpoint'] = None
    if enc['type'] == 'mmfusion.DINOv3ViT':
        enc['arch'] = dict(TINY_VIT)
    elif enc['type'] == 'mmfusion.SAM2Hiera':
        enc['arch'] = dict(TINY_HIERA)
    elif enc['type'] == 'mmfusion.HFBackbone':
        # The architecture a shipped config states in config= (building reads no file), tiny.
        if not enc.get('config'):
            raise AssertionError('a shipped HFBackbone states its architecture in config=dict(model_type=...)')
        enc['config'] = tiny_hf_config(enc['config']['model_type'])
    else:
        raise AssertionError(f'unexpected encoder {enc["type"]}')
    return enc


def shrink_fusion_model(model_cfg, keep_checkpoints: bool = False) -> dict:
    """Tiny encoders (random init) and a tiny Mask2Former head whose in_channels are the built backbone's. In place.

    Only the encoders and the head shrink: every fusion key (inject_stride, freezing, align) stays as configured.
    """
    from mmfusion.registry import MODELS
    bb = model_cfg['backbone']
    if bb['type'] == 'mmfusion.MasterAuxBackbone':
        shrink_encoder(bb['master'], keep_checkpoints)
        auxiliaries = bb['auxiliary'] if isinstance(bb['auxiliary'], (list, tuple)) else [bb['auxiliary']]
        for aux in auxiliaries:
            shrink_encoder(aux, keep_checkpoints)
    else:
        shrink_encoder(bb, keep_checkpoints)
    cfg = {k: v for k, v in copy.deepcopy(dict(bb)).items() if k != '_delete_'}
    channels = MODELS.build(cfg).out_channels
    head = model_cfg.get('panoptic_head') or model_cfg['decode_head']
    shrink_mask2former_head(head, channels)
    if 'train_cfg' in model_cfg and model_cfg['train_cfg'] and 'num_points' in model_cfg['train_cfg']:
        model_cfg['train_cfg']['num_points'] = 64
    if model_cfg.get('test_cfg') and 'max_per_image' in model_cfg['test_cfg']:
        model_cfg['test_cfg']['max_per_image'] = 5  # top-k over 6 queries x classes
    return model_cfg
