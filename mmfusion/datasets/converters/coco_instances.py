"""Label-id map + instance-id map -> COCO instance annotations: the one place for that logic.

Every instance converter of mmfusion (Cityscapes and the synthetic Cityscapes, KITTI-360, Synscapes, UrbanSyn) goes
through two steps here:

1. :func:`encode_instance_ids` turns a (label-id map, instance-id map) pair into a map in the Cityscapes
   ``instanceIds`` encoding: ``classId * 1000 + k`` for the k-th instance of a thing class, the bare ``classId`` for
   thing pixels that belong to no instance (a group/crowd region, ``iscrowd=1``) and for stuff.
   Cityscapes' own ``*_gtFine_instanceIds.png`` already is such a map.
2. :func:`instance_annotations` turns that map into COCO annotations, with the content of mmdet's
   ``tools/dataset_converters/cityscapes.py``: one annotation per id of a thing class (label ids from
   :mod:`mmfusion.datasets.cityscapes_labels`), ``iscrowd = id < 1000``, compressed RLE (or polygons), ``area`` =
   pixel count, ``bbox`` = pixel extent as floats ``[x, y, w, h]``.

:func:`coco_instances` assembles the json. One deliberate difference from mmdet's converter: annotation ids start
at 1, not 0. pycocotools' ``COCOeval`` records a match by storing the ground-truth id, so a ground truth with id 0
can never count as matched (its detection becomes a false positive); COCO's own files start at 1.

Only numpy, OpenCV and Pillow are needed (RLE is encoded here, bit-compatible with pycocotools), so the standalone
synthetic generator can use this module.
"""
import json
import os
import os.path as osp

import cv2
import numpy as np
from PIL import Image

from ..cityscapes_labels import THING_IDS, coco_instance_categories, thing_id_lut

__all__ = [
    'require_dir', 'read_png', 'rgb_to_id', 'encode_instance_ids', 'instance_annotations', 'rle_encode',
    'mask_bbox', 'coco_instances', 'write_instance_json', 'dump_json'
]


def require_dir(path: str, layout: str) -> str:
    """``path`` if it is a folder, else a FileNotFoundError that shows the expected ``layout``."""
    if not osp.isdir(path):
        raise FileNotFoundError(f'no folder {path}: expected {layout} (is the dataset root right?)')
    return path


def read_png(path: str, what: str) -> np.ndarray:
    """Read an image file as an array (16-bit and palette PNGs keep their raw values), with errors that say which
    file of which kind is missing or broken."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'{what} not found: {path}. Check the dataset root and its folder layout.')
    try:
        with Image.open(path) as img:
            return np.array(img)
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f'cannot read {what} {path} ({err}); the file is damaged or not an image: '
                         're-download or regenerate it.') from err


def rgb_to_id(arr: np.ndarray) -> np.ndarray:
    """An id map stored as RGB (id = R + 256 G + 256^2 B, COCO-panoptic / Synscapes) or as one channel -> int64."""
    arr = np.asarray(arr)
    if arr.ndim == 2:
        return arr.astype(np.int64)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        rgb = arr[..., :3].astype(np.int64)
        return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    raise ValueError(f'expected an id map of shape (H, W) or (H, W, 3), got {arr.shape}')


def encode_instance_ids(label_ids: np.ndarray, instance_ids: np.ndarray, thing_ids=THING_IDS) -> np.ndarray:
    """Combine a label-id map and an instance-id map into the Cityscapes ``instanceIds`` encoding (int32).

    Args:
        label_ids: (H, W) Cityscapes label ids.
        instance_ids: (H, W) any integer id per object, 0 = no instance. Ids are only compared within one class:
            the instances of class c are numbered 0, 1, ... in increasing order of their ids.
        thing_ids: label ids that have instances.

    Thing pixels with instance id 0 keep their bare label id (a crowd region); stuff pixels always do.
    """
    label_ids = np.asarray(label_ids)
    instance_ids = np.asarray(instance_ids)
    if label_ids.shape != instance_ids.shape or label_ids.ndim != 2:
        raise ValueError(f'label map {label_ids.shape} and instance map {instance_ids.shape} must be (H, W) maps '
                         'of the same size')
    out = label_ids.astype(np.int32)
    labels64 = label_ids.astype(np.int64)
    in_table = (labels64 >= 0) & (labels64 < 256)
    is_thing = in_table & thing_id_lut(thing_ids)[np.where(in_table, labels64, 0)] & (instance_ids > 0)
    if not is_thing.any():
        return out
    keys = labels64[is_thing] << 40 | instance_ids[is_thing].astype(np.int64)
    uniq, inverse = np.unique(keys, return_inverse=True)
    cls = uniq >> 40
    rank = np.arange(len(uniq)) - np.searchsorted(cls, cls)  # 0, 1, ... within each class
    if rank.max() >= 1000:
        worst = int(cls[np.argmax(rank)])
        raise ValueError(f'more than 1000 instances of label id {worst} in one image; the Cityscapes encoding '
                         '(classId * 1000 + k) cannot hold them')
    out[is_thing] = (cls * 1000 + rank)[inverse.reshape(-1)]
    return out


def rle_encode(mask: np.ndarray) -> dict:
    """COCO compressed RLE of a binary (H, W) mask: the same dict as ``pycocotools.mask.encode`` (counts as str)."""
    mask = np.asarray(mask)
    h, w = mask.shape
    flat = mask.ravel(order='F').astype(bool)
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate(([0], changes, [flat.size]))).tolist()
    if flat.size and flat[0]:
        counts.insert(0, 0)  # runs alternate and start with background
    chars = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count  # delta to the run of the same kind
        while True:  # 5 bits per char, 0x20 = more chars follow, sign-extended from bit 0x10
            c = x & 0x1f
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            chars.append(chr((c | 0x20 if more else c) + 48))
            if not more:
                break
    return dict(size=[h, w], counts=''.join(chars))


def mask_bbox(mask: np.ndarray) -> list:
    """Pixel extent ``[x, y, w, h]`` (ints) of a non-empty binary mask."""
    cols = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def _polygons(mask: np.ndarray) -> list:
    """Outer contours (>= 3 points) of a mask as COCO polygons; holes are not representable and are filled."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]


