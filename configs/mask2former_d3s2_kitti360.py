# D3S2 on KITTI-360 instance segmentation (the 8 Cityscapes thing classes). Paper: AP 21.9 (DINOv3 19.9, SAM2 14.3).
# Data: python tools/dataset_converters/kitti360.py data/kitti360  (writes annotations/kitti360_instances_{split}.json
# with file names relative to data/kitti360; images 1408x376).
# Recipe: the flagship's (3 images per iteration, 180k iterations, poly power 1.0, AMP, 100 queries) with the
# reference's KITTI-360 sizes (configs/cityscapes/instance-segmentation/dinoV3/maskformer2_kitti.yaml): short side
# drawn from 413..752 with the long side capped at 1504 (detectron2's ResizeShortestEdge; the cap wins for
# 1408x376 images, so every draw gives 1504x401), crop 384x672; test short side 384, long side capped at 752.
_base_ = ['./mask2former_d3s2_cityscapes.py']

data_root = 'data/kitti360/'
crop_size = (384, 672)  # (h, w)
model = dict(
    data_preprocessor=dict(batch_augments=[
        dict(type='BatchFixedSizePad', size=crop_size, img_pad_value=0, pad_mask=True, mask_pad_value=0,
             pad_seg=False)
    ]))
train_pipeline = [
    dict(type='LoadImageFromFile', to_float32=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    # mmdet's (w, h) scales: each keeps the aspect ratio within long side 1504 and short side s, as detectron2 does.
    dict(type='RandomChoiceResize', scales=[(1504, int(x * 0.1 * 376)) for x in range(11, 21)], keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size[::-1], crop_type='absolute', recompute_bbox=True,
         allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-5, 1e-5), by_mask=True),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', to_float32=True),
    dict(type='Resize', scale=(752, 384), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    dataset=dict(data_root=data_root, ann_file='annotations/kitti360_instances_train.json', data_prefix=dict(img=''),
                 pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(data_root=data_root, ann_file='annotations/kitti360_instances_val.json', data_prefix=dict(img=''),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
# KITTI-360 has no Cityscapes-style gtFine folder: the COCO mask AP, and the boundary AP with the Cityscapes band
# (0.005 of the diagonal, 7 px at 1408x376): the same street scenes and object scales, which the Boundary IoU authors
# evaluate with 0.005; COCO's 0.02 would make every object under ~60 px wide all boundary.
val_evaluator = [
    dict(type='CocoMetric', ann_file=data_root + 'annotations/kitti360_instances_val.json', metric=['segm']),
    dict(type='mmfusion.BoundaryAPMetric', ann_file=data_root + 'annotations/kitti360_instances_val.json',
         dilation_ratio={{_base_.cityscapes_boundary_ratio}})
]
test_evaluator = val_evaluator
