# Baseline: DINOv3 ViT-B/16 alone (fine-tuned, backbone lr x0.1), Cityscapes instance. Paper: AP 35.6.
_base_ = ['../_base_/mask2former_cityscapes_instance.py', '../_base_/encoders.py']
custom_imports = dict(imports=['mmfusion.models', 'mmfusion.engine'], allow_failed_imports=False)

model = dict(
    backbone={{_base_.dinov3_alone_backbone}},
    panoptic_head=dict(in_channels={{_base_.dinov3_channels}}))
optim_wrapper = {{_base_.fusion_optim_wrapper}}
