# The reverse fusion S2D3: SAM2.1 Hiera-B+ master (fine-tuned) + DINOv3 ViT-B/16 auxiliary (frozen) at OS16,
# Cityscapes instance.
_base_ = ['../_base_/mask2former_cityscapes_instance.py', '../_base_/encoders.py']
custom_imports = dict(imports=['mmfusion.models', 'mmfusion.engine'], allow_failed_imports=False)

model = dict(
    backbone={{_base_.s2d3_backbone}},
    neck={{_base_.fusion_neck}},
    panoptic_head=dict(in_channels={{_base_.sam2_channels}}))
optim_wrapper = {{_base_.fusion_optim_wrapper}}
