"""KITTI-360 2D instance labels -> COCO instance json (8 Cityscapes thing classes).

Input layout (KITTI-360's)::

    root/data_2d_raw/{seq}/image_00/data_rect/{frame:010d}.png
    root/data_2d_semantics/train/{seq}/image_00/semantic/{frame:010d}.png       (label ids)
    root/data_2d_semantics/train/{seq}/image_00/instance/{frame:010d}.png       (label id * 1000 + instance id)
    root/data_2d_semantics/train/2013_05_28_drive_{train,val}_frames.txt        ("image_path label_path" per line)

KITTI-360 uses the Cityscapes label ids (plus a few extra classes, ids >= 34, none of them things here). Each
instance png value v is split into label ``v // 1000`` and instance ``v % 1000`` (0 = no instance: such thing pixels
become a crowd region) and converted by :mod:`.coco_instances`. The label path of a split list may point to
``semantic/`` or ``instance/``; the instance png is always read.

Output: ``{out_dir}/kitti360_instances_{split}.json`` (``out_dir`` defaults to ``root/annotations``), with
``file_name`` relative to ``root`` (so ``data_prefix=dict(img='')``). mmdet's ``CityscapesDataset`` reads it (same
categories as Cityscapes').
"""
import os.path as osp

import numpy as np

from .coco_instances import read_png, require_dir, write_instance_json

__all__ = ['kitti360_split_file', 'read_kitti360_split', 'kitti360_json_name', 'convert_kitti360_instances']

_LAYOUT = '<root>/data_2d_semantics/train/2013_05_28_drive_{train,val}_frames.txt and <root>/data_2d_raw/'


def kitti360_split_file(root: str, split: str) -> str:
    return osp.join(root, 'data_2d_semantics', 'train', f'2013_05_28_drive_{split}_frames.txt')


def kitti360_json_name(split: str) -> str:
    return f'kitti360_instances_{split}.json'


def read_kitti360_split(root: str, split: str) -> list:
    """``(image path, instance png path)`` pairs, relative to ``root``, of a split list."""
    require_dir(osp.join(root, 'data_2d_semantics'), _LAYOUT)
    path = kitti360_split_file(root, split)
    if not osp.isfile(path):
        raise FileNotFoundError(f'KITTI-360 split list not found: {path}; expected {_LAYOUT}')
    pairs = []
    with open(path) as f:
        for num, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise ValueError(f'{path}, line {num}: expected "image_path label_path", got {line.strip()!r}')
            image, label = fields
            pairs.append((image, label.replace('/semantic/', '/instance/')))
    if not pairs:
        raise ValueError(f'KITTI-360 split list {path} is empty: it should list "image_path label_path" lines')
    return pairs


def _samples(root: str, pairs: list):
    for image, instance in pairs:
        if not osp.isfile(osp.join(root, image)):
            raise FileNotFoundError(f'KITTI-360 image not found: {osp.join(root, image)} (listed in the split file; '
                                    'is data_2d_raw/ unpacked?)')
        value = read_png(osp.join(root, instance), 'KITTI-360 instance png').astype(np.int64)
        yield image, value // 1000, value % 1000


def convert_kitti360_instances(root: str, out_dir: str = None, splits=('train', 'val'),
                               mask_format: str = 'rle') -> dict:
    """Write ``kitti360_instances_{split}.json`` per split; returns ``{split: json path}``."""
    out_dir = out_dir or osp.join(root, 'annotations')
    return {
        split: write_instance_json(_samples(root, read_kitti360_split(root, split)),
                                   osp.join(out_dir, kitti360_json_name(split)), mask_format)
        for split in splits
    }
