"""mmfusion.HFBackbone: every verified transformers family gives its strides and channels, freezes, and reads a
save_pretrained folder into the same maps as transformers' own model; bad input fails with one line."""
import copy
import json
import math
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoConfig,
    CLIPConfig,
    CLIPModel,
    ConvNextConfig,
    ConvNextModel,
    Dinov2Model,
    Dinov2WithRegistersModel,
    DINOv3ConvNextModel,
    DINOv3ViTModel,
    HieraModel,
    Sam2Config,
    Sam2Model,
    SamConfig,
    SamModel,
    Siglip2VisionModel,
    SiglipConfig,
    SiglipModel,
    SwinModel,
)
from transformers.models.siglip2.image_processing_pil_siglip2 import convert_image_to_patches
from transformers.utils.constants import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
)

from mmfusion.models.backbones import HFBackbone
from mmfusion.models.backbones.checkpoint_io import CheckpointMismatchError
from mmfusion.models.backbones.int8_linear import quantise_linears_

from .hf_utils import TINY_HF, tiny_hf_config
from .vfm_utils import randomise_

HIERARCHICAL = ('dinov3_convnext', 'swin', 'hiera', 'sam2_vision_model')
PLAIN = ('dinov2_with_registers', 'dinov3_vit', 'clip_vision_model', 'siglip_vision_model', 'siglip2_vision_model',
         'sam_vision_model')
FAMILIES = HIERARCHICAL + PLAIN
STRIDES = (4, 8, 16, 32)
SIZE = (50, 60)  # odd, non-square, within Hiera's 64 x 64 pretraining size
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=99)


def build(model_type, **kwargs):
    if 'config' not in kwargs:
        kwargs['config'] = tiny_hf_config(model_type)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)  # random weights
        model = HFBackbone(**kwargs)
    model.init_weights()
    return model


def raw(model_type, **kwargs):
    """Parameter-free outputs: the stages, or a plain ViT's last block at every stride."""
    if model_type not in HIERARCHICAL:
        kwargs.setdefault('pyramid', dict(type='paper', project=False))
    return build(model_type, **kwargs)


def imagenet(pixels):
    """What mmdet/mmseg data preprocessors give the backbone: ImageNet-normalised pixels."""
    return normalise(pixels, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)


def normalise(pixels, mean, std):
    return (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def tokens_to_map(tokens, grid):
    patches = tokens[:, tokens.shape[1] - grid[0] * grid[1]:]
    return patches.transpose(1, 2).reshape(tokens.shape[0], -1, *grid)


# ------------------------------------------------------------------------------------------- outputs per family


@pytest.mark.parametrize('model_type', FAMILIES)
def test_outputs_at_every_stride(model_type):
    model = build(model_type).eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *SIZE))
    # A plain ViT goes through the paper pyramid (128 * s / 4 channels), a hierarchical encoder gives its stages.
    channels = {
        'dinov3_convnext': (8, 16, 24, 32),
        'swin': (8, 16, 32, 64),
        'hiera': (8, 16, 32, 64),
        'sam2_vision_model': (8, 16, 32, 64),
    }.get(model_type, (128, 256, 512, 1024))
    assert model.plain == (model_type in PLAIN)
    assert model.out_strides == STRIDES and model.out_channels == channels
    assert [tuple(o.shape) for o in outs] == [(2, c, math.ceil(SIZE[0] / s), math.ceil(SIZE[1] / s))
                                               for c, s in zip(channels, STRIDES)]


# Where each family keeps its units (blocks or stages), and the last one test_stops_at_the_deepest_unit needs.
UNITS = {
    'dinov3_convnext': ('model.stages.', 1), 'swin': ('swin.encoder.layers.', 1), 'hiera': ('encoder.stages.', 1),
    'sam2_vision_model': ('backbone.blocks.', 1), 'dinov2_with_registers': ('encoder.layer.', 0),
    'dinov3_vit': ('model.layer.', 0), 'clip_vision_model': ('encoder.layers.', 0),
    'siglip_vision_model': ('encoder.layers.', 0), 'siglip2_vision_model': ('encoder.layers.', 0),
    'sam_vision_model': ('vision_encoder.layers.', 0),
}


