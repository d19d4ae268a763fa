# Beyond the paper: layer-wise lr decay on the DINOv3 master (BEiT / ViTDet practice for fine-tuning ViTs): block i of
# 12 gets the backbone lr x 0.8^(12 - i), the patch embedding and tokens x 0.8^13, the pyramid the backbone lr.
_base_ = ['../mask2former_d3s2_cityscapes.py']

optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.8, layer_decay_prefixes=['backbone.master']))
