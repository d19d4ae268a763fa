# Beyond the paper (which fuses only under Mask2Former): mmdet's DINO object detector (4 scales, COCO boxes) on the
# D3S2 fused backbone. mmdet's own recipe is unchanged (dino-4scale_r50_8xb2-12e_coco.py: 8 GPUs x 2 images, 12
# epochs, AdamW 1e-4, backbone lr x0.1); only the backbone, the neck and the channels differ:
# - the DINOv3 master gives the 3 levels DINO's ChannelMapper reads (OS 8/16/32; the 4th, OS64, is ChannelMapper's
#   extra conv), the frozen SAM2 auxiliary replaces OS16, as in the paper;
# - neck = [MetricGuidedNeck (assembles the fused pyramid), ChannelMapper (mmdet's, in_channels = the master's)].
# Compare with the master alone: configs/other_models/dino-4scale_d3_8xb2-12e_coco.py (tools/analysis/get_flops.py
# --compare). Weights: configs/_base_/encoders.py.
_base_ = ['mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py', '../_base_/encoders.py']
custom_imports = dict(imports=['mmfusion.models', 'mmfusion.engine'], allow_failed_imports=False)

model = dict(
    backbone={{_base_.d3s2_backbone_os8}},
    neck=[{{_base_.fusion_neck}}, dict(type='ChannelMapper', in_channels={{_base_.dinov3_os8_channels}}, kernel_size=1,
                                       out_channels=256, act_cfg=None, norm_cfg=dict(type='GN', num_groups=32),
                                       num_outs=4)])
