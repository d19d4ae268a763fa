"""mmfusion.SAM2Hiera: shapes, parity with sam2's own image encoder, early stop, freezing, checkpoints."""
import math
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule

from mmfusion.models.backbones import SAM2Hiera
from mmfusion.models.backbones.checkpoint_io import CheckpointMismatchError
from mmfusion.models.backbones.sam2_hiera import SAM2_ARCHS
from mmfusion.registry import MODELS

from .vfm_utils import TINY_HIERA, TINY_HIERA_CHANNELS, sam2_checkpoint, sam2_encoder

SIZES = [(64, 64), (64, 96), (50, 75), (20, 36)]  # square, non-square, odd, smaller than one padding unit
STRIDES = (4, 8, 16, 32)


def tiny(**kwargs):
    """Built, then initialised as the Runner does before training (which reads ``checkpoint``)."""
    kwargs.setdefault('arch', dict(TINY_HIERA))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)  # random weights
        model = SAM2Hiera(**kwargs)
    model.init_weights()
    return model


@pytest.fixture(scope='module')
def encoder():
    return sam2_encoder(seed=3)


@pytest.fixture(scope='module')
def sam2_pt(tmp_path_factory, encoder):
    path = tmp_path_factory.mktemp('sam2') / 'sam2.1_hiera_tiny_test.pt'
    torch.save(sam2_checkpoint(encoder), path)
    return str(path)


# ---------------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize('size', SIZES)
def test_trunk_output_shapes(size):
    model = tiny()
    outs = model(torch.randn(2, 3, *size))
    assert model.out_channels == TINY_HIERA_CHANNELS and model.out_strides == STRIDES
    assert [tuple(o.shape) for o in outs] == [(2, c, math.ceil(size[0] / s), math.ceil(size[1] / s))
                                               for c, s in zip(TINY_HIERA_CHANNELS, STRIDES)]


@pytest.mark.parametrize('size', [(64, 96), (50, 75)])
def test_neck_output_shapes(size):
    model = tiny(output='neck', neck_cfg=dict(d_model=32))
    outs = model(torch.randn(1, 3, *size))
    assert model.out_channels == (32, ) * 4
    assert [tuple(o.shape) for o in outs] == [(1, 32, math.ceil(size[0] / s), math.ceil(size[1] / s)) for s in STRIDES]


def test_base_plus_preset_channels_and_padding():
    cfg = SAM2_ARCHS['base_plus']
    assert (cfg['embed_dim'], cfg['num_heads'], cfg['stages'], cfg['global_att_blocks'], cfg['window_spec'],
            cfg['window_pos_embed_bkg_spatial_size']) == (112, 2, (2, 3, 16, 3), (12, 16, 20), (8, 4, 14, 7), (14, 14))
    # Channels without building the 80M-parameter model: Hiera doubles the width at every stage.
    assert [cfg['embed_dim'] * 2**i for i in range(4)] == [112, 224, 448, 896]
    assert set(SAM2_ARCHS) == {'tiny', 'small', 'base_plus', 'large'}


def test_unavailable_stride_is_rejected():
    with pytest.raises(ValueError, match='not available'):
        tiny(out_strides=(16, 64))


def test_build_by_registry_name():
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        model = MODELS.build(dict(type='mmfusion.SAM2Hiera', arch=dict(TINY_HIERA), out_strides=(4, 8, 16, 32),
                                  frozen=True))
    assert isinstance(model, SAM2Hiera)


def test_random_init_warns():
    with pytest.warns(UserWarning, match='random'):
        SAM2Hiera(arch=dict(TINY_HIERA))


# ---------------------------------------------------------------------------------------------------- parity


