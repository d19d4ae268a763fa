# Beyond the paper (which fuses only under Mask2Former): mmdet's Mask R-CNN with FPN on Cityscapes instances, on the
# D3S2 fused backbone. mmdet's own recipe is unchanged (mask-rcnn_r50_fpn_1x_cityscapes.py: 8 GPUs x 1 image, 8
# epochs x 8 repeats, SGD 0.01, step at epoch 7); only the backbone, the neck and the channels differ, and the
# COCO-pretrained Mask R-CNN it loads (load_from, a ResNet model) is dropped:
# - neck = [MetricGuidedNeck (assembles the fused pyramid: DINOv3 master, SAM2 auxiliary at OS16), FPN (mmdet's,
#   in_channels = the master's 128/256/512/1024)];
# - the boundary AP with the Cityscapes band beside mmdet's COCO and Cityscapes metrics (docs/boundary_metrics.md).
# Compare with the master alone: configs/other_models/mask-rcnn_d3_fpn_1x_cityscapes.py.
_base_ = ['mmdet::cityscapes/mask-rcnn_r50_fpn_1x_cityscapes.py', '../_base_/encoders.py', '../_base_/recipes.py']
custom_imports = dict(imports=['mmfusion.models', 'mmfusion.engine'], allow_failed_imports=False)

model = dict(
    backbone={{_base_.d3s2_backbone}},
    neck=[{{_base_.fusion_neck}}, dict(type='FPN', in_channels={{_base_.dinov3_channels}}, out_channels=256,
                                       num_outs=5)])
load_from = None

data_root = 'data/cityscapes/'
val_evaluator = [  # mmdet's two (cityscapes_instance.py), then the boundary AP on the same annotations
    dict(type='CocoMetric', ann_file=data_root + 'annotations/instancesonly_filtered_gtFine_val.json',
         metric=['bbox', 'segm'], backend_args={{_base_.backend_args}}),
    dict(type='CityScapesMetric', seg_prefix=data_root + 'gtFine/val',
         outfile_prefix='./work_dirs/cityscapes_metric/instance', backend_args={{_base_.backend_args}}),
    dict(type='mmfusion.BoundaryAPMetric', ann_file=data_root + 'annotations/instancesonly_filtered_gtFine_val.json',
         dilation_ratio={{_base_.cityscapes_boundary_ratio}}, backend_args={{_base_.backend_args}})
]
test_evaluator = val_evaluator
