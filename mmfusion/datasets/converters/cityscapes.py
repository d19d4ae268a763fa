"""Cityscapes gtFine -> the files the stock OpenMMLab configs read.

- :func:`convert_cityscapes_instances`: ``annotations/instancesonly_filtered_gtFine_{split}.json``, the COCO
  instance json of mmdet's ``configs/_base_/datasets/cityscapes_instance.py`` (content as mmdet's
  ``tools/dataset_converters/cityscapes.py``, built from ``*_gtFine_instanceIds.png`` by
  :mod:`.coco_instances`).
- :func:`convert_cityscapes_train_ids`: ``*_gtFine_labelTrainIds.png`` next to each ``*_gtFine_labelIds.png``, the
  segmentation map of mmseg's ``CityscapesDataset`` (19 classes, 255 = ignore). mmseg's converter renders it from
  the polygons; Cityscapes' labelIds pngs are that same rendering, so the lookup here gives the same file.

Layout (Cityscapes')::

    root/leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    root/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_{labelIds,instanceIds,color}.png, ..._polygons.json
"""
import glob
import os.path as osp

from PIL import Image

from ..cityscapes_labels import ID_TO_TRAINID
from .coco_instances import coco_instances, dump_json, instance_annotations, read_png, require_dir

__all__ = ['find_cityscapes_images', 'cityscapes_gt_path', 'instance_json_name', 'convert_cityscapes_instances',
           'convert_cityscapes_train_ids']

IMG_SUFFIX = '_leftImg8bit.png'


def instance_json_name(split: str) -> str:
    return f'instancesonly_filtered_gtFine_{split}.json'


def find_cityscapes_images(root: str, split: str) -> list:
    """``{city}/{stem}_leftImg8bit.png`` paths (relative to ``root/leftImg8bit/{split}``), sorted."""
    img_dir = require_dir(osp.join(root, 'leftImg8bit', split),
                          f'the Cityscapes layout <root>/leftImg8bit/{split}/<city>/*{IMG_SUFFIX}')
    files = sorted(osp.relpath(p, img_dir) for p in glob.glob(osp.join(img_dir, '*', '*' + IMG_SUFFIX)))
    if not files:
        raise FileNotFoundError(f'no *{IMG_SUFFIX} images in {img_dir}/<city>/: the {split} split is empty')
    return files


def cityscapes_gt_path(root: str, split: str, rel_img: str, kind: str) -> str:
    """Path of the gtFine file ``kind`` (``labelIds``, ``instanceIds``, ``polygons.json``...) of an image."""
    suffix = kind if '.' in kind else kind + '.png'
    return osp.join(root, 'gtFine', split, rel_img[:-len(IMG_SUFFIX)] + '_gtFine_' + suffix)


def convert_cityscapes_instances(root: str, out_dir: str = None, splits=('train', 'val'),
                                 mask_format: str = 'rle') -> dict:
    """Write ``{out_dir}/instancesonly_filtered_gtFine_{split}.json`` per split (``out_dir`` defaults to
    ``root/annotations``). Returns ``{split: json path}``."""
    out_dir = out_dir or osp.join(root, 'annotations')
    written = {}
    for split in splits:
        images = []
        for rel in find_cityscapes_images(root, split):
            inst = read_png(cityscapes_gt_path(root, split, rel, 'instanceIds'), 'Cityscapes instanceIds png')
            info = dict(file_name=rel, height=int(inst.shape[0]), width=int(inst.shape[1]),
                        segm_file=rel[:-len(IMG_SUFFIX)] + '_gtFine_labelIds.png')
            images.append((info, instance_annotations(inst, mask_format=mask_format)))
        written[split] = dump_json(coco_instances(images), osp.join(out_dir, instance_json_name(split)))
    return written


def convert_cityscapes_train_ids(root: str, splits=('train', 'val')) -> int:
    """Write ``*_gtFine_labelTrainIds.png`` from each ``*_gtFine_labelIds.png``; returns how many were written."""
    count = 0
    for split in splits:
        for rel in find_cityscapes_images(root, split):
            label_ids = read_png(cityscapes_gt_path(root, split, rel, 'labelIds'), 'Cityscapes labelIds png')
            Image.fromarray(ID_TO_TRAINID[label_ids]).save(cityscapes_gt_path(root, split, rel, 'labelTrainIds'),
                                                       compress_level=1)
            count += 1
    return count