def instance_annotations(encoded: np.ndarray, thing_ids=THING_IDS, mask_format: str = 'rle') -> list:
    """COCO annotations (without ids) of every thing id in a Cityscapes-encoded instance map, in increasing id order.

    Args:
        encoded: (H, W) map in the Cityscapes ``instanceIds`` encoding (see :func:`encode_instance_ids`).
        thing_ids: label ids to annotate; other classes (stuff, ignored things such as caravan) are skipped.
        mask_format: ``'rle'`` (compressed RLE, what mmdet's converter writes) or ``'polygon'`` (outer contours;
            crowd regions and masks without a 3-point contour stay RLE).
    """
    if mask_format not in ('rle', 'polygon'):
        raise ValueError(f"mask_format must be 'rle' or 'polygon', got {mask_format!r}")
    encoded = np.asarray(encoded).astype(np.int64)
    values = np.unique(encoded[encoded >= min(thing_ids)])
    things = set(thing_ids)
    anns = []
    for value in values.tolist():
        label = value // 1000 if value >= 1000 else value
        if label not in things:
            continue
        mask = encoded == value
        iscrowd = int(value < 1000)
        segmentation = _polygons(mask) if mask_format == 'polygon' and not iscrowd else []
        if not segmentation:
            segmentation = rle_encode(mask)
        anns.append(dict(iscrowd=iscrowd, category_id=label, bbox=[float(v) for v in mask_bbox(mask)],
                         area=int(mask.sum()), segmentation=segmentation))
    return anns


def coco_instances(images: list, categories: list = None) -> dict:
    """Assemble a COCO instance json.

    Args:
        images: one ``(image_info, annotations)`` pair per image; ``image_info`` holds at least ``file_name``,
            ``height``, ``width``; annotations come from :func:`instance_annotations`.
        categories: defaults to the 8 Cityscapes thing classes.

    Image ids count from 0 (as mmdet's converter), annotation ids from 1 (see the module doc).
    """
    out = dict(images=[], annotations=[], categories=categories or coco_instance_categories())
    for img_id, (info, anns) in enumerate(images):
        out['images'].append(dict(info, id=img_id))
        for ann in anns:
            out['annotations'].append(dict(ann, image_id=img_id, id=len(out['annotations']) + 1))
    return out


def write_instance_json(samples, out_file: str, mask_format: str = 'rle') -> str:
    """Convert ``(file_name, label_ids, instance_ids)`` samples (see :func:`encode_instance_ids`) into a COCO
    instance json with the 8 Cityscapes thing classes; returns ``out_file``."""
    images = []
    for file_name, label_ids, instance_ids in samples:
        try:
            encoded = encode_instance_ids(label_ids, instance_ids)
        except ValueError as err:
            raise ValueError(f'{file_name}: {err}') from err
        info = dict(file_name=file_name, height=int(encoded.shape[0]), width=int(encoded.shape[1]))
        images.append((info, instance_annotations(encoded, mask_format=mask_format)))
    if not images:
        raise ValueError(f'nothing to convert into {out_file}: the image list is empty')
    return dump_json(coco_instances(images), out_file)


def dump_json(obj, path: str) -> str:
    """Write json (creating the folder); returns the path."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(obj, f)
    return path
