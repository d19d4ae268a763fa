"""mmfusion.apis.complexity: FLOPs of hand-countable layers, attribution to components, parameters of tiny Mask2Former
models of both scopes, comparison and formatting."""
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config

import mmfusion.registry  # noqa: F401  (compat fixes and registries, before anything builds)
from mmfusion.apis.complexity import (
    ComplexityError,
    ComponentCost,
    ModelCost,
    check_shape,
    compare,
    config_input_shape,
    count_flops,
    count_parameters,
    find_components,
    format_comparison,
    format_cost,
    model_complexity,
)
from mmfusion.models.backbones.int8_linear import FrozenInt8Linear
from tests._fusion_cfg import shrink_fusion_model

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FLAGSHIP = osp.join(ROOT, 'configs', 'mask2former_d3s2_cityscapes.py')
SEMANTIC = osp.join(ROOT, 'configs', 'mask2former_d3s2_cityscapes_semantic.py')


def _build(path, **backbone):
    from mmengine.registry import MODELS, DefaultScope
    cfg = Config.fromfile(path)
    shrink_fusion_model(cfg.model)
    cfg.model.backbone.update(backbone)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return MODELS.build(cfg.model)


@pytest.fixture(scope='module')
def tiny_det():
    return _build(FLAGSHIP)


@pytest.fixture(scope='module')
def tiny_seg():
    return _build(SEMANTIC)


# --- FLOPs of single layers (1 FLOP = 1 multiply-add) ---------------------------------------------------------------


def test_conv_flops_equal_hand_count():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    x = torch.randn(1, 3, 8, 8)
    result = count_flops(conv, lambda: conv(x))
    # 8 output channels x 8 x 8 pixels, each a 3 x 3 x 3 dot product; the bias add is free by convention
    assert result.flops == {'other': 8 * 8 * 8 * 27}


def test_linear_flops_equal_hand_count():
    fc = nn.Linear(16, 4)
    x = torch.randn(2, 5, 16)
    assert count_flops(fc, lambda: fc(x)).total == 2 * 5 * 16 * 4


def test_int8_linear_counts_as_the_float_linear_it_stands_for():
    fc = nn.Linear(16, 4)
    int8 = nn.Sequential(FrozenInt8Linear.from_linear(fc))
    x = torch.randn(2, 5, 16)
    result = count_flops(int8, lambda: int8(x))
    assert result.total == 2 * 5 * 16 * 4 and not result.uncounted_ops
    assert count_parameters(int8, {})['other'] == (16 * 4 + 4, 0)  # frozen weights, as the float layer's count


def test_int8_auxiliary_keeps_its_flops_and_parameters(tiny_det):
    int8 = _build(FLAGSHIP, aux_dtype='qint8')
    int8.load_state_dict(tiny_det.state_dict())
    want, got = model_complexity(tiny_det, (64, 96)), model_complexity(int8, (64, 96))
    assert (got.get('auxiliary').params, got.get('auxiliary').trainable) == (want.get('auxiliary').params, 0)
    assert got.get('auxiliary').flops == want.get('auxiliary').flops > 0


def test_fused_attention_on_cpu_is_counted():
    q, kv = torch.randn(1, 2, 16, 8), torch.randn(1, 2, 10, 8)
    module = nn.Identity()
    result = count_flops(module, lambda: F.scaled_dot_product_attention(q, kv, kv))
    # per head: q @ k^T (16 x 10 outputs of 8) and attn @ v (16 x 8 outputs of 10)
    assert result.total == 2 * (16 * 10 * 8 + 16 * 8 * 10)
    assert 'scaled_dot_product_attention' not in ' '.join(result.uncounted_ops)


def test_deformable_attention_sampling_counted_analytically():
    from mmcv.ops import MultiScaleDeformableAttention
    attn = MultiScaleDeformableAttention(embed_dims=8, num_heads=2, num_levels=2, num_points=3, batch_first=True)
    shapes = torch.tensor([[4, 4], [2, 2]])
    start = torch.tensor([0, 16])
    query, value = torch.randn(1, 5, 8), torch.randn(1, 20, 8)
    ref = torch.rand(1, 5, 2, 2)
    with torch.no_grad():
        result = count_flops(attn, lambda: attn(query, value=value, reference_points=ref, spatial_shapes=shapes,
                                                level_start_index=start), {'msda': attn})
    linear = (20 * 8 * 8  # value_proj
              + 5 * 8 * (2 * 2 * 3 * 2)  # sampling_offsets: heads x levels x points x (x, y)
              + 5 * 8 * (2 * 2 * 3)  # attention_weights
              + 5 * 8 * 8)  # output_proj
    sampling = 5 * 5 * 8 * 2 * 3  # 5 per sampled value and channel: queries x channels x levels x points
    assert result.analytic == {'msda': sampling, 'other': 0}
    assert result.flops == {'msda': linear + sampling, 'other': 0}
    assert 'grid_sampler_2d' in result.uncounted_ops


