# Table 6, setting B: DINOv3 master frozen (its pyramid's new 1x1 convs still train) + SAM2 auxiliary frozen.
# Paper, Cityscapes instance AP at OS4/8/16/32: 27.1 / 32.0 / 35.4 / 29.2 (s* = OS16). Other strides:
#   --cfg-options model.backbone.inject_stride=8
# Setting A (FT master + FZ auxiliary) is configs/mask2former_d3s2_cityscapes.py.
_base_ = ['../mask2former_d3s2_cityscapes.py']

model = dict(backbone=dict(freeze_master=True))
