"""The synthetic generator writes the Cityscapes layout, and its pngs are what cityscapesscripts renders from its
polygons."""
import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
from cityscapesscripts.preparation.json2labelImg import createLabelImage
from PIL import Image, ImageDraw

from mmfusion.datasets.cityscapes_labels import ID_TO_TRAINID, id2label, name2label
from mmfusion.datasets.synthetic_cityscapes import generate_synthetic_cityscapes, synthesize_scene

from .conftest import TINY

GT_KINDS = ('gtFine_polygons.json', 'gtFine_labelIds.png', 'gtFine_instanceIds.png', 'gtFine_color.png',
            'gtFine_labelTrainIds.png')


def _stems(root, split):
    return sorted(p.name[:-len('_leftImg8bit.png')] for p in (root / 'leftImg8bit' / split).glob('*/*.png'))


def _gt(root, split, stem, kind):
    return root / 'gtFine' / split / stem.split('_')[0] / f'{stem}_{kind}'


def _tree_digest(root):
    files = sorted(p for p in root.rglob('*') if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_layout_has_every_cityscapes_file_per_image(synthetic_root):
    for split, count in (('train', TINY['num_train']), ('val', TINY['num_val'])):
        stems = _stems(synthetic_root, split)
        assert len(stems) == count
        for stem in stems:
            city, seq, frame = stem.split('_')
            assert (len(seq), len(frame), frame) == (6, 6, '000019')
            for kind in GT_KINDS:
                assert _gt(synthetic_root, split, stem, kind).is_file(), (stem, kind)
    assert {p.name for p in (synthetic_root / 'annotations').iterdir()} == {
        'instancesonly_filtered_gtFine_train.json', 'instancesonly_filtered_gtFine_val.json',
        'cityscapes_panoptic_train.json', 'cityscapes_panoptic_val.json', 'cityscapes_panoptic_train',
        'cityscapes_panoptic_val'
    }


def test_same_seed_gives_identical_bytes(synthetic_root, tmp_path):
    generate_synthetic_cityscapes(str(tmp_path), **TINY)
    assert _tree_digest(tmp_path) == _tree_digest(synthetic_root)


def test_other_seed_gives_other_images(synthetic_root, tmp_path):
    generate_synthetic_cityscapes(str(tmp_path), **dict(TINY, seed=TINY['seed'] + 1))
    ours, theirs = _tree_digest(synthetic_root), _tree_digest(tmp_path)
    images = [k for k in ours if k.startswith('leftImg8bit')]
    assert all(ours[k] != theirs[k] for k in images)


def test_val_images_do_not_depend_on_the_train_count(synthetic_root, tmp_path):
    generate_synthetic_cityscapes(str(tmp_path), **dict(TINY, num_train=1))
    ours, theirs = _tree_digest(synthetic_root), _tree_digest(tmp_path)
    assert [k for k in ours if k.startswith('leftImg8bit/val')]
    assert all(ours[k] == theirs[k] for k in ours if k.startswith(('leftImg8bit/val', 'gtFine/val')))


@pytest.mark.parametrize('kind,encoding', [('gtFine_labelIds.png', 'ids'), ('gtFine_labelTrainIds.png', 'trainIds'),
                                           ('gtFine_color.png', 'color'), ('gtFine_instanceIds.png', 'instance')])
def test_pngs_equal_cityscapesscripts_rendering_of_the_polygons(synthetic_root, kind, encoding):
    for split in ('train', 'val'):
        for stem in _stems(synthetic_root, split):
            ann = Annotation()
            ann.fromJsonFile(str(_gt(synthetic_root, split, stem, 'gtFine_polygons.json')))
            if encoding == 'instance':
                expected = createInstanceImage(ann, 'ids')
            else:
                expected = createLabelImage(ann, encoding)
            ours = Image.open(_gt(synthetic_root, split, stem, kind))
            assert ours.mode == expected.mode or (ours.mode, expected.mode) == ('I;16', 'I')
            np.testing.assert_array_equal(np.array(ours).astype(np.int64), np.array(expected).astype(np.int64))


def test_polygon_json_is_a_cityscapes_annotation(synthetic_root):
    stem = _stems(synthetic_root, 'val')[0]
    data = json.loads(_gt(synthetic_root, 'val', stem, 'gtFine_polygons.json').read_text())
    assert (data['imgHeight'], data['imgWidth']) == (TINY['height'], TINY['width'])
    labels = [obj['label'] for obj in data['objects']]
    assert labels[0] == 'sky'
    assert all(lab in name2label or lab[:-len('group')] in name2label for lab in labels)
    points = np.concatenate([np.array(obj['polygon']) for obj in data['objects']])
    assert points.min() >= 0 and points[:, 0].max() < TINY['width'] and points[:, 1].max() < TINY['height']


def test_scenes_hold_the_street_classes():
    present = set()
    for seed in range(6):
        present |= set(np.unique(synthesize_scene(64, 128, seed).label_ids).tolist())
    names = {id2label[i].name for i in present}
    assert names >= {'road', 'sidewalk', 'building', 'vegetation', 'terrain', 'sky', 'pole', 'traffic sign',
                     'traffic light', 'person', 'car', 'truck', 'bicycle', 'rider'}


def test_instances_touch_and_occlude():
    touching = occluded = 0
    for seed in range(3):
        scene = synthesize_scene(128, 256, seed)
        inst = scene.instance_ids
        left, right = inst[:, :-1], inst[:, 1:]
        touching += int(((left >= 1000) & (right >= 1000) & (left != right)).sum())
        # An instance is occluded when fewer of its pixels are visible than its own polygon covers.
        counts = {}
        for obj in scene.polygons['objects']:
            lab = name2label.get(obj['label'])
            if lab is None or not lab.hasInstances:
                continue
            inst_id = lab.id * 1000 + counts.get(lab.id, 0)
            counts[lab.id] = counts.get(lab.id, 0) + 1
            alone = Image.new('L', (256, 128), 0)
            ImageDraw.Draw(alone).polygon([tuple(p) for p in obj['polygon']], fill=1)
            occluded += int((inst == inst_id).sum() < np.array(alone).sum())
    assert touching > 0
    assert occluded > 0


def test_poles_and_bicycles_are_thin():
    widths = {'pole': [], 'bicycle': []}
    for seed in range(4):
        labels = synthesize_scene(256, 512, seed).label_ids
        for name in widths:
            mask = labels == name2label[name].id
            for row in mask[mask.any(axis=1)]:  # lengths of horizontal runs
                edges = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(np.int8), [0]])))
                widths[name] += (edges[1::2] - edges[::2]).tolist()
    assert np.median(widths['pole']) <= 4
    assert np.median(widths['bicycle']) <= 5