def test_trunk_parity_with_sam2(encoder, sam2_pt):
    model = tiny(checkpoint=sam2_pt)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = encoder.trunk(x)
    for ours, theirs in zip(model(x), expected, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_trunk_parity_with_sam2_on_padded_input(encoder, sam2_pt):
    """An odd-sized input equals sam2's trunk on the zero-padded image, cropped."""
    model = tiny(checkpoint=sam2_pt)
    x = torch.randn(1, 3, 50, 75)
    with torch.no_grad():
        expected = encoder.trunk(F.pad(x, (0, 21, 0, 14)))
    for ours, theirs in zip(model(x), expected, strict=True):
        torch.testing.assert_close(ours, theirs[..., :ours.shape[-2], :ours.shape[-1]], atol=1e-5, rtol=1e-5)


def test_neck_parity_with_sam2(encoder, sam2_pt):
    model = tiny(checkpoint=sam2_pt, output='neck', neck_cfg=dict(d_model=32))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = encoder(x)['backbone_fpn']
    for ours, theirs in zip(model(x), expected, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------- early stop


def test_os16_only_keeps_and_runs_the_first_three_stages(sam2_pt):
    model = tiny(checkpoint=sam2_pt, out_strides=(16, ))
    stage_ends = model.trunk.stage_ends
    assert len(model.trunk.blocks) == stage_ends[2] + 1 < stage_ends[3] + 1
    assert model.out_channels == (32, )


def test_os16_only_equals_the_full_trunk_at_os16(sam2_pt):
    full, early = tiny(checkpoint=sam2_pt), tiny(checkpoint=sam2_pt, out_strides=(16, ))
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(early(x)[0], full(x)[2])


def test_dropped_blocks_are_not_reported_as_unexpected(sam2_pt):
    model = tiny(out_strides=(8, 16))
    report = model.load_checkpoint(sam2_pt)
    assert report.unexpected == []
    assert any(k.startswith('trunk.blocks.4.') for k in report.skipped)
    assert any(k.startswith('neck.') for k in report.skipped)


# ---------------------------------------------------------------------------------------------------- frozen


def test_frozen_by_default_has_no_trainable_parameters():
    assert not any(p.requires_grad for p in tiny().parameters())


def test_frozen_stays_in_eval_mode_through_train():
    model = tiny()
    model.train()
    assert model.training and not any(m.training for m in model.trunk.modules())


def test_frozen_gets_no_gradients_after_backward():
    backbone = tiny(out_strides=(16, ))
    head = nn.Conv2d(32, 1, 1)
    head(backbone(torch.randn(1, 3, 32, 32, requires_grad=True))[0]).sum().backward()
    assert head.weight.grad is not None
    assert all(p.grad is None for p in backbone.parameters())


def test_skipped_stride_is_not_returned_and_later_stages_still_run():
    model = tiny(skip_strides=(16, ))
    outs = model(torch.randn(1, 3, 64, 64))
    assert outs[2] is None and outs[3].shape == (1, TINY_HIERA_CHANNELS[3], 2, 2)
    assert len(tiny(skip_strides=(32, )).trunk.blocks) == sum(TINY_HIERA['stages'][:3])


def test_trainable_hiera_gets_gradients_with_checkpointing():
    model = tiny(frozen=False, with_cp=True, arch={**TINY_HIERA, 'drop_path_rate': 0.0}).train()
    model(torch.randn(1, 3, 32, 32))[-1].sum().backward()
    assert model.training and all(p.grad is not None for p in model.trunk.blocks.parameters())


# ---------------------------------------------------------------------------------------------------- checkpoints


def test_building_reads_no_file_and_init_weights_says_where_and_how(tmp_path):
    model = SAM2Hiera(arch='base_plus', out_strides=(4, ), checkpoint=str(tmp_path / 'nope.pt'))
    with pytest.raises(FileNotFoundError, match='sam2.1_hiera_base_plus.pt') as err:
        model.init_weights()
    assert 'nope.pt' in str(err.value) and 'Apache-2.0' in str(err.value)


def test_missing_keys_are_named(encoder, tmp_path):
    ckpt = sam2_checkpoint(encoder)
    del ckpt['model']['image_encoder.trunk.blocks.2.attn.qkv.weight'], ckpt['model']['image_encoder.trunk.pos_embed']
    torch.save(ckpt, tmp_path / 'broken.pt')
    with pytest.raises(CheckpointMismatchError) as err:
        tiny(checkpoint=str(tmp_path / 'broken.pt'))
    assert 'trunk.blocks.2.attn.qkv.weight' in str(err.value) and 'trunk.pos_embed' in str(err.value)


def test_not_a_sam2_checkpoint_is_named(tmp_path):
    torch.save({'model': {'backbone.conv.weight': torch.zeros(1)}}, tmp_path / 'other.pt')
    with pytest.raises(CheckpointMismatchError, match='backbone.conv.weight'):
        tiny(checkpoint=str(tmp_path / 'other.pt'))


def test_checkpoint_with_code_is_refused(tmp_path):
    """weights_only loading: a pickle that would call a function is rejected."""
    torch.save({'model': {}, 'hook': print}, tmp_path / 'evil.pt')
    with pytest.raises(Exception, match='(?i)weights.only|unsupported global'):
        tiny(checkpoint=str(tmp_path / 'evil.pt'))


def test_init_weights_leaves_loaded_weights_untouched(sam2_pt):

    class Detector(BaseModule):

        def __init__(self):
            super().__init__(init_cfg=dict(type='Normal', layer=['Linear', 'Conv2d', 'LayerNorm'], std=3.0))
            self.backbone = SAM2Hiera(arch=dict(TINY_HIERA), checkpoint=sam2_pt)
            self.head = nn.Linear(2, 2)

    det = Detector()
    before = tiny(checkpoint=sam2_pt).state_dict()
    det.init_weights()  # the parent's Normal(std=3) init reaches Hiera's Linear and LayerNorm layers
    after = det.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
