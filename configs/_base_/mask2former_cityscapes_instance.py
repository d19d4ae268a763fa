# Mask2Former for Cityscapes instance segmentation (8 thing classes), trained with the paper's recipe (SPEC §7,
# recipes.py): 3 images per iteration, 180k iterations, poly power 1.0, AMP, crop 512x1024, 100 queries, test at
# 1024x2048. mmdet ships Mask2Former only for COCO, so this inherits mmdet's own COCO-instance config and swaps in
# mmdet's Cityscapes instance data (annotations/instancesonly_filtered_gtFine_{train,val}.json written by mmdet's
# cityscapes converter or by tools/dataset_converters/make_synthetic_cityscapes.py). The stock schedule (8x2 images,
# 90k iterations, poly 0.9, float32): configs/mask2former_d3s2_8xb2-90k_cityscapes.py.
_base_ = ['mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco.py', './recipes.py']

num_things_classes = 8
num_stuff_classes = 0
num_classes = num_things_classes + num_stuff_classes
crop_size = (512, 1024)  # (h, w)
data_root = 'data/cityscapes/'
dataset_type = 'CityscapesDataset'

model = dict(
    data_preprocessor=dict(batch_augments=[
        dict(type='BatchFixedSizePad', size=crop_size, img_pad_value=0, pad_mask=True, mask_pad_value=0,
             pad_seg=False)
    ]),
    panoptic_head=dict(
        num_things_classes=num_things_classes,
        num_stuff_classes=num_stuff_classes,
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])),
    panoptic_fusion_head=dict(num_things_classes=num_things_classes, num_stuff_classes=num_stuff_classes),
    test_cfg=dict(panoptic_on=False, semantic_on=False, instance_on=True))

train_pipeline = [
    dict(type='LoadImageFromFile', to_float32=True, backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=(2048, 1024), ratio_range=(0.5, 2.0), keep_ratio=True),
    # mmdet's RandomCrop takes (w, h), BatchFixedSizePad (h, w).
    dict(type='RandomCrop', crop_size=crop_size[::-1], crop_type='absolute', recompute_bbox=True,
         allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-5, 1e-5), by_mask=True),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', to_float32=True, backend_args={{_base_.backend_args}}),
    dict(type='Resize', scale=(2048, 1024), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]

train_dataloader = dict(
    batch_size={{_base_.cityscapes_batch_size}},
    dataset=dict(
        _delete_=True,
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instancesonly_filtered_gtFine_train.json',
        data_prefix=dict(img='leftImg8bit/train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=train_pipeline,
        backend_args={{_base_.backend_args}}))
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instancesonly_filtered_gtFine_val.json',
        data_prefix=dict(img='leftImg8bit/val/'),
        test_mode=True,
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=test_pipeline,
        backend_args={{_base_.backend_args}}))
test_dataloader = val_dataloader

# The stock COCO metric on the converted json, the official Cityscapes instance AP (cityscapesscripts), and
# the boundary AP on the same json (docs/boundary_metrics.md).
val_evaluator = [
    dict(type='CocoMetric', ann_file=data_root + 'annotations/instancesonly_filtered_gtFine_val.json',
         metric=['segm'], backend_args={{_base_.backend_args}}),
    dict(type='CityScapesMetric', seg_prefix=data_root + 'gtFine/val',
         outfile_prefix='./work_dirs/cityscapes_metric/instance', backend_args={{_base_.backend_args}}),
    dict(type='mmfusion.BoundaryAPMetric', ann_file=data_root + 'annotations/instancesonly_filtered_gtFine_val.json',
         dilation_ratio={{_base_.cityscapes_boundary_ratio}}, backend_args={{_base_.backend_args}})
]
test_evaluator = val_evaluator

param_scheduler = {{_base_.cityscapes_param_scheduler}}
train_cfg = {{_base_.cityscapes_train_cfg}}
auto_scale_lr = {{_base_.cityscapes_auto_scale_lr}}
default_hooks = dict(checkpoint=dict(interval={{_base_.cityscapes_val_interval}}))
# Generator states in every checkpoint: --resume continues exactly as an uninterrupted run (docs/resume_and_drift.md).
custom_hooks = [dict(type='mmfusion.RNGStateHook')]