def test_surfaces_are_textured():
    scene = synthesize_scene(128, 256, 0)
    for name in ('road', 'building', 'vegetation', 'sidewalk'):
        pixels = scene.image[scene.label_ids == name2label[name].id].astype(float)
        assert len(pixels) > 100, name
        assert pixels.std(axis=0).mean() > 4, name


def test_train_ids_are_cityscapes_19_classes(synthetic_root):
    stem = _stems(synthetic_root, 'train')[0]
    ids = np.array(Image.open(_gt(synthetic_root, 'train', stem, 'gtFine_labelIds.png')))
    train_ids = np.array(Image.open(_gt(synthetic_root, 'train', stem, 'gtFine_labelTrainIds.png')))
    np.testing.assert_array_equal(train_ids, ID_TO_TRAINID[ids])
    assert set(np.unique(train_ids).tolist()) <= set(range(19)) | {255}
    assert ID_TO_TRAINID[name2label['car'].id] == 13 and ID_TO_TRAINID[name2label['ego vehicle'].id] == 255


def test_existing_dataset_is_not_overwritten_silently(tmp_path):
    generate_synthetic_cityscapes(str(tmp_path), num_train=1, num_val=0, height=32, width=64)
    with pytest.raises(FileExistsError, match='overwrite'):
        generate_synthetic_cityscapes(str(tmp_path), num_train=1, num_val=0, height=32, width=64)
    generate_synthetic_cityscapes(str(tmp_path), num_train=0, num_val=1, height=32, width=64, overwrite=True)
    assert not (tmp_path / 'leftImg8bit' / 'train').exists()
    assert len(list((tmp_path / 'leftImg8bit' / 'val').glob('*/*.png'))) == 1


@pytest.mark.parametrize('kwargs,match', [(dict(num_train=0, num_val=0), 'at least one image'),
                                          (dict(num_train=-1), 'non-negative'), (dict(height=16), 'too small')])
def test_bad_arguments_are_refused(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_synthetic_cityscapes(str(tmp_path), **kwargs)


def test_generator_and_converters_need_no_mmcv_mmdet_mmseg(tmp_path):
    code = ("import sys\n"
            "for name in ('mmcv', 'mmdet', 'mmseg', 'pycocotools'):\n"
            "    sys.modules[name] = None  # any import of them fails\n"
            "from mmfusion.datasets import generate_synthetic_cityscapes\n"
            "generate_synthetic_cityscapes(sys.argv[1], num_train=1, num_val=1, height=32, width=64)\n")
    subprocess.run([sys.executable, '-c', code, str(tmp_path)], check=True, capture_output=True, timeout=300)
    assert (tmp_path / 'annotations' / 'instancesonly_filtered_gtFine_val.json').is_file()
    assert (tmp_path / 'annotations' / 'cityscapes_panoptic_val.json').is_file()