class _Decoder(nn.Module):

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 2)])


class _Head(nn.Module):
    """Calls its decoder's layers directly, as mmdet's Mask2FormerHead does, and computes a matmul itself."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, 4)
        self.decoder = _Decoder()

    def forward(self, x):
        x = self.proj(x)
        for layer in self.decoder.layers:
            x = layer(x)
        return x @ torch.ones(2, 3)


def test_flops_go_to_the_innermost_component_of_the_running_module():
    head = _Head()
    x = torch.randn(3, 6)
    result = count_flops(head, lambda: head(x), {'head': head, 'decoder': head.decoder})
    assert result.flops == {'head': 3 * 6 * 4 + 3 * 2 * 3, 'decoder': 3 * 4 * 4 + 3 * 4 * 2, 'other': 0}


def test_flops_outside_every_component_are_other():
    head = _Head()
    x = torch.randn(3, 6)
    result = count_flops(head, lambda: torch.mm(head(x), torch.ones(3, 5)), {'decoder': head.decoder})
    assert result.flops['decoder'] == 3 * 4 * 4 + 3 * 4 * 2
    assert result.flops['other'] == 3 * 6 * 4 + 3 * 2 * 3 + 3 * 3 * 5


# --- components and parameters ----------------------------------------------------------------------------------


def _params_by_prefix(model, prefix, exclude=()):
    return sum(p.numel() for n, p in model.named_parameters()
               if n.startswith(prefix) and not any(n.startswith(e) for e in exclude))


def test_fused_components_are_found(tiny_det):
    comps = find_components(tiny_det)
    assert list(comps) == ['master', 'auxiliary', 'fusion', 'neck', 'pixel_decoder', 'transformer_decoder',
                           'head_other']
    assert comps['auxiliary'] is tiny_det.backbone.auxiliary and comps['fusion'] is tiny_det.backbone
    assert comps['transformer_decoder'] is tiny_det.panoptic_head.transformer_decoder


def test_parameters_per_component_equal_named_parameter_sums(tiny_det):
    counts = count_parameters(tiny_det, find_components(tiny_det))
    head = 'panoptic_head.'
    expected = {
        'master': _params_by_prefix(tiny_det, 'backbone.master.'),
        'auxiliary': _params_by_prefix(tiny_det, 'backbone.auxiliary.'),
        'fusion': _params_by_prefix(tiny_det, 'backbone.', ('backbone.master.', 'backbone.auxiliary.')),
        'neck': _params_by_prefix(tiny_det, 'neck.'),
        'pixel_decoder': _params_by_prefix(tiny_det, head + 'pixel_decoder.'),
        'transformer_decoder': _params_by_prefix(tiny_det, head + 'transformer_decoder.'),
        'head_other': _params_by_prefix(tiny_det, head, (head + 'pixel_decoder.', head + 'transformer_decoder.')),
    }
    expected['other'] = sum(p.numel() for p in tiny_det.parameters()) - sum(expected.values())
    assert {k: v[0] for k, v in counts.items()} == expected
    assert expected['master'] > 0 and expected['auxiliary'] > 0


def test_frozen_auxiliary_counts_as_frozen(tiny_det):
    counts = count_parameters(tiny_det, find_components(tiny_det))
    aux_total, aux_trainable = counts['auxiliary']
    assert aux_total == sum(p.numel() for p in tiny_det.backbone.auxiliary.parameters()) and aux_trainable == 0
    master_total, master_trainable = counts['master']
    assert master_trainable == sum(p.numel() for p in tiny_det.backbone.master.parameters() if p.requires_grad)
    assert 0 < master_trainable <= master_total


def test_model_without_a_test_time_forward_is_refused():
    model = nn.Module()
    model.backbone, model.decode_head = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)
    with pytest.raises(ComplexityError, match='Module with Conv2d is neither a Mask2Former model nor an mmdet '
                                              'detector / mmseg segmentor'):
        find_components(model)


# --- whole models -----------------------------------------------------------------------------------------------


def test_mmdet_model_components_add_up_to_the_totals(tiny_det):
    cost = model_complexity(tiny_det, (64, 96))
    total = cost.total()
    assert total.params == sum(p.numel() for p in tiny_det.parameters())
    assert total.trainable == sum(p.numel() for p in tiny_det.parameters() if p.requires_grad)
    assert total.flops == sum(c.flops for c in cost.components)
    keys = [c.key for c in cost.components]
    assert keys[:6] == ['master', 'auxiliary', 'neck', 'pixel_decoder', 'transformer_decoder', 'head_other']
    for key in ('master', 'auxiliary', 'pixel_decoder', 'transformer_decoder', 'head_other'):
        assert cost.get(key).flops > 0, key
    # only the pixel decoder has deformable attention
    assert cost.get('pixel_decoder').analytic_flops > 0
    assert total.analytic_flops == cost.get('pixel_decoder').analytic_flops
    assert cost.input_shape == (64, 96)


def test_auxiliary_flops_equal_a_separate_count_of_the_auxiliary(tiny_det):
    cost = model_complexity(tiny_det, (64, 96))
    aux = tiny_det.backbone.auxiliary
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        alone = count_flops(aux, lambda: aux(x)).total
    assert cost.get('auxiliary').flops == alone


def test_learned_alignment_is_the_fusion_component():
    model = _build(FLAGSHIP, align='conv')
    cost = model_complexity(model, (64, 96))
    aux_channels = model.backbone.aux_channels[0]
    master_channels = model.backbone.out_channels[model.backbone.strides.index(16)]
    # one 1x1 conv from the auxiliary's to the master's channels (+ GroupNorm, free) on the (64/16) x (96/16) grid
    assert cost.get('fusion').flops == 4 * 6 * aux_channels * master_channels
    assert cost.get('fusion').params == sum(p.numel() for p in model.backbone.align_convs.parameters())


def test_mmseg_model_is_measured(tiny_seg):
    cost = model_complexity(tiny_seg, (64, 64))
    assert [c.key for c in cost.components][:6] == [
        'master', 'auxiliary', 'neck', 'pixel_decoder', 'transformer_decoder', 'head_other']
    assert cost.get('transformer_decoder').flops > 0
    assert cost.total().flops == sum(c.flops for c in cost.components)


def test_shape_must_be_positive():
    with pytest.raises(ComplexityError, match='two positive ints'):
        check_shape((0, 64))


def test_test_size_read_from_the_config():
    cfg = Config.fromfile(FLAGSHIP)
    shape, source = config_input_shape(cfg)
    assert shape == (1024, 2048)  # Cityscapes: Resize scale=(2048, 1024), (w, h)
    assert 'Resize' in source


def test_crop_size_is_the_fallback_test_size():
    cfg = Config(dict(crop_size=(96, 128), test_dataloader=dict(dataset=dict(pipeline=[dict(type='PackDetInputs')]))))
    assert config_input_shape(cfg)[0] == (96, 128)


# --- comparison and formatting ----------------------------------------------------------------------------------


def _cost(name, **flops):
    return ModelCost([ComponentCost(k, params=10 * v, trainable=v, flops=v) for k, v in flops.items()], (8, 8),
                     name=name)


def test_compare_matches_encoder_with_master_and_gives_total_ratios():
    fused = _cost('a', master=40, auxiliary=20, pixel_decoder=30)
    alone = _cost('b', encoder=40, pixel_decoder=20)
    rows = compare(fused, alone)
    assert list(rows) == ['master', 'auxiliary', 'pixel_decoder', 'total']
    assert rows['master']['name'] == 'master encoder / encoder'
    assert rows['master']['flops'] == dict(a=40, b=40, ratio=1.0)
    assert rows['auxiliary']['flops'] == dict(a=20, b=0, ratio=None)
    assert rows['total']['flops']['ratio'] == pytest.approx(90 / 60)
    assert rows['total']['params']['ratio'] == pytest.approx(900 / 600)
    text = format_comparison(fused, alone)
    assert f'{90 / 60:.2f}x' in text.splitlines()[2 + 2 + 3]  # titles, header, rule, 3 components, then total


def test_format_cost_lists_every_component_and_percentages():
    cost = _cost('m', master=3 * 10**9, pixel_decoder=10**9)
    lines = format_cost(cost).splitlines()
    rows = {line.split('  ')[0]: line.split() for line in lines[3:6]}
    assert rows['master encoder'][-2:] == ['3.00', '75.0']
    assert rows['pixel decoder'][-2:] == ['1.00', '25.0']
    assert rows['total'][-2:] == ['4.00', '100.0']
