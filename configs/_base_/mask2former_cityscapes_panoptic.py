# Mask2Former for Cityscapes panoptic segmentation (8 things + 11 stuff), trained with the paper's recipe (SPEC §7,
# recipes.py; the reference's configs/cityscapes/panoptic-segmentation/VFM/maskformer2_fuse.yaml): 3 images per
# iteration, 180k iterations, poly power 1.0, AMP, crop 512x1024, 100 queries, test at 1024x2048. It inherits
# mmdet's own COCO-panoptic Mask2Former config with Cityscapes data converted to COCO-panoptic format by
#   python tools/dataset_converters/cityscapes_panoptic.py data/cityscapes
# (mmfusion.CityscapesPanopticDataset reads it).
# Stock schedule: configs/mask2former_d3s2_8xb2-90k_cityscapes_panoptic.py.
_base_ = ['mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py', './recipes.py']

num_things_classes = 8
num_stuff_classes = 11
num_classes = num_things_classes + num_stuff_classes
crop_size = (512, 1024)  # (h, w)
data_root = 'data/cityscapes/'
dataset_type = 'mmfusion.CityscapesPanopticDataset'

model = dict(
    data_preprocessor=dict(batch_augments=[
        dict(type='BatchFixedSizePad', size=crop_size, img_pad_value=0, pad_mask=True, mask_pad_value=0,
             pad_seg=True, seg_pad_value=255)
    ]),
    panoptic_head=dict(
        num_things_classes=num_things_classes,
        num_stuff_classes=num_stuff_classes,
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])),
    panoptic_fusion_head=dict(num_things_classes=num_things_classes, num_stuff_classes=num_stuff_classes))

train_pipeline = [
    dict(type='LoadImageFromFile', to_float32=True, backend_args={{_base_.backend_args}}),
    dict(type='LoadPanopticAnnotations', with_bbox=True, with_mask=True, with_seg=True,
         backend_args={{_base_.backend_args}}),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=(2048, 1024), ratio_range=(0.5, 2.0), keep_ratio=True),
    # mmdet's RandomCrop takes (w, h), BatchFixedSizePad (h, w).
    dict(type='RandomCrop', crop_size=crop_size[::-1], crop_type='absolute', recompute_bbox=True,
         allow_negative_crop=True),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', to_float32=True, backend_args={{_base_.backend_args}}),
    dict(type='Resize', scale=(2048, 1024), keep_ratio=True),
    dict(type='LoadPanopticAnnotations', backend_args={{_base_.backend_args}}),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size={{_base_.cityscapes_batch_size}},
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/cityscapes_panoptic_train.json',
        data_prefix=dict(img='leftImg8bit/train/', seg='annotations/cityscapes_panoptic_train/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/cityscapes_panoptic_val.json',
        data_prefix=dict(img='leftImg8bit/val/', seg='annotations/cityscapes_panoptic_val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = dict(
    _delete_=True,
    type='CocoPanopticMetric',
    ann_file=data_root + 'annotations/cityscapes_panoptic_val.json',
    seg_prefix=data_root + 'annotations/cityscapes_panoptic_val/',
    backend_args={{_base_.backend_args}})
test_evaluator = val_evaluator

param_scheduler = {{_base_.cityscapes_param_scheduler}}
train_cfg = {{_base_.cityscapes_train_cfg}}
auto_scale_lr = {{_base_.cityscapes_auto_scale_lr}}
default_hooks = dict(checkpoint=dict(interval={{_base_.cityscapes_val_interval}}))
# Generator states in every checkpoint: --resume continues exactly as an uninterrupted run (docs/resume_and_drift.md).
custom_hooks = [dict(type='mmfusion.RNGStateHook')]