@pytest.mark.parametrize('model_type', FAMILIES)
def test_stops_at_the_deepest_unit_and_every_parameter_trains(model_type):
    """Units past the deepest output are dropped and nothing left is unused (DDP without find_unused_parameters)."""
    if model_type in HIERARCHICAL:
        model = build(model_type, out_strides=(8, ))  # the second stage
    else:
        model = build(model_type, out_strides=(8, 16), pyramid=dict(type='multilayer', layers=(0, 0)))
    model.train()
    model(torch.randn(2, 3, *SIZE))[0].square().mean().backward()
    names = [n for n, _ in model.model.named_parameters()]
    path, last = UNITS[model_type]
    assert any(n.startswith(f'{path}{last}.') for n in names)
    assert not any(n.startswith(f'{path}{last + 1}.') for n in names)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and [n for n, p in trainable if p.grad is None] == []


@pytest.mark.parametrize('model_type', FAMILIES)
def test_int8_linear_storage_runs_every_family(model_type):
    # what MasterAuxBackbone(aux_dtype='qint8') does to a frozen auxiliary (some families read a Linear's weight)
    model = raw(model_type, frozen=True).eval()
    int8 = copy.deepcopy(model)
    assert quantise_linears_(int8) > 0
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        for want, got in zip(model(x), int8(x), strict=True):
            assert got.shape == want.shape and ((got - want).norm() / want.norm()).item() < 0.15


@pytest.mark.parametrize('model_type', FAMILIES)
def test_frozen_model_gets_no_gradient_and_stays_in_eval(model_type):
    model = raw(model_type, frozen=True)
    model.train()
    out = model(torch.randn(1, 3, *SIZE))
    assert not any(p.requires_grad for p in model.model.parameters())
    assert not any(m.training for m in model.model.modules())
    assert all(o.grad_fn is None for o in out)


# ------------------------------------------------------------------------------- weights from a save_pretrained folder

def _patch_grid(pixels, patch=8):
    return pixels.shape[-2] // patch, pixels.shape[-1] // patch


def _vit_last(model, pixels):
    return [tokens_to_map(model(pixel_values=pixels).last_hidden_state, _patch_grid(pixels))]


def _siglip2_last(model, pixels):
    patches = torch.stack([torch.from_numpy(convert_image_to_patches(p.numpy(), 8)) for p in pixels])
    grid = _patch_grid(pixels)
    out = model(pixel_values=patches, pixel_attention_mask=torch.ones(patches.shape[:2], dtype=torch.long),
                spatial_shapes=torch.tensor([grid] * len(pixels))).last_hidden_state
    return [tokens_to_map(out, grid)]


def _stages_nhwc(maps):
    return [m.permute(0, 3, 1, 2) for m in maps]


