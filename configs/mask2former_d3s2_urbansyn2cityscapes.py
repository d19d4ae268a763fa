# Synthetic-to-real: train on Urbansyn (converted by
#   python tools/dataset_converters/synthetic_sources.py urbansyn data/urbansyn
# to annotations/urbansyn_instances.json), validate on real Cityscapes (val split, as mask2former_d3s2_cityscapes.py).
# Paper: AP 32.5 with its large encoders, used here: DINOv3 ViT-L/16 master (fine-tuned) + SAM2.1 Hiera-L auxiliary
# (frozen, injected at OS16). The paper pyramid gives 128*s/4 channels for any ViT width, so neck and head stay as in
# the flagship; Hiera-L's OS16 stage (576 channels) is aligned to the master's 512 by mean_pad (evenly spaced
# channels). Too large for one GPU? configs/fsdp/ shards the same model with FSDP (see docs/distributed.md).
_base_ = ['./mask2former_d3s2_cityscapes.py']

model = dict(
    backbone=dict(
        master=dict(arch='vitl16', checkpoint='checkpoints/dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth'),
        auxiliary=dict(arch='large', checkpoint='checkpoints/sam2.1_hiera_large.pt')))

train_dataloader = dict(
    dataset=dict(data_root='data/urbansyn/', ann_file='annotations/urbansyn_instances.json', data_prefix=dict(img='')))
