# Synthetic-to-real: train on Urbansyn (converted by
#   python tools/dataset_converters/synthetic_sources.py urbansyn data/urbansyn
# to annotations/urbansyn_instances.json), validate on real Cityscapes (val split, as mask2former_d3s2_cityscapes.py).
# Paper (ViT-L encoders): AP 32.5. For the paper's encoder size:
#   --cfg-options model.backbone.master.arch=vitl16 model.backbone.master.checkpoint=checkpoints/<vitl16 file>
#   (the paper pyramid gives 128*s/4 channels for any encoder size, so the neck and head stay as they are).
_base_ = ['./mask2former_d3s2_cityscapes.py']

train_dataloader = dict(
    dataset=dict(data_root='data/urbansyn/', ann_file='annotations/urbansyn_instances.json', data_prefix=dict(img='')))
