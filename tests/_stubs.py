"""Tiny stand-in backbones for tests: a conv stack with the mmfusion backbone contract (``out_strides``,
``out_channels``, maps of shape (B, C, ceil(H/s), ceil(W/s)) ordered by stride)."""
import torch.nn as nn
from mmengine.model import BaseModule

from mmfusion.registry import MODELS

ALL_STRIDES = (4, 8, 16, 32)


@MODELS.register_module(name='StubPyramid', force=True)
class StubPyramid(BaseModule):
    """Stride-4 stem then one stride-2 stage per level; stops after the largest stride asked for.

    Args:
        channels (tuple[int]): Channels at strides 4, 8, 16, 32. Defaults to (4, 8, 16, 32).
        out_strides (tuple[int]): Strides to return. Defaults to (4, 8, 16, 32).
    """

    def __init__(self, channels=(4, 8, 16, 32), out_strides=ALL_STRIDES, init_cfg=None):
        super().__init__(init_cfg)
        self.out_strides = tuple(out_strides)
        self.out_channels = tuple(channels[ALL_STRIDES.index(s)] for s in self.out_strides)
        self.stem = nn.Sequential(nn.Conv2d(3, channels[0], 3, 2, 1), nn.Conv2d(channels[0], channels[0], 3, 2, 1))
        # Norm with running statistics and dropout: both behave differently in train and eval mode.
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels[i - 1], channels[i], 3, 2, 1), nn.BatchNorm2d(channels[i]),
                          nn.Dropout(0.5)) for i in range(1, len(ALL_STRIDES)))
        self.stages_run = 0

    def forward(self, x):
        x = self.stem(x)
        feats, self.stages_run = {4: x}, 0
        for stride, stage in zip(ALL_STRIDES[1:], self.stages):
            if stride > max(self.out_strides):
                break
            x = stage(x)
            feats[stride] = x
            self.stages_run += 1
        return tuple(feats[s] for s in self.out_strides)
