# Table 6, setting D: the reversed pair with both encoders frozen, SAM2 master + DINOv3 auxiliary (only the
# Mask2Former head trains). Paper, Cityscapes instance AP at OS4/8/16/32: 33.9 / 34.7 / 35.8 / 37.2. Other strides:
#   --cfg-options model.backbone.inject_stride=32
# Setting C (FT SAM2 master + FZ DINOv3 auxiliary) is configs/baselines/mask2former_s2d3_cityscapes.py.
_base_ = ['../baselines/mask2former_s2d3_cityscapes.py']

model = dict(backbone=dict(freeze_master=True))
