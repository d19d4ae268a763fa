"""Dataset converters. Every instance converter goes through :mod:`.coco_instances` (label-id map + instance-id
map -> COCO annotations). Importable without mmcv/mmdet/mmseg."""
from .cityscapes import convert_cityscapes_instances, convert_cityscapes_train_ids, find_cityscapes_images
from .cityscapes_panoptic import convert_cityscapes_panoptic
from .coco_instances import encode_instance_ids, instance_annotations, rle_encode, write_instance_json
from .kitti360 import convert_kitti360_instances
from .synthetic_sources import convert_synscapes_instances, convert_urbansyn_instances

__all__ = [
    'convert_cityscapes_instances', 'convert_cityscapes_train_ids', 'find_cityscapes_images',
    'convert_cityscapes_panoptic', 'encode_instance_ids', 'instance_annotations', 'rle_encode',
    'write_instance_json', 'convert_kitti360_instances', 'convert_synscapes_instances', 'convert_urbansyn_instances'
]
