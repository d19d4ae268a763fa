"""mmfusion.DINOv3ViT: shapes, parity with transformers' DINOv3, freezing, checkpoints."""
import math
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from transformers import DINOv3ViTBackbone, DINOv3ViTConfig

from mmfusion.models.backbones import DINOv3ViT
from mmfusion.models.backbones.checkpoint_io import CheckpointMismatchError
from mmfusion.models.backbones.dinov3 import DINOV3_ARCHS, dinov3_config
from mmfusion.registry import MODELS

from .vfm_utils import TINY_VIT, hf_dinov3, hf_patch_map, hf_to_meta

SIZES = [(64, 64), (48, 80), (50, 75), (17, 33)]  # square, non-square, odd, smaller than two patches


def tiny(**kwargs):
    """Built, then initialised as the Runner does before training (which reads ``checkpoint``)."""
    kwargs.setdefault('arch', dict(TINY_VIT))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)  # random weights
        model = DINOv3ViT(**kwargs)
    model.init_weights()
    return model.eval()


@pytest.fixture(scope='module')
def reference():
    return hf_dinov3(seed=1)


@pytest.fixture(scope='module')
def meta_pth(tmp_path_factory, reference):
    path = tmp_path_factory.mktemp('dinov3') / 'dinov3_tiny.pth'
    torch.save(hf_to_meta(reference), path)
    return str(path)


def raw(**kwargs):
    """The parameter-free 'paper' pyramid: the ViT's own features at every stride."""
    return tiny(pyramid=dict(type='paper', project=False), **kwargs)


# ---------------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize('size', SIZES)
@pytest.mark.parametrize('pyramid,channels', [('paper', (128, 256, 512, 1024)), ('simple_fpn', (256, ) * 4),
                                              ('multilayer', (32, ) * 4)])
def test_output_shapes(pyramid, channels, size):
    model = tiny(pyramid=pyramid)
    outs = model(torch.randn(2, 3, *size))
    assert model.out_channels == channels and model.out_strides == (4, 8, 16, 32)
    assert [tuple(o.shape) for o in outs] == [(2, c, math.ceil(size[0] / s), math.ceil(size[1] / s))
                                               for c, s in zip(channels, (4, 8, 16, 32))]


def test_subset_of_strides_and_custom_channels():
    model = tiny(out_strides=(8, 16), pyramid=dict(type='simple_fpn', channels=(24, 40)))
    outs = model(torch.randn(1, 3, 50, 75))
    assert model.out_channels == (24, 40)
    assert [tuple(o.shape) for o in outs] == [(1, 24, 7, 10), (1, 40, 4, 5)]


def test_paper_pyramid_is_nearest_resampling_then_1x1_conv():
    model = tiny(pyramid='paper')
    x = torch.randn(1, 3, 64, 96)
    base = model.block_maps(x)[2]
    expected = model.pyramid.convs[0](F.interpolate(base, scale_factor=4, mode='nearest'))
    torch.testing.assert_close(model(x)[0], expected)


def test_multilayer_taps_evenly_spaced_blocks_and_drops_unused_blocks():
    model = tiny(pyramid='multilayer', out_strides=(8, 16))
    assert model.pyramid.taps == (1, 2)  # ceil((i + 1) * 3 / 2) - 1
    deep = tiny(pyramid=dict(type='multilayer', layers=(0, 1)), out_strides=(8, 16))
    assert len(deep.vit.model.layer) == 2  # block 2 is never read, so it is not kept


def test_arch_presets_match_released_models():
    b16 = dinov3_config('vitb16')
    assert (b16.hidden_size, b16.num_hidden_layers, b16.num_attention_heads, b16.intermediate_size,
            b16.num_register_tokens, b16.patch_size) == (768, 12, 12, 3072, 4, 16)
    assert dinov3_config('vitl16').hidden_size == 1024 and dinov3_config('vitl16').num_hidden_layers == 24
    assert dinov3_config('vits16').hidden_size == 384
    assert {'vits16', 'vitb16', 'vitl16'} <= set(DINOV3_ARCHS)


def test_arch_dict_rejects_unknown_fields():
    with pytest.raises(KeyError, match='hiden_size'):
        dinov3_config(dict(hiden_size=32))


def test_build_by_registry_name():
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        model = MODELS.build(dict(type='mmfusion.DINOv3ViT', arch=dict(TINY_VIT), pyramid='paper', frozen=False))
    assert isinstance(model, DINOv3ViT)


def test_random_init_warns():
    with pytest.warns(UserWarning, match='random'):
        DINOv3ViT(arch=dict(TINY_VIT))


# ---------------------------------------------------------------------------------------------------- parity


