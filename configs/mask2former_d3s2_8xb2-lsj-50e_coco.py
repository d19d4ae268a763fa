# D3S2 COCO instance segmentation on mmdet's stock Mask2Former recipe instead of the paper's (8 GPUs x 2 images,
# 100 queries, float32; the same LSJ 1024x1024 schedule: mmdet's mask2former_r50_8xb2-lsj-50e_coco.py).
#   tools/dist_train.sh configs/mask2former_d3s2_8xb2-lsj-50e_coco.py 8
_base_ = ['./mask2former_d3s2_coco.py']

model = dict(panoptic_head=dict(num_queries=100))
train_dataloader = dict(batch_size={{_base_.stock_batch_size}})
optim_wrapper = {{_base_.stock_optim_wrapper}}
auto_scale_lr = {{_base_.stock_auto_scale_lr}}
