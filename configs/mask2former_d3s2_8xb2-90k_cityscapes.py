# D3S2 Cityscapes instance segmentation on the stock schedule instead of the paper's: mmseg's Mask2Former Cityscapes
# schedule (8 GPUs x 2 images, 90k iterations, poly power 0.9, float32), which mmdet/mmseg users compare against.
#   tools/dist_train.sh configs/mask2former_d3s2_8xb2-90k_cityscapes.py 8
_base_ = ['./mask2former_d3s2_cityscapes.py']

train_dataloader = dict(batch_size={{_base_.stock_batch_size}})
optim_wrapper = {{_base_.stock_optim_wrapper}}
param_scheduler = {{_base_.stock_cityscapes_param_scheduler}}
train_cfg = {{_base_.stock_cityscapes_train_cfg}}
auto_scale_lr = {{_base_.stock_auto_scale_lr}}
