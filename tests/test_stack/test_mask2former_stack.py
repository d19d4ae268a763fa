"""The pinned stack runs the stock mmdet and mmseg Mask2Former recipes on CPU (shrunk, structure unchanged).

Deformable attention takes mmcv's pure-PyTorch path on CPU.
"""
import pytest
import torch
from mmengine.hub import get_config

import mmfusion.registry  # noqa: F401  (compat fixes and registries, before anything builds)
from tests._m2f import det_inputs, seg_inputs, shrink_mask2former_head, tiny_resnet

RES_CH = [8, 16, 32, 64]  # tiny_resnet(8): BasicBlock stages


def _build_det(cfg_name):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    cfg = get_config(f'mmdet::{cfg_name}', pretrained=False)
    cfg.model.backbone = tiny_resnet()
    shrink_mask2former_head(cfg.model.panoptic_head, RES_CH)
    cfg.model.train_cfg.num_points = 64
    cfg.model.data_preprocessor.batch_augments = None
    cfg.model.test_cfg.max_per_image = 5
    return MODELS.build(cfg.model), cfg


def test_mmdet_mask2former_instance_loss_and_predict():
    model, cfg = _build_det('mask2former/mask2former_r50_8xb2-lsj-50e_coco.py')
    assert cfg.model.panoptic_head.num_things_classes == 80
    data = model.data_preprocessor(det_inputs(2, (64, 96), num_classes=80), training=True)
    losses = model(**data, mode='loss')
    # 1 final + 2 decoder layers of deep supervision (shrunk from 9), each with cls/mask/dice
    assert {'loss_cls', 'loss_mask', 'loss_dice', 'd0.loss_cls', 'd1.loss_dice'} <= set(losses)
    assert all(torch.isfinite(v).all() for v in losses.values())
    sum(losses.values()).backward()
    assert model.backbone.conv1.weight.grad is not None

    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(det_inputs(1, (64, 96), num_classes=80), training=False)
        res = model(**data, mode='predict')
    inst = res[0].pred_instances
    assert inst.masks.shape[1:] == (64, 96)
    assert len(inst) == 5 and inst.bboxes.shape == (5, 4)


def test_mmdet_mask2former_panoptic_predict():
    model, cfg = _build_det('mask2former/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py')
    data = model.data_preprocessor(det_inputs(1, (64, 64), 133, with_seg=True, seed=1), True)
    losses = model(**data, mode='loss')
    assert torch.isfinite(sum(losses.values()))
    model.eval()
    with torch.no_grad():
        res = model(**model.data_preprocessor(det_inputs(1, (64, 64), 133), False), mode='predict')
    assert res[0].pred_panoptic_seg.sem_seg.shape == (1, 64, 64)


def test_mmseg_mask2former_semantic_loss_and_predict():
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    cfg = get_config('mmseg::mask2former/mask2former_r50_8xb2-90k_cityscapes-512x1024.py', pretrained=False)
    cfg.model.backbone = tiny_resnet()
    shrink_mask2former_head(cfg.model.decode_head, RES_CH)
    cfg.model.data_preprocessor.size = (64, 128)
    model = MODELS.build(cfg.model)
    data = model.data_preprocessor(seg_inputs(2, (64, 128), num_classes=19), training=True)
    losses = model(**data, mode='loss')
    assert {'decode.loss_cls', 'decode.loss_mask', 'decode.loss_dice'} <= set(losses)
    assert all(torch.isfinite(v).all() for v in losses.values())
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(seg_inputs(1, (64, 128), num_classes=19), training=False)
        res = model(**data, mode='predict')
    assert res[0].pred_sem_seg.data.shape == (1, 64, 128)
    assert res[0].seg_logits.data.shape == (19, 64, 128)
    assert 0 <= int(res[0].pred_sem_seg.data.max()) < 19


@pytest.mark.parametrize('num_heads,embed', [(2, 32)])
def test_deformable_attention_cpu_fallback_matches_reference(num_heads, embed):
    """mmcv's MultiScaleDeformableAttention on CPU equals its pure-PyTorch reference function."""
    from mmcv.ops import MultiScaleDeformableAttention
    from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch
    torch.manual_seed(0)
    attn = MultiScaleDeformableAttention(embed_dims=embed, num_heads=num_heads, num_levels=2, num_points=2,
                                         dropout=0.0, batch_first=True).eval()
    shapes = torch.tensor([[8, 8], [4, 4]])
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    value = torch.randn(1, 80, embed)
    query = torch.randn(1, 5, embed)
    ref = torch.rand(1, 5, 2, 2)
    out = attn(query=query, value=value, reference_points=ref, spatial_shapes=shapes, level_start_index=starts,
               identity=torch.zeros_like(query))
    # Recompute through the reference function from the module's own projections.
    v = attn.value_proj(value).view(1, 80, num_heads, embed // num_heads)
    off = attn.sampling_offsets(query).view(1, 5, num_heads, 2, 2, 2)
    w = attn.attention_weights(query).view(1, 5, num_heads, 4).softmax(-1).view(1, 5, num_heads, 2, 2)
    norm = torch.stack([shapes[..., 1], shapes[..., 0]], -1)
    loc = ref[:, :, None, :, None, :] + off / norm[None, None, None, :, None, :]
    expected = attn.output_proj(multi_scale_deformable_attn_pytorch(v, shapes, loc, w))
    assert torch.allclose(out, expected, atol=1e-5)
