"""A tiny fused model (stand-in encoders, the real MasterAuxBackbone and MetricGuidedNeck) and datasets for the
SCEFHook tests and their 2-process run."""
import numpy as np
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from torch.utils.data import Dataset

from mmfusion.models.backbones import MasterAuxBackbone
from mmfusion.models.necks import MetricGuidedNeck
from tests._stubs import StubPyramid  # noqa: F401  (registers the stand-in backbone)

MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


class FusionModel(BaseModel):
    """Master + frozen auxiliary injected at OS16 + neck + a 1x1 conv 'head'; the master's OS16 map is None."""

    def __init__(self):
        super().__init__(data_preprocessor=dict(type='ImgDataPreprocessor', mean=MEAN, std=STD, bgr_to_rgb=True))
        self.backbone = MasterAuxBackbone(dict(type='StubPyramid', channels=(4, 8, 16, 32)),
                                          dict(type='StubPyramid', channels=(3, 6, 12, 24)), inject_stride=16)
        self.neck = MetricGuidedNeck()
        self.head = nn.Conv2d(4, 1, 1)

    def forward(self, inputs, data_samples=None, mode='loss'):
        feats = self.neck(self.backbone(inputs))
        out = self.head(feats[0])
        return dict(loss=out.pow(2).mean() + sum(f.mean() for f in feats[1:])) if mode == 'loss' else [out]


def scene(i: int) -> torch.Tensor:
    """Uint8 (3, 64, 96) image with a bright square: edges for EF to find."""
    g = torch.Generator().manual_seed(i)
    img = torch.randint(0, 60, (3, 64, 96), dtype=torch.uint8, generator=g)
    img[:, 16 + 4 * i:40 + 4 * i, 24:64] += 150
    return img


class Scenes(Dataset):
    """Four scenes; with ``augment`` a random flip and brightness change, as a training pipeline would draw."""

    def __init__(self, augment: bool = False):
        self.augment = augment

    def __len__(self):
        return 4

    def __getitem__(self, i):
        img = scene(i)
        if self.augment:
            if np.random.rand() < 0.5:
                img = img.flip(-1)
            img = (img.float() * (0.5 + torch.rand(1))).clamp(0, 255).to(torch.uint8)
        return dict(inputs=img)
