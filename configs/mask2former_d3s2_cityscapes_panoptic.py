# D3S2 on Cityscapes panoptic segmentation (mmdet Mask2Former, COCO-panoptic format written by
# tools/dataset_converters/cityscapes_panoptic.py).
_base_ = ['./_base_/mask2former_cityscapes_panoptic.py', './_base_/encoders.py']
custom_imports = dict(imports=['mmfusion.models', 'mmfusion.engine'], allow_failed_imports=False)

model = {{_base_.d3s2_det_model}}
optim_wrapper = {{_base_.fusion_optim_wrapper}}
