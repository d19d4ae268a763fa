# D3S2 on KITTI-360 instance segmentation (the 8 Cityscapes thing classes). Paper: AP 21.9 (DINOv3 19.9, SAM2 14.3).
# Data: python tools/dataset_converters/kitti360.py data/kitti360  (writes annotations/kitti360_instances_{split}.json
# with file names relative to data/kitti360; images 1408x376).
_base_ = ['./mask2former_d3s2_cityscapes.py']

data_root = 'data/kitti360/'
train_dataloader = dict(
    dataset=dict(data_root=data_root, ann_file='annotations/kitti360_instances_train.json', data_prefix=dict(img='')))
val_dataloader = dict(
    dataset=dict(data_root=data_root, ann_file='annotations/kitti360_instances_val.json', data_prefix=dict(img='')))
test_dataloader = val_dataloader
# KITTI-360 has no Cityscapes-style gtFine folder: the COCO mask AP is the metric.
val_evaluator = dict(
    _delete_=True, type='CocoMetric', ann_file=data_root + 'annotations/kitti360_instances_val.json', metric=['segm'])
test_evaluator = val_evaluator
