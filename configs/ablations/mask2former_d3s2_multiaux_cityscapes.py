# Beyond the paper: two frozen auxiliaries, each injected where its edges help most. SAM2.1 Hiera-B+ replaces the
# DINOv3 master's OS16 level (the paper's s*) and SAM2.1 Hiera-L its OS8 level. Each auxiliary runs only up to its own
# stride. `tools/analysis/profile_vfm.py` proposes such a plan from a profile of several encoders (per stride, the
# encoder whose EF most exceeds the master's). Hiera-L weights: sam2.1_hiera_large.pt from the SAM2 repository.
_base_ = ['../mask2former_d3s2_cityscapes.py']

sam2_hiera_large = dict(type='mmfusion.SAM2Hiera', arch='large', checkpoint='checkpoints/sam2.1_hiera_large.pt')

model = dict(
    backbone=dict(auxiliary=[{{_base_.sam2_hiera_bplus}}, sam2_hiera_large], inject_stride=[16, 8]))
