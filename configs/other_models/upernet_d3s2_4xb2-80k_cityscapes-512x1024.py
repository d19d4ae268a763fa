# Beyond the paper (which fuses only under Mask2Former): mmseg's UperNet on Cityscapes semantic segmentation, on the
# D3S2 fused backbone. mmseg's own recipe is unchanged (upernet_r50_4xb2-80k_cityscapes-512x1024.py: 4 GPUs x 2
# images, 80k iterations, SGD 0.01, poly 0.9, SyncBN heads); only the backbone, the neck and the channels differ
# (and mmseg's ImageNet ResNet weights, model.pretrained, are dropped):
# - neck = MetricGuidedNeck (DINOv3 master, SAM2 auxiliary at OS16); UperNet reads the fused pyramid
#   (in_channels = the master's 128/256/512/1024) and its auxiliary FCN head the OS16 level, the fused one (512);
# - the boundary IoU with the Cityscapes band beside mmseg's mIoU (docs/boundary_metrics.md).
# Compare with the master alone: configs/other_models/upernet_d3_4xb2-80k_cityscapes-512x1024.py.
_base_ = [
    'mmseg::upernet/upernet_r50_4xb2-80k_cityscapes-512x1024.py', '../_base_/encoders.py', '../_base_/recipes.py'
]
custom_imports = dict(imports=['mmfusion.models', 'mmfusion.engine'], allow_failed_imports=False)

model = dict(
    pretrained=None,  # mmseg's ImageNet ResNet, which EncoderDecoder would hand to the backbone
    backbone={{_base_.d3s2_backbone}},
    neck={{_base_.fusion_neck}},
    decode_head=dict(in_channels={{_base_.dinov3_channels}}),
    auxiliary_head=dict(in_channels=512))

val_evaluator = [
    {{_base_.val_evaluator}},
    dict(type='mmfusion.BoundaryIoUMetric', dilation_ratio={{_base_.cityscapes_boundary_ratio}})
]
test_evaluator = val_evaluator
