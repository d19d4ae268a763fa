# RQ5: the SAM2 auxiliary fine-tuned with the master (at the backbone lr) instead of frozen. The paper reports that
# this flattens SAM2's EF peak at OS16 (17.13 -> 9.30) and raises its SC (0.11 -> 0.46); SCEFHook logs both during
# training (custom_hooks below).
_base_ = ['../mask2former_d3s2_cityscapes.py']

model = dict(backbone=dict(freeze_auxiliary=False))
custom_hooks = [dict(type='mmfusion.SCEFHook', interval=5000), dict(type='mmfusion.RNGStateHook')]
