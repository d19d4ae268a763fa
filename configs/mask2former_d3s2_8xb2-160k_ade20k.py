# D3S2 ADE20K semantic segmentation on mmseg's stock Mask2Former schedule instead of the reference's (8 GPUs x 2
# images, 160k iterations, poly power 0.9, float32: mmseg's mask2former_r50_8xb2-160k_ade20k-512x512.py).
#   tools/dist_train.sh configs/mask2former_d3s2_8xb2-160k_ade20k.py 8
_base_ = ['./mask2former_d3s2_ade20k.py']

train_dataloader = dict(batch_size={{_base_.stock_batch_size}})
optim_wrapper = {{_base_.stock_optim_wrapper}}
param_scheduler = dict(power=0.9)
