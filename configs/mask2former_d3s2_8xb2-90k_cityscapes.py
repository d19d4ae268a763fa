# D3S2 Cityscapes instance segmentation on the stock schedule instead of the paper's: mmseg's Mask2Former Cityscapes
# schedule (8 GPUs x 2 images, 90k iterations, poly power 0.9, float32), which mmdet/mmseg users compare against.
#   tools/dist_train.sh configs/mask2former_d3s2_8xb2-90k_cityscapes.py 8
_base_ = ['./mask2former_d3s2_cityscapes.py']

max_iters = 90000
train_dataloader = dict(batch_size=2)
optim_wrapper = dict(type='OptimWrapper')
param_scheduler = dict(power=0.9, end=max_iters)
train_cfg = dict(max_iters=max_iters)
auto_scale_lr = dict(base_batch_size=16)
