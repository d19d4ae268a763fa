# The foundation encoders and the master/auxiliary pairs, as variables that experiment configs reference with
# {{_base_.NAME}} (variables, not a `model` dict, so this file can sit beside an mmdet/mmseg recipe in `_base_`).
# Weights are read from local files only: see README "Weights". A missing file stops with instructions;
# checkpoint=None builds a randomly initialised encoder (with a warning). Experiment configs set
# custom_imports = dict(imports=['mmfusion']) themselves: an mmseg recipe already defines custom_imports.
dinov3_checkpoint = 'checkpoints/dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth'
sam2_checkpoint = 'checkpoints/sam2.1_hiera_base_plus.pt'

# DINOv3 ViT-B/16, fine-tuned; the paper's pyramid: last block's tokens resampled to each stride, 1x1 conv to
# 128*s/4 channels (SPEC §5).
dinov3_vitb16 = dict(type='mmfusion.DINOv3ViT', arch='vitb16', pyramid='paper', checkpoint=dinov3_checkpoint,
                     frozen=False)
dinov3_channels = [128, 256, 512, 1024]

# SAM2.1 Hiera-B+, frozen; raw trunk stages.
sam2_hiera_bplus = dict(type='mmfusion.SAM2Hiera', arch='base_plus', checkpoint=sam2_checkpoint, frozen=True)
sam2_channels = [112, 224, 448, 896]

# D3S2: DINOv3 master (trainable) + SAM2 auxiliary (frozen, computed only up to s*) injected at s* = OS16, the
# auxiliary's Edge-Fidelity peak in the paper's profile. The neck aligns channels without parameters (mean_pad).
inject_stride = 16
d3s2_backbone = dict(
    _delete_=True,
    type='mmfusion.MasterAuxBackbone',
    master=dinov3_vitb16,
    auxiliary=sam2_hiera_bplus,
    aux_strides=(inject_stride, ))
d3s2_neck = dict(
    type='mmfusion.MetricGuidedNeck',
    master_channels=dinov3_channels,
    aux_channels=(448, ),
    aux_strides=(inject_stride, ),
    inject_stride=inject_stride,
    align='mean_pad')

# S2D3, the reverse pair: SAM2 master (fine-tuned) + DINOv3 auxiliary (frozen) at s* = OS16.
s2d3_backbone = dict(
    _delete_=True,
    type='mmfusion.MasterAuxBackbone',
    master=dict(sam2_hiera_bplus, frozen=False),
    auxiliary=dict(dinov3_vitb16, frozen=True, out_strides=(16, )),
    aux_strides=(16, ))
s2d3_neck = dict(
    type='mmfusion.MetricGuidedNeck',
    master_channels=sam2_channels,
    aux_channels=(512, ),
    aux_strides=(16, ),
    inject_stride=16,
    align='mean_pad')

# The master's level at s* is computed and then replaced, so DDP sees parameters without gradients.
fusion_model_wrapper_cfg = dict(type='MMDistributedDataParallel', find_unused_parameters=True)

# The paper's optimizer (SPEC §7): AdamW 1e-4, wd 0.05 (0 on norms and embeddings), backbone lr x0.1,
# full-model grad clipping 0.01. Same as mmdet/mmseg's Mask2Former recipes, plus no decay on the ViT's
# position/register tokens.
fusion_paramwise_cfg = dict(
    custom_keys={
        'backbone': dict(lr_mult=0.1, decay_mult=1.0),
        'query_embed': dict(lr_mult=1.0, decay_mult=0.0),
        'query_feat': dict(lr_mult=1.0, decay_mult=0.0),
        'level_embed': dict(lr_mult=1.0, decay_mult=0.0),
        'cls_token': dict(decay_mult=0.0),
        'register_tokens': dict(decay_mult=0.0),
        'mask_token': dict(decay_mult=0.0),
    },
    norm_decay_mult=0.0)

# Single-encoder baselines (replace the recipe's ResNet).
dinov3_alone_backbone = dict(dinov3_vitb16, _delete_=True)
sam2_alone_backbone = dict(sam2_hiera_bplus, _delete_=True)

# The model/optimizer updates every fused experiment applies to its recipe (mmdet: panoptic_head; mmseg:
# decode_head), so an experiment config reads `model = {{_base_.d3s2_det_model}}`.
d3s2_det_model = dict(backbone=d3s2_backbone, neck=d3s2_neck, panoptic_head=dict(in_channels=dinov3_channels))
d3s2_seg_model = dict(backbone=d3s2_backbone, neck=d3s2_neck, decode_head=dict(in_channels=dinov3_channels))
fusion_optim_wrapper = dict(constructor='mmfusion.LayerDecayOptimWrapperConstructor',
                            paramwise_cfg=fusion_paramwise_cfg)
