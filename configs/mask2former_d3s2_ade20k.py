# D3S2 on ADE20K semantic segmentation (150 classes), on mmseg's own Mask2Former ADE20K recipe (160k iterations,
# 8x2 images, crop 512x512). Paper: mIoU 57.5 (DINOv3 56.1, SAM2 46.9).
_base_ = ['mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py', './_base_/encoders.py']
custom_imports = dict(imports=['mmdet.models', 'mmfusion.models', 'mmfusion.engine'], allow_failed_imports=False)

model = {{_base_.d3s2_seg_model}}
optim_wrapper = {{_base_.fusion_optim_wrapper}}

# mmseg's mIoU, and the boundary IoU (docs/boundary_metrics.md).
val_evaluator = [{{_base_.val_evaluator}}, dict(type='mmfusion.BoundaryIoUMetric')]
test_evaluator = val_evaluator
# Exact resume: generator states in every checkpoint (mmfusion.RNGStateHook).
custom_hooks = [dict(type='mmfusion.RNGStateHook')]