# model_type -> (transformers model as published on the Hub, its normalisation, its own maps at HFBackbone's strides)
PUBLISHED = {
    'dinov2': (lambda c: Dinov2Model(c), 'imagenet', _vit_last),
    'dinov2_with_registers': (lambda c: Dinov2WithRegistersModel(c), 'imagenet', _vit_last),
    'dinov3_vit': (lambda c: DINOv3ViTModel(c), 'imagenet', _vit_last),
    # Composite folders: the image encoder is read out of the full CLIP / SigLIP / SAM / SAM2 model.
    'clip_vision_model': (lambda c: CLIPModel(CLIPConfig(vision_config=c.to_dict(), text_config=TEXT,
                                                         projection_dim=16)), 'clip',
                          lambda m, x: [tokens_to_map(m.vision_model(pixel_values=x).last_hidden_state,
                                                      _patch_grid(x))]),
    'siglip_vision_model': (lambda c: SiglipModel(SiglipConfig(vision_config=c.to_dict(), text_config=TEXT)), 'half',
                            lambda m, x: [tokens_to_map(m.vision_model(pixel_values=x).last_hidden_state,
                                                        _patch_grid(x))]),
    'siglip2_vision_model': (lambda c: Siglip2VisionModel(c), 'half', _siglip2_last),
    'sam_vision_model': (lambda c: SamModel(SamConfig(vision_config=c.to_dict())), 'imagenet',
                         lambda m, x: _stages_nhwc(
                             [m.vision_encoder(pixel_values=x, output_hidden_states=True).hidden_states[-1]])),
    'dinov3_convnext': (lambda c: DINOv3ConvNextModel(c), 'imagenet',
                        lambda m, x: list(m(pixel_values=x, output_hidden_states=True).hidden_states[1:])),
    'swin': (lambda c: SwinModel(c), 'imagenet',
             lambda m, x: list(m(pixel_values=x, output_hidden_states=True, always_partition=True,
                                 output_hidden_states_before_downsampling=True).reshaped_hidden_states[1:])),
    'hiera': (lambda c: HieraModel(c), 'imagenet',
              lambda m, x: _stages_nhwc(m(pixel_values=x, output_hidden_states=True).reshaped_hidden_states[1:])),
    'sam2_vision_model': (lambda c: Sam2Model(Sam2Config(vision_config=c.to_dict())), 'imagenet',
                          lambda m, x: _stages_nhwc(
                              m.vision_encoder.backbone(pixel_values=x).intermediate_hidden_states)),
}
NORMS = {'imagenet': (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD), 'clip': (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
         'half': (IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD)}


def publish(model_type, folder, seed=0):
    """transformers' own model of the family, with random weights (no 0/1 defaults to hide a mapping error), saved
    with save_pretrained; returns it in eval mode."""
    fields = tiny_hf_config(model_type)
    config = AutoConfig.for_model(fields.pop('model_type'), **fields)
    model = randomise_(PUBLISHED[model_type][0](config), seed).eval()
    model.save_pretrained(folder)
    return model


@pytest.mark.parametrize('model_type', ('dinov2', ) + FAMILIES)
def test_folder_round_trip_gives_transformers_own_maps(model_type, tmp_path):
    reference = publish(model_type, tmp_path)
    model = raw(model_type, config=None, checkpoint=str(tmp_path),
                **({} if model_type in HIERARCHICAL else dict(out_strides=(8, )))).eval()
    pixels = torch.rand(2, 3, 64, 64)
    _, norm, own_maps = PUBLISHED[model_type]
    with torch.no_grad():
        ours = model(imagenet(pixels))
        expected = own_maps(reference, normalise(pixels, *NORMS[norm]))
    assert len(ours) == len(expected)
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_position_embeddings_are_interpolated_like_transformers(tmp_path):
    reference = publish('clip_vision_model', tmp_path)
    model = raw('clip_vision_model', config=None, checkpoint=str(tmp_path), out_strides=(8, )).eval()
    pixels = torch.rand(1, 3, 48, 80)  # not the 64 x 64 of the position table
    with torch.no_grad():
        expected = reference.vision_model(pixel_values=normalise(pixels, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
                                          interpolate_pos_encoding=True).last_hidden_state
        torch.testing.assert_close(model(imagenet(pixels))[0], tokens_to_map(expected, (6, 10)), rtol=1e-4,
                                   atol=1e-4)


def test_normalisation_is_read_from_the_preprocessor_config(tmp_path):
    reference = publish('dinov3_vit', tmp_path)
    mean, std = (0.3, 0.4, 0.5), (0.2, 0.25, 0.3)
    (tmp_path / 'preprocessor_config.json').write_text(json.dumps(dict(image_mean=mean, image_std=std)))
    model = raw('dinov3_vit', config=None, checkpoint=str(tmp_path), out_strides=(8, )).eval()
    pixels = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        expected = _vit_last(reference, normalise(pixels, mean, std))[0]
        torch.testing.assert_close(model(imagenet(pixels))[0], expected, rtol=1e-4, atol=1e-4)
    assert (model.image_mean, model.image_std) == (mean, std)


def test_building_reads_only_the_config(tmp_path):
    publish('dinov3_convnext', tmp_path)
    (tmp_path / 'model.safetensors').write_bytes(b'not read while building')
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # and no random-weights warning: the weights come later, from the folder
        model = HFBackbone(checkpoint=str(tmp_path))
    assert model.out_channels == (8, 16, 24, 32)


def test_weights_missing_from_the_folder_are_named(tmp_path):
    publish('dinov3_convnext', tmp_path)
    state = load_file(tmp_path / 'model.safetensors')
    del state['stages.1.layers.0.depthwise_conv.weight']  # transformers saves the Hub's layout
    save_file(state, tmp_path / 'model.safetensors', metadata={'format': 'pt'})
    model = HFBackbone(checkpoint=str(tmp_path))
    with pytest.raises(CheckpointMismatchError, match=r'stages\.1\.layers\.0\.depthwise_conv\.weight'):
        model.init_weights()


def test_config_disagreeing_with_the_folder_fails_at_load(tmp_path):
    publish('dinov3_vit', tmp_path)
    model = HFBackbone(checkpoint=str(tmp_path), config={**TINY_HF['dinov3_vit'], 'layer_norm_eps': 1e-3})
    with pytest.raises(ValueError, match='layer_norm_eps'):
        model.init_weights()


# ------------------------------------------------------------------------------------------------------ options

def test_skipped_stride_is_none_and_its_stage_is_not_built():
    model = raw('swin', skip_strides=(32, ))
    outs = model(torch.randn(1, 3, 64, 64))
    assert outs[3] is None and [tuple(o.shape[-2:]) for o in outs[:3]] == [(16, 16), (8, 8), (4, 4)]
    assert len(model.model.swin.encoder.layers) == 3 and model.out_channels == (8, 16, 32, 64)


def test_stage_norms_are_new_layers_that_train_when_frozen():
    model = build('swin', stage_norms=True, frozen=True, out_strides=(8, 16)).train()
    sum(o.sum() for o in model(torch.randn(1, 3, 32, 32))).backward()
    assert [n for n, _ in model.new_parameters()] == ['norms.0.weight', 'norms.0.bias', 'norms.1.weight',
                                                       'norms.1.bias']
    assert all(p.grad is not None for _, p in model.new_parameters())
    assert all(p.grad is None for p in model.model.parameters())


def test_with_cp_checkpoints_transformers_blocks_with_the_same_gradients():
    grads = []
    for with_cp in (False, True):
        torch.manual_seed(0)
        model = raw('dinov2_with_registers', with_cp=with_cp, out_strides=(8, )).train()
        model(torch.ones(1, 3, 32, 32))[0].sum().backward()
        block = model.model.encoder.layer[0]
        assert block.gradient_checkpointing == with_cp
        grads.append(block.mlp.fc1.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_other_autobackbone_types_run_through_transformers_backbone():
    """ConvNeXt is not among the verified families: transformers' AutoBackbone gives its raw stages."""
    fields = dict(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1])
    model = build('convnext', config=dict(model_type='convnext', **fields), out_strides=(8, 32)).eval()
    reference = ConvNextModel(ConvNextConfig(**fields)).eval()
    missing, unexpected = reference.load_state_dict(model.model.state_dict(), strict=False)
    assert (missing, unexpected) == (['layernorm.weight', 'layernorm.bias'], [])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = model(x)
        stages = reference(pixel_values=x, output_hidden_states=True).hidden_states
    assert model.unit_strides == STRIDES and model.out_channels == (16, 32)
    torch.testing.assert_close(ours, (stages[2], stages[4]))


def test_hiera_pads_to_its_pretraining_size():
    model = raw('hiera', out_strides=(16, ))
    assert tuple(model(torch.randn(1, 3, 40, 64))[0].shape) == (1, 32, 3, 4)


# ---------------------------------------------------------------------------------------------------- bad input

def test_folder_without_config_json_fails(tmp_path):
    with pytest.raises(ValueError, match='not a Hugging Face model folder'):
        HFBackbone(checkpoint=str(tmp_path))


def test_text_only_model_fails():
    with pytest.raises(ValueError, match="'bert' has no vision encoder"):
        HFBackbone(config=dict(model_type='bert', hidden_size=32, num_hidden_layers=1, num_attention_heads=2))


def test_stride_the_encoder_lacks_fails():
    with pytest.raises(ValueError, match=r'out_strides \(64,\) not available: swin gives strides \(4, 8, 16, 32\)'):
        raw('swin', out_strides=(16, 64))


def test_pyramid_for_a_hierarchical_encoder_fails():
    with pytest.raises(ValueError, match='pyramid= is for plain ViTs'):
        build('dinov3_convnext', pyramid='paper')


def test_misspelt_config_field_fails():
    with pytest.raises(KeyError, match='hidden_sizes'):
        HFBackbone(config={**TINY_HF['dinov3_vit'], 'hidden_sizes': 32})


def test_input_larger_than_hiera_pretraining_size_fails():
    with pytest.raises(ValueError, match=r'image_size \(64, 64\) only and the input is 64x96'):
        raw('hiera')(torch.randn(1, 3, 64, 96))


# ------------------------------------------------------------------------------------------------------- fusion

def test_fused_mask2former_loss_with_an_hf_auxiliary():
    """DINOv3 master (patch 16) + a frozen SAM ViT auxiliary of patch 8 at OS16: the auxiliary's paper pyramid
    resamples to the master's grid, and the frozen auxiliary gets no gradient."""
    from mmdet.registry import MODELS as DET_MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    from mmfusion.models.backbones.master_aux import mean_pad_channels
    from tests._fusion_cfg import shrink_fusion_model
    from tests._m2f import det_inputs
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile('configs/mask2former_d3s2_cityscapes.py')
    shrink_fusion_model(cfg.model)
    cfg.model.backbone.auxiliary = dict(type='mmfusion.HFBackbone', config=tiny_hf_config('sam_vision_model'),
                                        pyramid=dict(type='paper', project=False))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        model = DET_MODELS.build(cfg.model)
    model.data_preprocessor.batch_augments = None
    data = model.data_preprocessor(det_inputs(2, (64, 128), num_classes=8), True)
    losses = model(**data, mode='loss')
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    backbone = model.backbone
    assert all(p.grad is None for p in backbone.auxiliary.parameters())
    assert backbone.master.pyramid.convs[0].weight.grad.abs().sum() > 0
    model.eval()
    x = torch.rand(1, 3, 64, 128)
    with torch.no_grad():
        out = backbone(x)
        (aux, ) = backbone.auxiliary(x)
    assert tuple(aux.shape) == (1, 32, 4, 8)
    assert torch.equal(out.injected[0], mean_pad_channels(aux, backbone.out_channels[2]))


# --- layer-wise lr decay ---------------------------------------------------------------------------------------------

# Where each family's units sit in HFBackbone's parameter names (SAM2: blocks, grouped into stages by hf_utils'
# blocks_per_stage [1, 1, 2, 1]).
UNIT_PREFIX = {
    'dinov2_with_registers': 'model.encoder.layer.', 'dinov3_vit': 'model.model.layer.',
    'clip_vision_model': 'model.encoder.layers.', 'siglip_vision_model': 'model.encoder.layers.',
    'siglip2_vision_model': 'model.encoder.layers.', 'sam_vision_model': 'model.vision_encoder.layers.',
    'dinov3_convnext': 'model.model.stages.', 'swin': 'model.swin.encoder.layers.', 'hiera': 'model.encoder.stages.',
}
SAM2_BLOCK_STAGE = {0: 0, 1: 1, 2: 2, 3: 2, 4: 3}


@pytest.mark.parametrize('model_type', FAMILIES)
def test_layer_ids_follow_the_units(model_type):
    model = raw(model_type)
    num = model.get_num_layers()
    assert num == max(model.units) + 1
    ids = {name: model.get_layer_id(name) for name, _ in model.named_parameters()}
    for name, layer_id in ids.items():
        if model_type == 'sam2_vision_model' and name.startswith('model.backbone.blocks.'):
            assert layer_id == SAM2_BLOCK_STAGE[int(name.split('.')[3])] + 1, name
        elif model_type != 'sam2_vision_model' and name.startswith(UNIT_PREFIX[model_type]):
            assert layer_id == int(name[len(UNIT_PREFIX[model_type]):].split('.')[0]) + 1, name
        elif 'embed' in name:
            assert layer_id == 0, name  # the stem: patch and position embeddings, tokens
        elif not name.startswith('model.'):
            assert layer_id == num + 1, name  # pyramid, stage norms
    assert set(range(1, num + 1)) <= set(ids.values())


def test_layer_decay_scales_an_hf_vits_blocks():
    from torch import nn

    from mmfusion.engine.optimizers import FusionOptimWrapperConstructor
    model = nn.ModuleDict(dict(backbone=raw('dinov3_vit', pyramid=dict(type='paper'))))
    wrapper = FusionOptimWrapperConstructor(dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1.0)),
                                            dict(layer_decay_rate=0.5))(model)
    lr = {id(p): g['lr'] for g in wrapper.optimizer.param_groups for p in g['params']}
    backbone = model['backbone']
    num = backbone.get_num_layers()
    assert lr[id(backbone.model.embeddings.cls_token)] == 0.5**(num + 1)
    assert lr[id(backbone.model.model.layer[0].norm1.weight)] == 0.5**num
    assert lr[id(next(backbone.pyramid.parameters()))] == 1.0


def test_layer_ids_of_a_family_whose_units_are_not_found_are_refused():
    """A single-stage ConvNeXt: no ModuleList with one entry per unit to place the parameters by."""
    model = build('convnext', config=dict(model_type='convnext', num_stages=1, hidden_sizes=[8], depths=[1]),
                  out_strides=(4, ))
    assert model._unit_prefix is None
    with pytest.raises(ValueError, match='layer_decay_prefixes or set layer_decay_rate=1'):
        model.get_layer_id('model.embeddings.patch_embeddings.weight')
