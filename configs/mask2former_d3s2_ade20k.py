# D3S2 on ADE20K semantic segmentation (150 classes), on mmseg's own Mask2Former ADE20K recipe (160k iterations,
# 8x2 images, crop 512x512). Paper: mIoU 57.5 (DINOv3 56.1, SAM2 46.9).
_base_ = ['mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py', './_base_/encoders.py']
custom_imports = dict(imports=['mmdet.models', 'mmfusion'], allow_failed_imports=False)

model = dict(
    backbone={{_base_.d3s2_backbone}},
    neck={{_base_.d3s2_neck}},
    decode_head=dict(in_channels={{_base_.dinov3_channels}}))
model_wrapper_cfg = {{_base_.fusion_model_wrapper_cfg}}
optim_wrapper = dict(constructor='mmfusion.LayerDecayOptimWrapperConstructor',
                     paramwise_cfg={{_base_.fusion_paramwise_cfg}})
