# The foundation encoders and the master/auxiliary pairs, as variables that experiment configs reference with
# {{_base_.NAME}} (variables, not a `model` dict, so this file can sit beside an mmdet/mmseg recipe in `_base_`).
# Weights are read from local files only, by init_weights at the start of training (see README "Weights"): building
# a model reads no file, so testing or inferring from a trained checkpoint needs only that checkpoint.
# checkpoint=None trains from random weights (with a warning). Experiment configs set
# custom_imports = dict(imports=['mmfusion.models', 'mmfusion.engine']) themselves: an mmseg recipe already defines custom_imports.
#
# One place per decision: the fused backbone (MasterAuxBackbone) owns the injection stride(s), the freezing of both
# encoders and the channel alignment; the neck reads them from the backbone's output; channel counts are read from
# the built encoders. The only channel list a config states is the master pyramid's, once, because the stock
# Mask2Former head needs it as `in_channels`.
dinov3_checkpoint = 'checkpoints/dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth'
sam2_checkpoint = 'checkpoints/sam2.1_hiera_base_plus.pt'

# DINOv3 ViT-B/16 with the paper's pyramid: the last block's tokens resampled to each stride, then a new 1x1 conv to
# 128*s/4 channels (SPEC §5; the same for every ViT size, so `arch='vitl16'` changes nothing else).
dinov3_channels = [128, 256, 512, 1024]
dinov3_vitb16 = dict(type='mmfusion.DINOv3ViT', arch='vitb16', pyramid=dict(type='paper', channels=dinov3_channels),
                     checkpoint=dinov3_checkpoint)

# SAM2.1 Hiera-B+: the raw trunk stages (112/224/448/896 channels at OS 4/8/16/32).
sam2_channels = [112, 224, 448, 896]
sam2_hiera_bplus = dict(type='mmfusion.SAM2Hiera', arch='base_plus', checkpoint=sam2_checkpoint)

# D3S2: DINOv3 master (fine-tuned) + SAM2 auxiliary (frozen, computed only up to s*) injected at s* = OS16, the
# auxiliary's Edge-Fidelity peak in the paper's profile; parameter-free channel alignment (mean_pad).
# Every experiment of the paper is one key of this dict: inject_stride (4/8/16/32, a list, or 'auto' with
# profile=PATH), freeze_master / freeze_auxiliary (Table 6, RQ5), align ('mean_pad' or 'conv').
d3s2_backbone = dict(
    _delete_=True,
    type='mmfusion.MasterAuxBackbone',
    master=dinov3_vitb16,
    auxiliary=sam2_hiera_bplus,
    inject_stride=16,
    freeze_master=False,
    freeze_auxiliary=True,
    align='mean_pad')

# S2D3, the reverse pair: SAM2 master (fine-tuned) + DINOv3 auxiliary (frozen) at OS16. The auxiliary injects its
# own last-block features (768 channels, no projection), aligned to SAM2's 448 channels at OS16 by mean_pad (evenly
# spaced channels, SPEC §6).
s2d3_backbone = dict(
    d3s2_backbone,
    master=sam2_hiera_bplus,
    auxiliary=dict(dinov3_vitb16, pyramid=dict(type='paper', project=False)))

fusion_neck = dict(type='mmfusion.MetricGuidedNeck')

# The paper's optimizer (SPEC §7): AdamW 1e-4, wd 0.05, backbone lr x0.1 (every backbone parameter, tokens
# included), weight decay 0 on every norm (norm_decay_mult), every nn.Embedding (mmfusion's constructor, by type: the
# head's query/level embeddings and the pixel decoder's level encoding) and the encoders' tokens and position
# embeddings (no_decay_keys: plain parameters, no module type to find them by), on top of the custom keys;
# full-model grad clipping 0.01 (the recipe's). Frozen parameters stay out of the optimizer.
fusion_paramwise_cfg = dict(
    custom_keys={
        'backbone': dict(lr_mult=0.1, decay_mult=1.0),
        'query_embed': dict(lr_mult=1.0, decay_mult=0.0),
        'query_feat': dict(lr_mult=1.0, decay_mult=0.0),
        'level_embed': dict(lr_mult=1.0, decay_mult=0.0),
    },
    norm_decay_mult=0.0,
    no_decay_keys=('cls_token', 'register_tokens', 'mask_token', 'class_embedding', 'pos_embed', 'position_embedding',
                   'relative_position_bias_table', 'rel_pos_h', 'rel_pos_w'))
# Mixed precision (float16 autocast, dynamic loss scale) as the reference trains (SOLVER.AMP.ENABLED); MMEngine runs it
# on a GPU only: on a CPU tools/train.py says to pass --cfg-options optim_wrapper.type=OptimWrapper (float32).
fusion_optim_wrapper = dict(type='AmpOptimWrapper', constructor='mmfusion.FusionOptimWrapperConstructor',
                            paramwise_cfg=fusion_paramwise_cfg)

# The same fusion for models whose neck reads OS 8/16/32 (mmdet's DETR family: ChannelMapper adds OS64 itself): the
# master's pyramid starts at OS8 (beyond the paper, configs/other_models/).
dinov3_os8_channels = dinov3_channels[1:]
dinov3_vitb16_os8 = dict(dinov3_vitb16, out_strides=(8, 16, 32),
                         pyramid=dict(type='paper', channels=dinov3_os8_channels))
d3s2_backbone_os8 = dict(d3s2_backbone, master=dinov3_vitb16_os8)

# Single-encoder baselines (replace the recipe's ResNet).
dinov3_alone_backbone = dict(dinov3_vitb16, _delete_=True)
sam2_alone_backbone = dict(sam2_hiera_bplus, _delete_=True, frozen=True)
dinov3_alone_backbone_os8 = dict(dinov3_vitb16_os8, _delete_=True)

# The model updates every fused experiment applies to its recipe (mmdet: panoptic_head; mmseg: decode_head), so an
# experiment config reads `model = {{_base_.d3s2_det_model}}`.
d3s2_det_model = dict(backbone=d3s2_backbone, neck=fusion_neck, panoptic_head=dict(in_channels=dinov3_channels))
d3s2_seg_model = dict(backbone=d3s2_backbone, neck=fusion_neck, decode_head=dict(in_channels=dinov3_channels))
