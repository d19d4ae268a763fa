# D3S2 on Cityscapes semantic segmentation (19 classes), on mmseg's own Mask2Former Cityscapes recipe
# (90k iterations, 8x2 images, crop 512x1024, poly 0.9). Paper: mIoU 82.8 (DINOv3 81.2, SAM2 79.7), trained with
# batch 3 for 180k iterations, poly 1.0, AMP (SPEC §7).
_base_ = ['mmseg::mask2former/mask2former_r50_8xb2-90k_cityscapes-512x1024.py', './_base_/encoders.py']
custom_imports = dict(imports=['mmdet.models', 'mmfusion.models', 'mmfusion.engine'], allow_failed_imports=False)

model = {{_base_.d3s2_seg_model}}
optim_wrapper = {{_base_.fusion_optim_wrapper}}

# mmseg's mIoU, and the boundary IoU (docs/boundary_metrics.md).
val_evaluator = [{{_base_.val_evaluator}}, dict(type='mmfusion.BoundaryIoUMetric')]
test_evaluator = val_evaluator
# Exact resume: generator states in every checkpoint (mmfusion.RNGStateHook).
custom_hooks = [dict(type='mmfusion.RNGStateHook')]
