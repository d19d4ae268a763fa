# The master alone under mmseg's UperNet (Cityscapes semantic), the baseline of
# upernet_d3s2_4xb2-80k_cityscapes-512x1024.py (same recipe, data, channels and metrics): DINOv3 ViT-B/16 with the
# paper pyramid read directly by the heads.
_base_ = ['./upernet_d3s2_4xb2-80k_cityscapes-512x1024.py']

model = dict(backbone={{_base_.dinov3_alone_backbone}}, neck=None)
