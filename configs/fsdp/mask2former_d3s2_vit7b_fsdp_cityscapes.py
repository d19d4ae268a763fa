# D3S2 with the largest DINOv3, ViT-7B/16 (6.7B parameters), as the master and SAM2.1 Hiera-L as the frozen auxiliary
# (injected at OS16), on Cityscapes instance segmentation; beyond the paper (which stops at ViT-L). Trained with FSDP
# (mask2former_d3s2_fsdp_cityscapes.py: full sharding, one unit per ViT block, the auxiliary as one unit), bf16 mixed
# precision and activation checkpointing of the ViT blocks:
#   bash tools/dist_train.sh configs/fsdp/mask2former_d3s2_vit7b_fsdp_cityscapes.py 8
# Memory: the fp32 weights (27 GB), gradients (27 GB) and AdamW states (54 GB) of the master are sharded over the
# processes (8 GPUs: ~14 GB each), plus one gathered ViT block at a time and the checkpointed activations.
# Building: the ViT is built on the meta device (init_device='meta': shapes only, no memory, under a second); at the
# start of training init_weights assigns it the checkpoint's tensors (each process holds the full fp32 master in host
# memory, ~27 GB, until FSDP shards it onto its GPU). Without the checkpoint file init_weights stops (no random
# weights on meta). The paper pyramid gives 128*s/4 channels for any ViT width, so neck and head are unchanged.
_base_ = ['./mask2former_d3s2_fsdp_cityscapes.py']

model = dict(
    backbone=dict(
        master=dict(
            arch='vit7b16',
            checkpoint='checkpoints/dinov3_vit7b16_pretrain_lvd1689m-a955f4ea.pth',
            init_device='meta',
            with_cp=True),
        auxiliary=dict(arch='large', checkpoint='checkpoints/sam2.1_hiera_large.pt')))

# bf16 compute and communication of the parameters; gradients are reduced and the weights kept in float32.
strategy = dict(
    model_wrapper=dict(mixed_precision=dict(param_dtype='bfloat16', reduce_dtype='float32', buffer_dtype='float32')))
# The recipe's AMP autocasts to bfloat16 here, the dtype FSDP gathers the parameters in (float16 autocast would recast
# bf16 weights); the dynamic loss scale it keeps never overflows in bf16's float32 range.
optim_wrapper = dict(dtype='bfloat16')