def test_parity_with_transformers_meta_checkpoint(reference, meta_pth):
    model = raw(checkpoint=meta_pth, out_strides=(16, ))
    x = torch.randn(2, 3, 48, 80)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], hf_patch_map(reference, x), atol=1e-5, rtol=1e-5)


def test_parity_with_transformers_on_padded_input(reference, meta_pth):
    """An odd-sized input equals transformers' model on the zero-padded image, cropped."""
    model = raw(checkpoint=meta_pth, out_strides=(16, ))
    x = torch.randn(1, 3, 50, 75)
    with torch.no_grad():
        expected = hf_patch_map(reference, F.pad(x, (0, 5, 0, 14)))
        torch.testing.assert_close(model(x)[0], expected[..., :4, :5], atol=1e-5, rtol=1e-5)


def test_parity_with_transformers_hf_folder(reference, tmp_path):
    reference.save_pretrained(tmp_path)
    model = raw(checkpoint=str(tmp_path), out_strides=(16, ))
    x = torch.randn(1, 3, 32, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], hf_patch_map(reference, x), atol=1e-5, rtol=1e-5)


def test_parity_of_intermediate_blocks_with_transformers_backbone(reference, meta_pth):
    hf = DINOv3ViTBackbone(DINOv3ViTConfig(**TINY_VIT, out_indices=[1, 2, 3])).eval()
    hf.load_state_dict(reference.state_dict())
    model = tiny(checkpoint=meta_pth, pyramid=dict(type='multilayer', layers=(0, 1, 2)), out_strides=(8, 16, 32))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = model(x)[1], hf(pixel_values=x).feature_maps[1]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_parity_gated_mlp_meta_checkpoint(tmp_path):
    """The SwiGLU variants (ViT-S+/16, ViT-H+/16): w1, w2, w3 -> gate, up, down."""
    reference = hf_dinov3(seed=2, use_gated_mlp=True, hidden_act='silu')
    torch.save(hf_to_meta(reference), tmp_path / 'gated.pth')
    model = raw(arch={**TINY_VIT, 'use_gated_mlp': True, 'hidden_act': 'silu'}, checkpoint=str(tmp_path / 'gated.pth'),
                out_strides=(16, ))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], hf_patch_map(reference, x), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------- frozen


def test_frozen_has_no_trainable_parameters():
    model = tiny(frozen=True, pyramid=dict(type='paper', project=False))
    assert not any(p.requires_grad for p in model.parameters())


def test_frozen_with_learned_pyramid_freezes_only_the_vit():
    model = tiny(frozen=True, pyramid='paper')
    assert not any(p.requires_grad for p in model.vit.parameters())
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [n for n, _ in model.new_parameters()]
    assert all(n.startswith('pyramid.') for n, _ in model.new_parameters())
    model.train()
    assert model.pyramid.training and not model.vit.training
    model(torch.randn(1, 3, 32, 32))[0].sum().backward()
    assert model.pyramid.convs[0].weight.grad is not None and all(p.grad is None for p in model.vit.parameters())


@pytest.mark.parametrize('pyramid', ['paper', 'simple_fpn', dict(type='multilayer', channels=16)])
def test_skipped_stride_has_no_output_and_no_parameters(pyramid):
    full, skip = tiny(pyramid=pyramid), tiny(pyramid=pyramid, skip_strides=(8, ))
    outs = skip(torch.randn(1, 3, 32, 32))
    assert outs[1] is None and all(o is not None for i, o in enumerate(outs) if i != 1)
    assert skip.out_channels == full.out_channels
    level = skip.pyramid.convs if hasattr(skip.pyramid, 'convs') else skip.pyramid.scales
    assert not list(level[1].parameters()) and list(level[0].parameters())


def test_multilayer_skip_drops_blocks_only_that_level_read():
    model = tiny(pyramid=dict(type='multilayer', layers=(0, 1, 1, 2)), skip_strides=(32, ))
    assert model.get_num_layers() == 2


def test_mask_token_never_trains():
    assert not tiny().vit.embeddings.mask_token.requires_grad


def test_frozen_stays_in_eval_mode_through_train():
    model = tiny(frozen=True, pyramid=dict(type='paper', project=False))
    model.train()
    assert model.training and not any(m.training for m in model.vit.modules())


def test_frozen_gets_no_gradients_after_backward():
    backbone = tiny(frozen=True, pyramid=dict(type='paper', project=False), out_strides=(16, ))
    head = nn.Conv2d(32, 1, 1)
    head(backbone(torch.randn(1, 3, 32, 32, requires_grad=True))[0]).sum().backward()
    assert head.weight.grad is not None
    assert all(p.grad is None for p in backbone.parameters())


