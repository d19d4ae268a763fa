"""Cityscapes gtFine -> COCO-panoptic files for mmdet's ``CocoPanopticDataset`` / ``CocoPanopticMetric``.

Writes, per split, from each ``*_gtFine_instanceIds.png``:

- ``{out_dir}/cityscapes_panoptic_{split}.json``: ``images`` (int ``id``, ``file_name`` =
  ``{city}/{stem}_leftImg8bit.png`` relative to ``leftImg8bit/{split}``, ``height``, ``width``), ``annotations``
  (``image_id``, ``file_name`` of the png, ``segments_info`` with ``id``, ``category_id``, ``area``, ``bbox``,
  ``iscrowd``) and ``categories`` (the 19 evaluated classes, things first, with ``isthing``; ids are Cityscapes
  label ids, see :func:`~mmfusion.datasets.cityscapes_labels.coco_panoptic_categories`);
- ``{out_dir}/cityscapes_panoptic_{split}/{stem}_leftImg8bit.png``: RGB-encoded segment ids, id = R + 256 G + 256² B,
  0 = void. A segment id is the instanceIds value (``26003`` = a car, ``26`` = a car group (crowd), ``7`` = road),
  as cityscapesscripts' ``createPanopticImgs`` does; ignored classes are void.

``out_dir`` defaults to ``root/annotations``. The pngs lie flat and carry the image's basename because that is the
file mmdet's ``CocoPanopticMetric`` opens (``seg_prefix`` + basename of the image path);
:class:`mmfusion.datasets.CityscapesPanopticDataset` reads them from there too.
"""
import os
import os.path as osp

import numpy as np
from PIL import Image

from ..cityscapes_labels import ID_TO_TRAINID, coco_panoptic_categories, id2label
from .cityscapes import cityscapes_gt_path, find_cityscapes_images
from .coco_instances import dump_json, mask_bbox, read_png

__all__ = ['panoptic_json_name', 'panoptic_segments', 'convert_cityscapes_panoptic']


def panoptic_json_name(split: str) -> str:
    return f'cityscapes_panoptic_{split}.json'


def panoptic_segments(inst: np.ndarray):
    """Cityscapes instanceIds map -> (RGB panoptic png array, segments_info)."""
    inst = np.asarray(inst).astype(np.int64)
    pan = np.zeros(inst.shape + (3, ), dtype=np.uint8)
    segments = []
    for value in np.unique(inst).tolist():
        label = value // 1000 if value >= 1000 else value
        if label >= len(ID_TO_TRAINID) or ID_TO_TRAINID[label] == 255:
            continue  # unlabeled, void and ignored classes stay 0 = void
        mask = inst == value
        pan[mask] = (value % 256, value // 256 % 256, value // 65536)
        segments.append(dict(id=value, category_id=label, area=int(mask.sum()), bbox=mask_bbox(mask),
                             iscrowd=int(id2label[label].hasInstances and value < 1000)))
    return pan, segments


def convert_cityscapes_panoptic(root: str, out_dir: str = None, splits=('train', 'val')) -> dict:
    """Write the panoptic json and png folder of each split; returns ``{split: json path}``."""
    out_dir = out_dir or osp.join(root, 'annotations')
    written = {}
    for split in splits:
        png_dir = osp.join(out_dir, panoptic_json_name(split)[:-len('.json')])
        os.makedirs(png_dir, exist_ok=True)
        images, annotations = [], []
        for img_id, rel in enumerate(find_cityscapes_images(root, split)):
            inst = read_png(cityscapes_gt_path(root, split, rel, 'instanceIds'), 'Cityscapes instanceIds png')
            pan, segments = panoptic_segments(inst)
            png_name = osp.basename(rel)
            Image.fromarray(pan).save(osp.join(png_dir, png_name), compress_level=1)
            images.append(dict(id=img_id, file_name=rel, height=int(inst.shape[0]), width=int(inst.shape[1])))
            annotations.append(dict(image_id=img_id, file_name=png_name, segments_info=segments))
        data = dict(images=images, annotations=annotations, categories=coco_panoptic_categories())
        written[split] = dump_json(data, osp.join(out_dir, panoptic_json_name(split)))
    return written
