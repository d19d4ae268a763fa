# The master alone under mmdet's DINO (COCO boxes), the baseline of dino-4scale_d3s2_8xb2-12e_coco.py: DINOv3
# ViT-B/16 (fine-tuned, backbone lr x0.1) with the paper pyramid at OS 8/16/32, mmdet's ChannelMapper and recipe.
_base_ = ['mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py', '../_base_/encoders.py']
custom_imports = dict(imports=['mmfusion.models', 'mmfusion.engine'], allow_failed_imports=False)

model = dict(backbone={{_base_.dinov3_alone_backbone_os8}}, neck=dict(in_channels={{_base_.dinov3_os8_channels}}))