def test_frozen_forward_builds_no_graph():
    model = tiny(frozen=True, pyramid=dict(type='paper', project=False))
    assert not model(torch.randn(1, 3, 32, 32, requires_grad=True))[0].requires_grad


def test_trainable_rope_jitters_in_train_mode_but_frozen_does_not():
    """Why a frozen DINOv3 must stay in eval mode: transformers rescales RoPE coordinates at random in training."""
    x = torch.randn(1, 3, 32, 32)
    trainable = tiny(pyramid=dict(type='paper', project=False), out_strides=(16, )).train()
    torch.manual_seed(0)
    with torch.no_grad():
        assert not torch.allclose(trainable(x)[0], trainable(x)[0])
    frozen = tiny(frozen=True, pyramid=dict(type='paper', project=False), out_strides=(16, )).train()
    torch.testing.assert_close(frozen(x)[0], frozen(x)[0])


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = tiny(arch={**TINY_VIT, 'pos_embed_rescale': None}, out_strides=(16, )).train()
    cp = tiny(arch={**TINY_VIT, 'pos_embed_rescale': None}, out_strides=(16, ), with_cp=True).train()
    cp.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 32, 32)
    grads = []
    for model in (plain, cp):
        model(x)[0].square().sum().backward()
        grads.append(model.vit.model.layer[0].mlp.up_proj.weight.grad)
    assert cp.vit.model.layer[0].gradient_checkpointing
    torch.testing.assert_close(grads[0], grads[1])


# ---------------------------------------------------------------------------------------------------- checkpoints


def test_building_reads_no_file_and_init_weights_says_where_and_how(tmp_path):
    model = DINOv3ViT(arch=dict(preset='vitb16', num_hidden_layers=1), checkpoint=str(tmp_path / 'nope.pth'))
    with pytest.raises(FileNotFoundError, match='facebook/dinov3-vitb16-pretrain-lvd1689m') as err:
        model.init_weights()
    assert 'nope.pth' in str(err.value) and 'checkpoints' in str(err.value)


def test_missing_keys_are_named(reference, tmp_path):
    meta = hf_to_meta(reference)
    del meta['blocks.1.attn.qkv.weight'], meta['norm.bias']
    torch.save(meta, tmp_path / 'broken.pth')
    with pytest.raises(CheckpointMismatchError) as err:
        raw(checkpoint=str(tmp_path / 'broken.pth'))
    msg = str(err.value)
    assert 'model.layer.1.attention.q_proj.weight' in msg and 'norm.bias' in msg
    assert isinstance(err.value, KeyError)


def test_wrong_shapes_are_named(tmp_path):
    torch.save(hf_to_meta(hf_dinov3(hidden_size=48, num_attention_heads=3)), tmp_path / 'wide.pth')
    with pytest.raises(CheckpointMismatchError, match=r'embeddings\.cls_token: checkpoint \(1, 1, 48\)'):
        raw(checkpoint=str(tmp_path / 'wide.pth'))


def test_unexpected_keys_are_reported(reference, tmp_path):
    meta = hf_to_meta(reference)
    meta['head.weight'] = torch.zeros(3)
    torch.save(meta, tmp_path / 'extra.pth')
    model = raw()
    report = model.load_checkpoint(str(tmp_path / 'extra.pth'))
    assert report.unexpected == ['head.weight']


def test_hf_folder_config_must_match_arch(reference, tmp_path):
    reference.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match='layer_norm_eps'):
        raw(arch={**TINY_VIT, 'layer_norm_eps': 1e-6}, checkpoint=str(tmp_path))


def test_init_weights_leaves_loaded_weights_untouched(meta_pth):

    class Detector(BaseModule):

        def __init__(self):
            super().__init__(init_cfg=dict(type='Normal', layer=['Linear', 'Conv2d', 'LayerNorm'], std=3.0))
            self.backbone = DINOv3ViT(arch=dict(TINY_VIT), checkpoint=meta_pth)
            self.head = nn.Linear(2, 2)

    det = Detector()
    before = tiny(checkpoint=meta_pth).vit.state_dict()
    det.init_weights()  # the parent's Normal(std=3) init reaches the ViT's Linear and LayerNorm layers
    after = det.backbone.vit.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_pretrained_init_cfg_is_the_checkpoint(meta_pth):
    model = tiny(init_cfg=dict(type='Pretrained', checkpoint=meta_pth))
    assert model.checkpoint == meta_pth
    loaded = tiny(checkpoint=meta_pth).vit.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.vit.state_dict().items())


def test_other_init_cfg_is_refused():
    with pytest.raises(ValueError, match='Pretrained'):
        DINOv3ViT(arch=dict(TINY_VIT), init_cfg=dict(type='Normal', layer='Linear'))
