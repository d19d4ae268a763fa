# The master alone under mmdet's Mask R-CNN with FPN (Cityscapes instances), the baseline of
# mask-rcnn_d3s2_fpn_1x_cityscapes.py (same recipe, data and metrics): DINOv3 ViT-B/16 with the paper pyramid read
# directly by mmdet's FPN.
_base_ = ['./mask-rcnn_d3s2_fpn_1x_cityscapes.py']

model = dict(
    backbone={{_base_.dinov3_alone_backbone}},
    neck=dict(_delete_=True, type='FPN', in_channels={{_base_.dinov3_channels}}, out_channels=256, num_outs=5))
