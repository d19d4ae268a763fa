"""The channel lists written by hand in configs (encoders.py's dinov3_channels / sam2_channels, the DINOv2 config's
master_channels, the demo's in_channels) are the channels the full-size encoders really give: built on the meta
device (no memory, no weights), not replaced by a test helper."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config

import mmfusion.registry  # noqa: F401  (compat fixes and registries)
from mmfusion.apis.runner_utils import parameters_on_meta
from mmfusion.registry import MODELS

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(osp.relpath(p, osp.join(ROOT, 'configs'))
                 for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
                 if f'{osp.sep}_base_{osp.sep}' not in p)


def _on_meta(cfg: dict):
    cfg = {k: v for k, v in dict(cfg).items() if k != '_delete_'}
    with parameters_on_meta():  # sam2's Hiera reads .item() while building: torch.device('meta') cannot
        return MODELS.build(cfg)


def test_encoders_variables_are_the_full_size_encoders_channels():
    base = Config.fromfile(osp.join(ROOT, 'configs', '_base_', 'encoders.py'))
    assert list(_on_meta(base.dinov3_vitb16).out_channels) == base.dinov3_channels
    assert list(_on_meta(base.sam2_hiera_bplus).out_channels) == base.sam2_channels


@pytest.mark.parametrize('name', CONFIGS)
def test_pyramid_readers_in_channels_are_the_backbones_pyramid(name):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', name))
    backbone = _on_meta(cfg.model.backbone)
    assert next(backbone.parameters()).device.type == 'meta'
    channels = list(backbone.out_channels)  # the fused pyramid has the master's (the auxiliary's maps are aligned)
    neck = cfg.model.get('neck')
    if isinstance(neck, (list, tuple)):  # [MetricGuidedNeck, FPN / ChannelMapper]: the second reads the pyramid
        assert list(neck[1].in_channels) == channels, name
    elif neck is not None and 'MetricGuidedNeck' not in neck.type:  # a single encoder read by a stock neck
        assert list(neck.in_channels) == channels, name
    else:  # the heads read the (fused) pyramid: Mask2Former, UperNet and its auxiliary FCN head (one level)
        head = cfg.model.get('panoptic_head') or cfg.model.decode_head
        assert list(head.in_channels) == channels, name
        aux = cfg.model.get('auxiliary_head')
        if aux:
            assert aux.in_channels == channels[aux.in_index], name
