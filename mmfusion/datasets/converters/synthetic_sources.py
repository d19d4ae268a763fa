"""Synscapes and UrbanSyn -> COCO instance json (8 Cityscapes thing classes), for synthetic-to-real training with
validation on Cityscapes (mmdet's ``CityscapesDataset`` reads the output; ``data_prefix=dict(img='')``).

Synscapes (https://synscapes.on.liu.se)::

    root/img/rgb/{i}.png         images (i = 1..25000)
    root/img/class/{i}.png       Cityscapes label ids, one channel
    root/img/instance/{i}.png    instance ids, RGB-encoded (id = R + 256 G + 256^2 B), 0 = none
    root/meta/{i}.json           per-instance metadata (not needed here)

UrbanSyn (https://urbansyn.org)::

    root/rgb/rgb_{i:04d}.png
    root/ss/ss_{i:04d}.png                  semantic map
    root/panoptic/panoptic_{i:04d}.png      segment ids, RGB-encoded or one channel

Assumption for UrbanSyn: ``ss`` holds Cityscapes *label ids* (pass ``semantic_encoding='trainIds'`` if your copy
holds trainIds, 255 = void); a panoptic segment id is only used to tell instances apart within a thing class, so any
per-segment id encoding works. Thing pixels with instance id 0 become crowd regions (``iscrowd=1``).

Outputs ``{out_dir}/synscapes_instances.json`` / ``{out_dir}/urbansyn_instances.json`` (``out_dir`` defaults to
``root/annotations``), with ``file_name`` relative to ``root``.
"""
import os
import os.path as osp
import re

from ..cityscapes_labels import TRAINID_TO_ID
from .coco_instances import read_png, require_dir, rgb_to_id, write_instance_json

__all__ = ['convert_synscapes_instances', 'convert_urbansyn_instances']


def _indexed_files(folder: str, pattern: str, what: str) -> list:
    """``(index, file name)`` of the files in ``folder`` matching ``pattern`` (one int group), sorted by index."""
    regex = re.compile(pattern)
    found = sorted((int(m.group(1)), name) for name in os.listdir(folder) if (m := regex.fullmatch(name)))
    if not found:
        raise FileNotFoundError(f'no {what} matching {pattern!r} in {folder}')
    return found


def _synscapes_samples(root: str):
    layout = '<root>/img/{rgb,class,instance}/<i>.png (Synscapes)'
    rgb_dir = require_dir(osp.join(root, 'img', 'rgb'), layout)
    for sub in ('class', 'instance'):
        require_dir(osp.join(root, 'img', sub), layout)
    for _, name in _indexed_files(rgb_dir, r'(\d+)\.png', 'Synscapes images'):
        label = read_png(osp.join(root, 'img', 'class', name), 'Synscapes class png')
        if label.ndim != 2:
            raise ValueError(f'Synscapes class png {name} has shape {label.shape}; expected one channel of label ids')
        inst = rgb_to_id(read_png(osp.join(root, 'img', 'instance', name), 'Synscapes instance png'))
        yield f'img/rgb/{name}', label, inst


def _urbansyn_samples(root: str, semantic_encoding: str):
    if semantic_encoding not in ('ids', 'trainIds'):
        raise ValueError(f"semantic_encoding must be 'ids' or 'trainIds', got {semantic_encoding!r}")
    layout = '<root>/{rgb/rgb_,ss/ss_,panoptic/panoptic_}<i:04d>.png (UrbanSyn)'
    rgb_dir = require_dir(osp.join(root, 'rgb'), layout)
    for sub in ('ss', 'panoptic'):
        require_dir(osp.join(root, sub), layout)
    for _, name in _indexed_files(rgb_dir, r'rgb_(\d+)\.png', 'UrbanSyn images'):
        suffix = name[len('rgb_'):]
        label = read_png(osp.join(root, 'ss', 'ss_' + suffix), 'UrbanSyn semantic png')
        if label.ndim != 2:
            raise ValueError(f'UrbanSyn semantic png ss_{suffix} has shape {label.shape}; expected one channel of '
                             'label ids (the ss_color pngs are for viewing only)')
        if semantic_encoding == 'trainIds':
            label = TRAINID_TO_ID[label]
        inst = rgb_to_id(read_png(osp.join(root, 'panoptic', 'panoptic_' + suffix), 'UrbanSyn panoptic png'))
        yield f'rgb/{name}', label, inst


def convert_synscapes_instances(root: str, out_dir: str = None, mask_format: str = 'rle') -> str:
    """Write ``synscapes_instances.json``; returns its path."""
    out = osp.join(out_dir or osp.join(root, 'annotations'), 'synscapes_instances.json')
    return write_instance_json(_synscapes_samples(root), out, mask_format)


def convert_urbansyn_instances(root: str, out_dir: str = None, mask_format: str = 'rle',
                               semantic_encoding: str = 'ids') -> str:
    """Write ``urbansyn_instances.json``; returns its path."""
    out = osp.join(out_dir or osp.join(root, 'annotations'), 'urbansyn_instances.json')
    return write_instance_json(_urbansyn_samples(root, semantic_encoding), out, mask_format)
