"""Tiny datasets in the on-disk layouts of KITTI-360, Synscapes and UrbanSyn, shared by the dataset tests."""
import numpy as np
from PIL import Image

from mmfusion.datasets.cityscapes_labels import name2label

ROAD, PERSON, CAR, CARAVAN, BICYCLE = (name2label[n].id for n in ('road', 'person', 'car', 'caravan', 'bicycle'))


def save_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def toy_maps():
    """A 32x64 scene: road, two cars (ids 5 and 9), a person (id 3), a person crowd, a caravan, a bicycle."""
    label = np.full((32, 64), ROAD, np.uint8)
    inst = np.zeros((32, 64), np.int64)
    label[2:12, 2:20], inst[2:12, 2:20] = CAR, 9
    label[4:14, 15:30], inst[4:14, 15:30] = CAR, 5  # touches/occludes the first car
    label[16:30, 5:9], inst[16:30, 5:9] = PERSON, 3
    label[16:30, 12:20] = PERSON  # instance 0: a crowd region
    label[20:30, 40:50], inst[20:30, 40:50] = CARAVAN, 4  # a thing class ignored in evaluation
    label[25:31, 55:63], inst[25:31, 55:63] = BICYCLE, 3  # same instance id as the person, other class
    return label, inst


def write_kitti360(root, frames=(('train', 250), ('train', 251), ('val', 300))):
    seq = '2013_05_28_drive_0000_sync'
    label, inst = toy_maps()
    value = label.astype(np.int64) * 1000 + inst
    value[0, :4] = 44000  # a KITTI-360-only class ('unknown object'): not a thing here
    lists = {'train': [], 'val': []}
    for split, frame in frames:
        image = f'data_2d_raw/{seq}/image_00/data_rect/{frame:010d}.png'
        semantic = f'data_2d_semantics/train/{seq}/image_00/semantic/{frame:010d}.png'
        save_png(root / image, np.zeros((32, 64, 3), np.uint8))
        save_png(root / semantic, label)
        save_png(root / semantic.replace('/semantic/', '/instance/'), value.astype(np.uint16))
        lists[split].append(f'{image} {semantic}\n')
    for split, lines in lists.items():
        (root / 'data_2d_semantics' / 'train' / f'2013_05_28_drive_{split}_frames.txt').write_text(''.join(lines) +
                                                                                                    '\n')
    return root


def write_synscapes(root):
    label, inst = toy_maps()
    inst[inst == 5] = 5 + 256 * 3  # ids that differ only in the green channel stay distinct instances
    rgb_inst = np.stack([inst % 256, inst // 256 % 256, inst // 65536], axis=-1).astype(np.uint8)
    for i in (1, 2, 10):
        save_png(root / 'img' / 'rgb' / f'{i}.png', np.zeros((32, 64, 3), np.uint8))
        save_png(root / 'img' / 'class' / f'{i}.png', label)
        save_png(root / 'img' / 'instance' / f'{i}.png', rgb_inst)
    return root


def write_urbansyn(root, semantic):
    label, inst = toy_maps()
    for i in (3, 1):
        save_png(root / 'rgb' / f'rgb_{i:04d}.png', np.zeros((32, 64, 3), np.uint8))
        save_png(root / 'ss' / f'ss_{i:04d}.png', semantic(label))
        save_png(root / 'panoptic' / f'panoptic_{i:04d}.png',
              np.stack([inst % 256, inst // 256, np.zeros_like(inst)], -1).astype(np.uint8))
    return root
