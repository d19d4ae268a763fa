"""The fusion runs inside the stock mmdet ``Mask2Former`` and mmseg ``EncoderDecoder`` + ``Mask2FormerHead``,
built from their own registries with ``type='mmfusion.X'`` (no subclass of their models)."""
import numpy as np
import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData, PixelData

from tests._stubs import StubPyramid  # noqa: F401  (registers the stand-in backbone)

pytest.importorskip('mmcv.ops', reason='mmcv with compiled ops is needed by the Mask2Former pixel decoder')

C = 32  # decoder width; GN(32) needs a multiple of 32
BACKBONE = dict(type='mmfusion.MasterAuxBackbone', master=dict(type='mmfusion.StubPyramid', channels=(8, 16, 32, 64)),
                auxiliary=dict(type='mmfusion.StubPyramid', channels=(4, 8, 24, 48)), inject_stride=16)
NECK = dict(type='mmfusion.MetricGuidedNeck')


def _head(scope, num_classes):
    attn = dict(embed_dims=C, num_heads=2, dropout=0.0, batch_first=True)
    ffn = dict(embed_dims=C, feedforward_channels=2 * C, num_fcs=2, ffn_drop=0.0, act_cfg=dict(type='ReLU'))
    p = '' if scope == 'mmdet' else 'mmdet.'
    head = dict(
        type='Mask2FormerHead', in_channels=[8, 16, 32, 64], strides=[4, 8, 16, 32], feat_channels=C, out_channels=C,
        num_queries=5, num_transformer_feat_level=3,
        pixel_decoder=dict(
            type=p + 'MSDeformAttnPixelDecoder', num_outs=3, norm_cfg=dict(type='GN', num_groups=32),
            act_cfg=dict(type='ReLU'),
            encoder=dict(num_layers=1, layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=C, num_heads=2, num_levels=3, num_points=2, dropout=0.0,
                                   batch_first=True), ffn_cfg=ffn)),
            positional_encoding=dict(num_feats=C // 2, normalize=True)),
        enforce_decoder_input_project=False,
        positional_encoding=dict(num_feats=C // 2, normalize=True),
        transformer_decoder=dict(return_intermediate=True, num_layers=1,
                                 layer_cfg=dict(self_attn_cfg=attn, cross_attn_cfg=attn, ffn_cfg=ffn)),
        loss_cls=dict(type=p + 'CrossEntropyLoss', use_sigmoid=False, loss_weight=2.0,
                      class_weight=[1.0] * num_classes + [0.1]),
        loss_mask=dict(type=p + 'CrossEntropyLoss', use_sigmoid=True, loss_weight=5.0),
        loss_dice=dict(type=p + 'DiceLoss', use_sigmoid=True, activate=True, naive_dice=True, eps=1.0,
                       loss_weight=5.0))
    train_cfg = dict(num_points=64, oversample_ratio=3.0, importance_sample_ratio=0.75,
                     assigner=dict(type=p + 'HungarianAssigner', match_costs=[
                         dict(type=p + 'ClassificationCost', weight=2.0),
                         dict(type=p + 'CrossEntropyLossCost', weight=5.0, use_sigmoid=True),
                         dict(type=p + 'DiceCost', weight=5.0, pred_act=True, eps=1.0)]),
                     sampler=dict(type=p + 'MaskPseudoSampler'))
    return head, train_cfg


def _train_step(model, inputs, sample):
    data = model.data_preprocessor(dict(inputs=[inputs], data_samples=[sample]), training=True)
    model.train()
    loss, _ = model.parse_losses(model(**data, mode='loss'))
    loss.backward()
    assert all(p.grad is None for p in model.backbone.auxiliary.parameters())
    assert model.backbone.master.stem[0].weight.grad is not None


def _build(registry, scope, cfg):
    # Stock configs set default_scope; the data preprocessor is only found through it.
    with DefaultScope.overwrite_default_scope(scope):
        return registry.build(ConfigDict(cfg))


def test_mmdet_mask2former_trains_with_the_fusion():
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    head, train_cfg = _head('mmdet', 2)
    head.update(num_things_classes=2, num_stuff_classes=0)
    model = _build(MODELS, 'mmdet', dict(
        type='Mask2Former',
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                               bgr_to_rgb=True, pad_size_divisor=32, pad_mask=True),
        backbone=BACKBONE, neck=NECK, panoptic_head=head,
        panoptic_fusion_head=dict(type='MaskFormerFusionHead', num_things_classes=2, num_stuff_classes=0),
        train_cfg=train_cfg, test_cfg=dict(panoptic_on=False, semantic_on=False, instance_on=True, max_per_image=5)))
    masks = np.zeros((2, 64, 64), np.uint8)
    masks[0, 8:24, 8:40], masks[1, 30:60, 20:50] = 1, 1
    sample = DetDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64)))
    sample.gt_instances = InstanceData(labels=torch.tensor([0, 1]), masks=BitmapMasks(masks, 64, 64),
                                       bboxes=torch.tensor([[8., 8., 40., 24.], [20., 30., 50., 60.]]))
    _train_step(model, torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8), sample)


def test_mmseg_encoder_decoder_with_mask2former_head_trains_with_the_fusion():
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    head, train_cfg = _head('mmseg', 3)
    head.update(num_classes=3, align_corners=False, train_cfg=train_cfg)
    model = _build(MODELS, 'mmseg', dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                               bgr_to_rgb=True, size=(64, 64), pad_val=0, seg_pad_val=255),
        backbone=BACKBONE, neck=NECK, decode_head=head, train_cfg=dict(), test_cfg=dict(mode='whole')))
    seg = torch.zeros(1, 64, 64, dtype=torch.long)
    seg[:, 20:50, 10:30], seg[:, 40:, 40:] = 1, 2
    sample = SegDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64)))
    sample.gt_sem_seg = PixelData(data=seg)
    _train_step(model, torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8), sample)
