# D3S2 on Cityscapes instance segmentation, the paper's main setting: DINOv3 ViT-B/16 master (fine-tuned,
# backbone lr x0.1) + SAM2.1 Hiera-B+ auxiliary (frozen) injected at OS16, Mask2Former (mmdet).
# Paper: AP 39.5 (DINOv3 alone 35.6, SAM2 alone 35.8). Stride ablation: configs/ablations/.
_base_ = ['./_base_/mask2former_cityscapes_instance.py', './_base_/encoders.py']
custom_imports = dict(imports=['mmfusion.models', 'mmfusion.engine'], allow_failed_imports=False)

model = {{_base_.d3s2_det_model}}
optim_wrapper = {{_base_.fusion_optim_wrapper}}
