"""Shrinking mmdet's and mmseg's Mask2Former recipes to CPU-test size, keeping their structure."""
from __future__ import annotations

import torch


def shrink_mask2former_head(head: dict, in_channels, feat: int = 32, queries: int = 6, points: int = 64) -> dict:
    """Make a stock Mask2FormerHead config tiny in place: channels, layers, queries and sampled points."""
    head.update(in_channels=list(in_channels), feat_channels=feat, out_channels=feat, num_queries=queries)
    pd = head['pixel_decoder']
    pd['norm_cfg'] = dict(type='GN', num_groups=8)
    enc = pd['encoder']
    enc['num_layers'] = 1
    enc['layer_cfg']['self_attn_cfg'].update(embed_dims=feat, num_heads=2, num_points=2)
    enc['layer_cfg']['ffn_cfg'].update(embed_dims=feat, feedforward_channels=2 * feat)
    pd['positional_encoding']['num_feats'] = feat // 2
    head['positional_encoding']['num_feats'] = feat // 2
    dec = head['transformer_decoder']
    dec['num_layers'] = 2
    for key in ('self_attn_cfg', 'cross_attn_cfg'):
        dec['layer_cfg'][key].update(embed_dims=feat, num_heads=2)
    dec['layer_cfg']['ffn_cfg'].update(embed_dims=feat, feedforward_channels=2 * feat)
    train_cfg = head.get('train_cfg')  # mmseg keeps train_cfg in the head, mmdet in the model
    if train_cfg is not None:
        train_cfg['num_points'] = points
    return head


def tiny_resnet(out_channels_base: int = 8) -> dict:
    """An mmdet/mmseg ResNet-18 with few channels and no pretrained weights (nothing to download)."""
    return dict(type='ResNet', depth=18, base_channels=out_channels_base, num_stages=4, out_indices=(0, 1, 2, 3),
                norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False, style='pytorch', init_cfg=None)


def det_inputs(batch: int, size, num_classes: int, with_seg: bool = False, seed: int = 0):
    """Random images and instance masks packed the way mmdet's data pipeline does."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData, PixelData
    g = torch.Generator().manual_seed(seed)
    h, w = size
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
        masks = torch.zeros(2, h, w, dtype=torch.uint8)
        masks[0, : h // 2, : w // 2] = 1
        masks[1, h // 2:, w // 3:] = 1
        s = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w),
                                        scale_factor=(1.0, 1.0)))
        s.gt_instances = InstanceData(
            labels=torch.tensor([0, num_classes - 1]),
            bboxes=torch.tensor([[0, 0, w / 2, h / 2], [w / 3, h / 2, w, h]], dtype=torch.float32),
            masks=BitmapMasks(masks.numpy(), h, w))
        if with_seg:
            seg = torch.full((1, h, w), 255, dtype=torch.long)
            seg[0, :, : w // 4] = 0
            s.gt_sem_seg = PixelData(sem_seg=seg)
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def seg_inputs(batch: int, size, num_classes: int, seed: int = 0):
    """Random images and semantic maps packed the way mmseg's data pipeline does."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(seed)
    h, w = size
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
        seg = torch.randint(0, num_classes, (1, h, w), generator=g)
        seg[:, :4] = 255
        s = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        s.gt_sem_seg = PixelData(data=seg)
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)
