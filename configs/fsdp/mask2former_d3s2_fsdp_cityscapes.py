# D3S2 on Cityscapes instance segmentation (configs/mask2former_d3s2_cityscapes.py, same model, data, schedule and
# optimizer) trained with FSDP: MMEngine's FlexibleRunner + FSDPStrategy, parameters, gradients and optimizer states
# fully sharded across the processes. For masters too large for one GPU (see mask2former_d3s2_vit7b_fsdp_cityscapes.py);
# launch as any distributed run:
#   bash tools/dist_train.sh configs/fsdp/mask2former_d3s2_fsdp_cityscapes.py 8
# What becomes a unit of its own (mmfusion.fusion_wrap_policy): every transformer block of the DINOv3 master, and the
# frozen SAM2 auxiliary as a whole (all its parameters frozen, so it shards like the rest and never mixes frozen and
# trainable parameters in one flat tensor). use_orig_params=True (MMEngine's default) keeps the parameter names, which
# the optimizer constructor (frozen parameters left out, no decay on norms and embeddings) and checkpoints need, and
# lets the root unit hold the master's frozen mask_token beside trainable weights.
# Checkpoints: 'full' gathers one ordinary state dict on rank 0 (the same file layout as a DDP run, so tools/test.py
# and --resume read it); gradient clipping uses FSDP's global norm (mmfusion.compat).
_base_ = ['../mask2former_d3s2_cityscapes.py']
custom_imports = dict(
    imports=['mmfusion.models', 'mmfusion.engine', 'mmfusion.engine.fsdp'], allow_failed_imports=False)

runner_type = 'FlexibleRunner'
strategy = dict(
    type='FSDPStrategy',
    model_wrapper=dict(
        type='MMFullyShardedDataParallel',
        sharding_strategy='FULL_SHARD',
        use_orig_params=True,
        auto_wrap_policy=dict(type='mmfusion.fusion_wrap_policy', layer_classes=['DINOv3ViTLayer'])),
    state_dict_cfg='full')
# The recipe's AMP (float16 autocast, dynamic loss scale) with FSDP's sharded gradients: MMEngine's AmpOptimWrapper
# then scales the loss with torch's ShardedGradScaler.
optim_wrapper = dict(use_fsdp=True)
