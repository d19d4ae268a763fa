# The embedded demo (`make demo`): fused Mask2Former semantic segmentation (mmseg), trained from scratch on CPU on
# the synthetic Cityscapes-format scenes tools/demo.py generates into data/demo_cityscapes/ (gtFine
# *_labelTrainIds.png, 19 classes). It inherits the flagship semantic config (DINOv3 master + SAM2.1 auxiliary,
# MasterAuxBackbone, MetricGuidedNeck, mmseg Mask2FormerHead); tools/demo.py then applies the profile's selection
# (master, auxiliary, s*, head in_channels) through tools/analysis/profile_vfm.py --emit-config. What differs from
# the flagship, and why:
#   * smaller real architectures of the same families (DINOv3 ViT-S/16, SAM2.1 Hiera-T) in their parameter-free
#     form (DINOv3 pyramid without the new 1x1 projections: 384 channels at every stride), so that the model the
#     profile scores is the model that is trained; the pixel decoder's input projections map them to 256 channels;
#   * data: generated 256x512 scenes, trained and tested at half that size, 128x256 (CPU; the predictions are
#     upsampled to 256x512 for the metrics);
#   * a lighter head for CPU: 24 queries, 2 decoder layers, 1 pixel-decoder layer, 1024 sampled points
#     (flagship: 100 / 9 / 6 / 12544): the head's share of a step goes to more iterations;
#   * a from-scratch schedule: lr 5e-4 with a linear warm-up, no backbone lr x0.1 (the encoders are random unless
#     the documented checkpoints are present), poly decay, 560 iterations (tools/demo.py --iters N changes it),
#     a fixed seed (the same run on every machine of the same kind);
#   * weights: the documented checkpoints when present, else random initialisation (tools/demo.py says so).
_base_ = ['../mask2former_d3s2_cityscapes_semantic.py']

data_root = 'data/demo_cityscapes/'
scene_size = (256, 512)  # (h, w) of the generated scenes (tools/demo.py)
img_size = (128, 256)  # (h, w) the model sees in training and testing
max_iters = 560
# Boundary band 0.02 of the diagonal (11 px at 256x512), not Cityscapes' 0.005 (3 px): the scenes are a quarter of
# Cityscapes' resolution and the model predicts at half of theirs, so a 3-px band would measure mostly the 2x upsampling.
demo_boundary_ratio = 0.02
warmup_iters = 50
num_train_scenes = 64  # tools/demo.py generates this many train scenes (and num_val_scenes val scenes)
num_val_scenes = 8
randomness = dict(seed=0)  # reproducible: the same initial weights and data order on every run
dinov3_vits16 = dict(type='mmfusion.DINOv3ViT', arch='vits16', pyramid=dict(type='paper', project=False),
                     checkpoint=None)
sam2_hiera_tiny = dict(type='mmfusion.SAM2Hiera', arch='tiny', checkpoint=None)
# The encoders tools/demo.py profiles and fuses when the documented checkpoints are absent (random weights); with
# them it uses configs/_base_/encoders.py's ViT-B/16 and Hiera-B+ (DINOv3 in the same parameter-free form).
random_init_encoders = dict(dinov3=dinov3_vits16, sam2=sam2_hiera_tiny)

model = dict(
    data_preprocessor=dict(size=img_size),
    backbone=dict(master=dict(dinov3_vits16, _delete_=True), auxiliary=dict(sam2_hiera_tiny, _delete_=True),
                  inject_stride=16),
    decode_head=dict(
        in_channels=[384, 384, 384, 384],  # the master's channels per stride (tools/demo.py writes the profiled ones)
        num_queries=24,
        pixel_decoder=dict(encoder=dict(num_layers=1)),
        transformer_decoder=dict(num_layers=2),
        train_cfg=dict(num_points=1024)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=img_size[::-1], ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=img_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_size[::-1], keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = [dict(type='IoUMetric', iou_metrics=['mIoU']),
                 dict(type='mmfusion.BoundaryIoUMetric', dilation_ratio=demo_boundary_ratio)]
test_evaluator = val_evaluator

# The demo's own CPU schedule: float32 (the paper's AMP needs a GPU), 2 images per iteration, from-scratch lr.
auto_scale_lr = dict(base_batch_size=2)
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(lr=5e-4),
    paramwise_cfg=dict(custom_keys=dict(backbone=dict(lr_mult=1.0, decay_mult=1.0))))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='PolyLR', eta_min=0, power=0.9, by_epoch=False, begin=warmup_iters, end=max_iters)
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1, save_best=None),
    visualization=dict(type='SegVisualizationHook'))
log_processor = dict(window_size=10)
custom_hooks = [
    # SC/EF of both pyramids on one probe image before, during and after training (tools/demo.py sets the interval
    # to half the run); probed at the scene size, where OS32 maps are large enough for SC/EF
    dict(type='mmfusion.SCEFHook', interval=200, num_probes=1, probe_size=scene_size),
    dict(type='mmfusion.RNGStateHook')
]
