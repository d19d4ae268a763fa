# D3S2 Cityscapes semantic segmentation on mmseg's stock Mask2Former schedule instead of the paper's (8 GPUs x 2
# images, 90k iterations, poly power 0.9, float32: mmseg's mask2former_r50_8xb2-90k_cityscapes-512x1024.py).
#   tools/dist_train.sh configs/mask2former_d3s2_8xb2-90k_cityscapes_semantic.py 8
_base_ = ['./mask2former_d3s2_cityscapes_semantic.py']

train_dataloader = dict(batch_size={{_base_.stock_batch_size}})
optim_wrapper = {{_base_.stock_optim_wrapper}}
param_scheduler = {{_base_.stock_cityscapes_param_scheduler}}
train_cfg = {{_base_.stock_cityscapes_train_cfg}}
auto_scale_lr = {{_base_.stock_auto_scale_lr}}
