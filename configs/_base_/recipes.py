# The paper's training recipes (SPEC §7: the reference's detectron2 configs, configs/<dataset>/*/VFM|vfm/
# maskformer2_fuse.yaml of gyc-code/metric-guided-fusion), as variables the dataset bases reference with
# {{_base_.NAME}}: one place for each number. What every recipe shares comes from the mmdet/mmseg Mask2Former bases
# the configs inherit (AdamW lr 1e-4, weight decay 0.05, full-model gradient clipping L2 0.01) and from
# encoders.py (backbone lr x0.1, no decay on norms and embeddings, AMP). Stock mmdet/mmseg schedules:
# the configs named the mmdet way, e.g. configs/mask2former_d3s2_8xb2-90k_cityscapes.py.
#
# Images per iteration are the reference's IMS_PER_BATCH on one GPU; auto_scale_lr states that batch, so
# `tools/train.py CONFIG --auto-scale-lr` (or tools/dist_train.sh ... --auto-scale-lr) scales the lr linearly with the
# images per iteration actually used (MMEngine: lr x (GPUs x batch_size) / base_batch_size).

# Cityscapes instance / semantic / panoptic (and KITTI-360, synthetic-to-real): 3 images per iteration, 180k
# iterations, poly schedule with power 1.0 (the reference's WarmupPolyLR with POLY_LR_POWER=1, no warm-up).
cityscapes_batch_size = 3
cityscapes_max_iters = 180000
cityscapes_val_interval = 5000
cityscapes_param_scheduler = dict(
    _delete_=True, type='PolyLR', eta_min=0, power=1.0, begin=0, end=cityscapes_max_iters, by_epoch=False)
cityscapes_train_cfg = dict(type='IterBasedTrainLoop', max_iters=cityscapes_max_iters,
                            val_interval=cityscapes_val_interval, dynamic_intervals=None)
cityscapes_auto_scale_lr = dict(enable=False, base_batch_size=cityscapes_batch_size)

# COCO instance / panoptic: mmdet's LSJ 1024x1024 schedule is the reference's (368,750 iterations, lr x0.1 at
# 327,778 and 355,092); the fuse configs use 200 queries and 1 (instance) or 3 (panoptic) images per iteration.
coco_num_queries = 200
coco_instance_batch_size = 1
coco_panoptic_batch_size = 3

# ADE20K semantic: the paper gives no ADE20K fuse config, so this is the reference's own ADE20K semantic recipe
# (configs/ade20k/semantic-segmentation/Base-ADE20K-SemanticSegmentation.yaml): 16 images per iteration, 160k
# iterations, crop 512x512, test short side 512, poly power 1.0 (the same WarmupPolyLR as Cityscapes), AMP.
ade20k_batch_size = 16
ade20k_max_iters = 160000
ade20k_param_scheduler = dict(
    _delete_=True, type='PolyLR', eta_min=0, power=1.0, begin=0, end=ade20k_max_iters, by_epoch=False)
ade20k_train_cfg = dict(type='IterBasedTrainLoop', max_iters=ade20k_max_iters, val_interval=5000)
ade20k_auto_scale_lr = dict(enable=False, base_batch_size=ade20k_batch_size)

# Width of the boundary band of the boundary metrics (mmfusion.BoundaryAPMetric / BoundaryIoUMetric), a fraction of
# the image diagonal, per dataset as the Boundary IoU authors evaluate it (boundary-iou-api tools/*_evaluation.py
# defaults): Cityscapes 0.005 (11 px at 1024x2048), COCO and LVIS 0.02 (about 16 px at 640x480). ADE20K (not
# evaluated by the authors; COCO-like photos of about 512 px) takes COCO's. docs/boundary_metrics.md lists every config.
cityscapes_boundary_ratio = 0.005
coco_boundary_ratio = 0.02
ade20k_boundary_ratio = 0.02

# The stock mmdet/mmseg Mask2Former schedules, for the configs named the mmdet way (mask2former_d3s2_8xb2-*.py):
# 8 GPUs x 2 images, float32 (mmdet/mmseg train without AMP); Cityscapes: mmseg's 90k iterations, poly power 0.9.
stock_batch_size = 2
stock_auto_scale_lr = dict(base_batch_size=16)
stock_optim_wrapper = dict(type='OptimWrapper')
stock_cityscapes_max_iters = 90000
stock_cityscapes_param_scheduler = dict(power=0.9, end=stock_cityscapes_max_iters)
stock_cityscapes_train_cfg = dict(max_iters=stock_cityscapes_max_iters)
