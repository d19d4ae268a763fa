# D3S2 on ADE20K semantic segmentation (150 classes), mmseg's Mask2Former. Paper: mIoU 57.5 (DINOv3 56.1, SAM2 46.9).
# The paper states no ADE20K recipe, so this trains the reference's own ADE20K semantic recipe (_base_/recipes.py):
# 16 images per iteration, 160k iterations, poly power 1.0, AMP, crop 512x512, 100 queries, test short side 512; the
# optimizer, clipping and backbone lr as every paper config. On 8 GPUs: tools/dist_train.sh CONFIG 8 --cfg-options
# train_dataloader.batch_size=2 (the same 16 images per iteration). Stock mmseg schedule (poly 0.9, float32):
# configs/mask2former_d3s2_8xb2-160k_ade20k.py.
_base_ = [
    'mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py', './_base_/encoders.py', './_base_/recipes.py'
]
custom_imports = dict(imports=['mmdet.models', 'mmfusion.models', 'mmfusion.engine'], allow_failed_imports=False)

model = {{_base_.d3s2_seg_model}}
optim_wrapper = {{_base_.fusion_optim_wrapper}}

train_dataloader = dict(batch_size={{_base_.ade20k_batch_size}})
param_scheduler = {{_base_.ade20k_param_scheduler}}
train_cfg = {{_base_.ade20k_train_cfg}}
auto_scale_lr = {{_base_.ade20k_auto_scale_lr}}

# mmseg's mIoU, and the boundary IoU (docs/boundary_metrics.md).
val_evaluator = [
    {{_base_.val_evaluator}},
    dict(type='mmfusion.BoundaryIoUMetric', dilation_ratio={{_base_.ade20k_boundary_ratio}})
]
test_evaluator = val_evaluator
# Exact resume: generator states in every checkpoint (mmfusion.RNGStateHook).
custom_hooks = [dict(type='mmfusion.RNGStateHook')]
