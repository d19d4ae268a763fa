# D3S2 on COCO panoptic segmentation, on mmdet's own Mask2Former panoptic recipe. Paper: PQ 56.9 (DINOv3 55.6,
# SAM2 43.7).
_base_ = ['mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py', './_base_/encoders.py']
custom_imports = dict(imports=['mmfusion.models', 'mmfusion.engine'], allow_failed_imports=False)

model = {{_base_.d3s2_det_model}}
optim_wrapper = {{_base_.fusion_optim_wrapper}}
# Exact resume: generator states in every checkpoint (mmfusion.RNGStateHook).
custom_hooks = [dict(type='mmfusion.RNGStateHook')]
