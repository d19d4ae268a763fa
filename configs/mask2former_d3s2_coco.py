# D3S2 on COCO instance segmentation, on mmdet's own Mask2Former recipe (LSJ 1024x1024, 8x2 images, 368,750
# iterations, steps at 327,778 / 355,092 -- the same schedule the paper runs at batch 3).
# Paper (AP/AP50/AP75/APs): D3S2 47.3/70.8/51.4/27.3; DINOv3 FT 46.0/69.9/49.3/24.2; SAM2 FZ 35.8/57.0/37.6/19.2.
# The paper uses 200 queries: --cfg-options model.panoptic_head.num_queries=200
_base_ = ['mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco.py', './_base_/encoders.py']
custom_imports = dict(imports=['mmfusion.models', 'mmfusion.engine'], allow_failed_imports=False)

model = {{_base_.d3s2_det_model}}
optim_wrapper = {{_base_.fusion_optim_wrapper}}

# mmdet's mask AP, and the boundary AP on the same annotations (docs/boundary_metrics.md).
val_evaluator = [
    {{_base_.val_evaluator}},
    dict(type='mmfusion.BoundaryAPMetric', ann_file={{_base_.val_evaluator.ann_file}},
         backend_args={{_base_.backend_args}})
]
test_evaluator = val_evaluator
# Exact resume: generator states in every checkpoint (mmfusion.RNGStateHook).
custom_hooks = [dict(type='mmfusion.RNGStateHook')]
