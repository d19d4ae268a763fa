"""Datasets: the synthetic Cityscapes-format scenes (mmfusion's embedded default dataset), converters to the
formats the stock mmdet/mmseg datasets read, and the dataset classes mmdet/mmseg lack.

The generator and the converters need numpy, OpenCV, Pillow and cityscapesscripts only; the dataset classes, which
subclass mmdet's, are registered when mmdet (with mmcv) is installed.
"""
from importlib.util import find_spec

from .converters import (
    convert_cityscapes_instances,
    convert_cityscapes_panoptic,
    convert_cityscapes_train_ids,
    convert_kitti360_instances,
    convert_synscapes_instances,
    convert_urbansyn_instances,
)
from .synthetic_cityscapes import generate_synthetic_cityscapes, synthesize_scene

__all__ = [
    'generate_synthetic_cityscapes', 'synthesize_scene', 'convert_cityscapes_instances',
    'convert_cityscapes_panoptic', 'convert_cityscapes_train_ids', 'convert_kitti360_instances',
    'convert_synscapes_instances', 'convert_urbansyn_instances'
]

if find_spec('mmdet') is not None and find_spec('mmcv') is not None:
    from .cityscapes_panoptic import CityscapesPanopticDataset  # noqa: F401 (registers it)
    __all__.append('CityscapesPanopticDataset')
