# Baseline: SAM2.1 Hiera-B+ alone, frozen (only the Mask2Former head trains), Cityscapes instance. Paper: AP 35.8.
_base_ = ['../_base_/mask2former_cityscapes_instance.py', '../_base_/encoders.py']
custom_imports = dict(imports=['mmfusion.models', 'mmfusion.engine'], allow_failed_imports=False)

model = dict(
    backbone={{_base_.sam2_alone_backbone}},
    panoptic_head=dict(in_channels={{_base_.sam2_channels}}))
optim_wrapper = {{_base_.fusion_optim_wrapper}}
