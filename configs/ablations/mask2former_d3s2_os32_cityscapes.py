# Stride ablation (paper, Cityscapes instance AP): OS4 37.0, OS8 34.2, OS16 39.1 (the default config), OS32 35.3.
# Injects the frozen SAM2 auxiliary at OS32 instead of OS16; the auxiliary then runs up to OS32 only.
_base_ = ['../mask2former_d3s2_cityscapes.py']

model = dict(
    backbone=dict(aux_strides=(32, )),
    neck=dict(aux_channels=(896, ), aux_strides=(32, ), inject_stride=32))
