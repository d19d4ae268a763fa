# D3S2 on Cityscapes semantic segmentation (19 classes), mmseg's Mask2Former, trained with the paper's recipe
# (SPEC §7, _base_/recipes.py; the reference's configs/cityscapes/semantic-segmentation/VFM/maskformer2_fuse.yaml):
# 3 images per iteration, 180k iterations, poly power 1.0, AMP, crop 512x1024, 100 queries, test at 1024x2048.
# Paper: mIoU 82.8 (DINOv3 81.2, SAM2 79.7). Stock mmseg schedule (8x2 images, 90k, poly 0.9, float32):
# configs/mask2former_d3s2_8xb2-90k_cityscapes_semantic.py.
_base_ = [
    'mmseg::mask2former/mask2former_r50_8xb2-90k_cityscapes-512x1024.py', './_base_/encoders.py',
    './_base_/recipes.py'
]
custom_imports = dict(imports=['mmdet.models', 'mmfusion.models', 'mmfusion.engine'], allow_failed_imports=False)

model = {{_base_.d3s2_seg_model}}
optim_wrapper = {{_base_.fusion_optim_wrapper}}

train_dataloader = dict(batch_size={{_base_.cityscapes_batch_size}})
param_scheduler = {{_base_.cityscapes_param_scheduler}}
train_cfg = {{_base_.cityscapes_train_cfg}}
auto_scale_lr = {{_base_.cityscapes_auto_scale_lr}}
default_hooks = dict(checkpoint=dict(interval={{_base_.cityscapes_val_interval}}))

# mmseg's mIoU, and the boundary IoU with the Cityscapes band (docs/boundary_metrics.md).
val_evaluator = [
    {{_base_.val_evaluator}},
    dict(type='mmfusion.BoundaryIoUMetric', dilation_ratio={{_base_.cityscapes_boundary_ratio}})
]
test_evaluator = val_evaluator
# Exact resume: generator states in every checkpoint (mmfusion.RNGStateHook).
custom_hooks = [dict(type='mmfusion.RNGStateHook')]
