# D3S2 on COCO panoptic segmentation, trained with the paper's recipe (SPEC §7, _base_/recipes.py; the reference's
# configs/coco/panoptic-segmentation/VFM/maskformer2_fuse.yaml): mmdet's LSJ 1024x1024 schedule (368,750
# iterations, lr x0.1 at 327,778 / 355,092), 200 queries, 3 images per iteration, AMP. Paper: PQ 56.9 (DINOv3 55.6,
# SAM2 43.7). Stock mmdet recipe (8x2 images, 100 queries, float32):
# configs/mask2former_d3s2_8xb2-lsj-50e_coco_panoptic.py.
_base_ = [
    'mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py', './_base_/encoders.py', './_base_/recipes.py'
]
custom_imports = dict(imports=['mmfusion.models', 'mmfusion.engine'], allow_failed_imports=False)

model = dict(
    backbone={{_base_.d3s2_backbone}},
    neck={{_base_.fusion_neck}},
    panoptic_head=dict(in_channels={{_base_.dinov3_channels}}, num_queries={{_base_.coco_num_queries}}))
optim_wrapper = {{_base_.fusion_optim_wrapper}}
train_dataloader = dict(batch_size={{_base_.coco_panoptic_batch_size}})
auto_scale_lr = dict(base_batch_size={{_base_.coco_panoptic_batch_size}})
# Exact resume: generator states in every checkpoint (mmfusion.RNGStateHook).
custom_hooks = [dict(type='mmfusion.RNGStateHook')]
