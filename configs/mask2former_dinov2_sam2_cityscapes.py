# DINOv2 ViT-B/14 with registers (master, fine-tuned, backbone lr x0.1) + SAM2.1 Hiera-B+ (auxiliary, frozen) injected
# at OS16, Mask2Former (mmdet), Cityscapes instance segmentation. Beyond the paper: the same fusion as
# mask2former_d3s2_cityscapes.py with DINOv2 in place of DINOv3, the master built by mmfusion.HFBackbone from a
# Hugging Face folder (docs/hf_backbones.md). Profile the pair first to check the choice of master and s*:
#   python tools/analysis/profile_vfm.py ...   (see README "Profiling")
#
# Weights (read by init_weights when training starts; nothing is downloaded at run time):
#   huggingface-cli download facebook/dinov2-with-registers-base --local-dir checkpoints/dinov2-with-registers-base
#   SAM2.1 Hiera-B+: checkpoints/sam2.1_hiera_base_plus.pt (see configs/_base_/encoders.py)
# Another folder: --cfg-options model.backbone.master.checkpoint=/path/to/folder (its config.json must match
# `config` below on every field that changes the forward; init_weights names any that differ). Building reads no
# file: the architecture is stated here, so testing from a trained checkpoint needs only that checkpoint.
_base_ = ['./_base_/mask2former_cityscapes_instance.py', './_base_/encoders.py']
custom_imports = dict(imports=['mmfusion.models', 'mmfusion.engine'], allow_failed_imports=False)

dinov2_checkpoint = 'checkpoints/dinov2-with-registers-base'
# facebook/dinov2-with-registers-base (config.json fields that differ from transformers' defaults, and the size).
dinov2_config = dict(model_type='dinov2_with_registers', hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                     mlp_ratio=4, patch_size=14, image_size=518, num_register_tokens=4)
# The paper pyramid (SPEC §5): the last block's tokens (stride 14) resampled to each stride, then a new 1x1 conv to
# 128*s/4 channels. The only channel list of this config; the Mask2Former head takes it as in_channels.
master_channels = [128, 256, 512, 1024]
dinov2_vitb14_reg = dict(
    type='mmfusion.HFBackbone',
    checkpoint=dinov2_checkpoint,
    config=dinov2_config,
    pyramid=dict(type='paper', channels=master_channels))

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmfusion.MasterAuxBackbone',
        master=dinov2_vitb14_reg,
        auxiliary={{_base_.sam2_hiera_bplus}},
        inject_stride=16,
        freeze_master=False,
        freeze_auxiliary=True,
        align='mean_pad'),
    neck={{_base_.fusion_neck}},
    panoptic_head=dict(in_channels=master_channels))
optim_wrapper = {{_base_.fusion_optim_wrapper}}
