# D3S2 on COCO instance segmentation, trained with the paper's recipe (SPEC §7, _base_/recipes.py; the reference's
# configs/coco/instance-segmentation/vfm/maskformer2_fuse.yaml): mmdet's LSJ 1024x1024 schedule (368,750 iterations,
# lr x0.1 at 327,778 / 355,092), 200 queries, 1 image per iteration, AMP.
# Paper (AP/AP50/AP75/APs): D3S2 47.3/70.8/51.4/27.3; DINOv3 FT 46.0/69.9/49.3/24.2; SAM2 FZ 35.8/57.0/37.6/19.2.
# Stock mmdet recipe (8x2 images, 100 queries, float32): configs/mask2former_d3s2_8xb2-lsj-50e_coco.py.
_base_ = ['mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco.py', './_base_/encoders.py', './_base_/recipes.py']
custom_imports = dict(imports=['mmfusion.models', 'mmfusion.engine'], allow_failed_imports=False)

model = dict(
    backbone={{_base_.d3s2_backbone}},
    neck={{_base_.fusion_neck}},
    panoptic_head=dict(in_channels={{_base_.dinov3_channels}}, num_queries={{_base_.coco_num_queries}}))
optim_wrapper = {{_base_.fusion_optim_wrapper}}
train_dataloader = dict(batch_size={{_base_.coco_instance_batch_size}})
auto_scale_lr = dict(base_batch_size={{_base_.coco_instance_batch_size}})

# mmdet's mask AP, and the boundary AP on the same annotations with COCO's band (docs/boundary_metrics.md).
val_evaluator = [
    {{_base_.val_evaluator}},
    dict(type='mmfusion.BoundaryAPMetric', ann_file={{_base_.val_evaluator.ann_file}},
         dilation_ratio={{_base_.coco_boundary_ratio}}, backend_args={{_base_.backend_args}})
]
test_evaluator = val_evaluator
# Exact resume: generator states in every checkpoint (mmfusion.RNGStateHook).
custom_hooks = [dict(type='mmfusion.RNGStateHook')]
