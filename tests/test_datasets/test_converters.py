"""Converters: the shared label/instance -> COCO core, Cityscapes (instances, trainIds, panoptic), KITTI-360,
Synscapes and UrbanSyn, each on tiny data in its own on-disk layout."""
import json
import shutil
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from PIL import Image

from mmfusion.datasets.cityscapes_labels import THING_CLASSES, THING_IDS, TRAINID_TO_ID
from mmfusion.datasets.converters.cityscapes import convert_cityscapes_instances, convert_cityscapes_train_ids
from mmfusion.datasets.converters.cityscapes_panoptic import convert_cityscapes_panoptic
from mmfusion.datasets.converters.coco_instances import (
    encode_instance_ids,
    instance_annotations,
    rle_encode,
    write_instance_json,
)
from mmfusion.datasets.converters.kitti360 import convert_kitti360_instances
from mmfusion.datasets.converters.synthetic_sources import convert_synscapes_instances, convert_urbansyn_instances
from tests._tools import load_tool

from ._layouts import BICYCLE, CAR, CARAVAN, PERSON, ROAD, toy_maps, write_kitti360, write_synscapes, write_urbansyn

REPO = Path(__file__).resolve().parents[2]


def _decode(segmentation, h, w):
    if isinstance(segmentation, list):
        return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w))).astype(bool)
    return mask_utils.decode(dict(segmentation, counts=segmentation['counts'].encode())).astype(bool)


# ----------------------------------------------------------------------------------------------- shared core


def test_rle_equals_pycocotools():
    rng = np.random.default_rng(0)
    masks = [np.zeros((5, 7), np.uint8), np.ones((5, 7), np.uint8), np.zeros((1000, 600), np.uint8)]
    masks[2][300:, 100:] = 1  # long runs: multi-character counts
    masks += [(rng.random((int(h), int(w))) < p).astype(np.uint8)
              for h, w, p in zip(rng.integers(1, 40, 40), rng.integers(1, 40, 40), rng.random(40))]
    for mask in masks:
        ref = mask_utils.encode(np.asfortranarray(mask))
        assert rle_encode(mask) == dict(size=list(ref['size']), counts=ref['counts'].decode())


def test_encoding_numbers_instances_per_class_and_keeps_crowd_and_stuff():
    label, inst = toy_maps()
    enc = encode_instance_ids(label, inst)
    assert enc[0, 0] == ROAD
    assert enc[4, 25] == CAR * 1000 + 0 and enc[2, 3] == CAR * 1000 + 1  # ids 5 < 9 -> k = 0, 1
    assert enc[20, 6] == PERSON * 1000 and enc[20, 14] == PERSON  # crowd keeps the bare class id
    assert enc[26, 56] == BICYCLE * 1000
    assert enc[22, 45] == CARAVAN  # not one of the 8 thing classes: not numbered


def test_encoding_refuses_more_than_1000_instances_of_a_class():
    label = np.full((1, 1001), CAR)
    with pytest.raises(ValueError, match='more than 1000 instances of label id 26'):
        encode_instance_ids(label, np.arange(1, 1002)[None])


def test_encoding_refuses_maps_of_different_size():
    with pytest.raises(ValueError, match=r'\(4, 4\).*\(4, 5\)'):
        encode_instance_ids(np.zeros((4, 4)), np.zeros((4, 5)))


def test_annotations_match_pycocotools_and_cover_every_thing():
    enc = encode_instance_ids(*toy_maps())
    anns = instance_annotations(enc)
    assert [(a['category_id'], a['iscrowd']) for a in anns] == [(PERSON, 1), (PERSON, 0), (CAR, 0), (CAR, 0),
                                                                 (BICYCLE, 0)]
    for ann, value in zip(anns, [PERSON, PERSON * 1000, CAR * 1000, CAR * 1000 + 1, BICYCLE * 1000]):
        mask = _decode(ann['segmentation'], 32, 64)
        np.testing.assert_array_equal(mask, enc == value)
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert ann['area'] == int(mask_utils.area(rle)) and ann['bbox'] == mask_utils.toBbox(rle).tolist()


def test_polygon_format_outlines_the_mask_and_keeps_crowds_as_rle():
    anns = instance_annotations(encode_instance_ids(*toy_maps()), mask_format='polygon')
    assert isinstance(anns[0]['segmentation'], dict)  # crowd
    for ann in anns[1:]:
        assert isinstance(ann['segmentation'], list) and all(len(p) >= 6 for p in ann['segmentation'])
        x, y, w, h = ann['bbox']
        poly = _decode(ann['segmentation'], 32, 64)
        # Contours run through pixel centres: the rasterised polygon is the mask shrunk by at most half a pixel.
        assert poly.sum() >= 0.5 * ann['area'] and poly.sum() <= ann['area']
        ys, xs = np.nonzero(poly)
        assert xs.min() >= x and ys.min() >= y and xs.max() < x + w and ys.max() < y + h


def test_first_annotation_can_be_matched_by_cocoeval(tmp_path):
    """Annotation ids start at 1: COCOeval stores the matched ground-truth id, so an id of 0 would never count."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    label = np.full((16, 16), ROAD, np.uint8)
    label[4:12, 4:12] = CAR
    out = write_instance_json([('a.png', label, (label == CAR).astype(int))], str(tmp_path / 'gt.json'))
    gt = COCO(out)
    ann = gt.loadAnns(gt.getAnnIds())[0]
    dets = gt.loadRes([dict(image_id=0, category_id=CAR, segmentation=ann['segmentation'], score=1.0)])
    evaluator = COCOeval(gt, dets, 'segm')
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------- Cityscapes


def test_cityscapes_json_reconstructs_the_instance_pngs(synthetic_root):
    data = json.loads((synthetic_root / 'annotations' / 'instancesonly_filtered_gtFine_val.json').read_text())
    assert data['categories'] == [dict(id=i, name=n) for i, n in zip(THING_IDS, THING_CLASSES)]
    assert len(data['images']) == 3
    ann_ids = [a['id'] for a in data['annotations']]
    assert ann_ids == list(range(1, len(ann_ids) + 1))
    for img in data['images']:
        assert img['segm_file'] == img['file_name'].replace('leftImg8bit.png', 'gtFine_labelIds.png')
        inst = np.array(Image.open(synthetic_root / 'gtFine' / 'val' / img['file_name'].replace(
            'leftImg8bit.png', 'gtFine_instanceIds.png'))).astype(np.int64)
        anns = [a for a in data['annotations'] if a['image_id'] == img['id']]
        rebuilt = np.zeros_like(inst)
        for ann in anns:
            mask = _decode(ann['segmentation'], img['height'], img['width'])
            value = np.unique(inst[mask])
            assert len(value) == 1 and (value[0] < 1000) == bool(ann['iscrowd'])
            rebuilt[mask] = value[0]
        things = np.isin(np.where(inst >= 1000, inst // 1000, inst), THING_IDS)
        np.testing.assert_array_equal(rebuilt, np.where(things, inst, 0))
        assert any(a['iscrowd'] == 0 for a in anns)


def test_train_ids_converter_rewrites_the_generator_files(synthetic_root, tmp_path):
    shutil.copytree(synthetic_root / 'leftImg8bit', tmp_path / 'leftImg8bit')
    shutil.copytree(synthetic_root / 'gtFine', tmp_path / 'gtFine')
    originals = sorted(tmp_path.rglob('*_labelTrainIds.png'))
    arrays = [np.array(Image.open(p)) for p in originals]
    for p in originals:
        p.unlink()
    assert convert_cityscapes_train_ids(str(tmp_path)) == 5
    for p, expected in zip(originals, arrays):
        np.testing.assert_array_equal(np.array(Image.open(p)), expected)


def test_cityscapes_converter_names_a_missing_split_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'leftImg8bit/val.*<city>'):
        convert_cityscapes_instances(str(tmp_path), splits=('val', ))


def test_cityscapes_converter_names_an_empty_split(tmp_path):
    (tmp_path / 'leftImg8bit' / 'val' / 'aachen').mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match='val split is empty'):
        convert_cityscapes_instances(str(tmp_path), splits=('val', ))


def test_cityscapes_converter_names_a_missing_png(synthetic_root, tmp_path):
    shutil.copytree(synthetic_root / 'leftImg8bit', tmp_path / 'leftImg8bit')
    with pytest.raises(FileNotFoundError, match='instanceIds png not found: .*charlie_000000_000019_gtFine'):
        convert_cityscapes_instances(str(tmp_path), splits=('val', ))


def test_cityscapes_converter_names_an_unreadable_png(synthetic_root, tmp_path):
    shutil.copytree(synthetic_root / 'leftImg8bit', tmp_path / 'leftImg8bit')
    shutil.copytree(synthetic_root / 'gtFine', tmp_path / 'gtFine')
    broken = next((tmp_path / 'gtFine' / 'val').rglob('*_instanceIds.png'))
    broken.write_bytes(b'not a png')
    with pytest.raises(ValueError, match='cannot read Cityscapes instanceIds png .*damaged'):
        convert_cityscapes_instances(str(tmp_path), splits=('val', ))


# ----------------------------------------------------------------------------------------------- panoptic


def test_panoptic_pngs_encode_the_instance_ids(synthetic_root):
    data = json.loads((synthetic_root / 'annotations' / 'cityscapes_panoptic_val.json').read_text())
    cats = {c['id']: c for c in data['categories']}
    assert [c['isthing'] for c in data['categories']] == [1] * 8 + [0] * 11
    assert len(data['images']) == len(data['annotations']) == 3
    for img, ann in zip(data['images'], data['annotations']):
        assert ann['image_id'] == img['id'] and ann['file_name'] == Path(img['file_name']).name
        png = np.array(Image.open(synthetic_root / 'annotations' / 'cityscapes_panoptic_val' /
                                  ann['file_name'])).astype(np.int64)
        pan = png[..., 0] + 256 * png[..., 1] + 65536 * png[..., 2]
        inst = np.array(Image.open(synthetic_root / 'gtFine' / 'val' / img['file_name'].replace(
            'leftImg8bit.png', 'gtFine_instanceIds.png'))).astype(np.int64)
        evaluated = np.isin(np.where(inst >= 1000, inst // 1000, inst), list(cats))
        np.testing.assert_array_equal(pan, np.where(evaluated, inst, 0))
        segments = {s['id']: s for s in ann['segments_info']}
        assert set(segments) == set(np.unique(pan).tolist()) - {0}
        for seg_id, seg in segments.items():
            assert seg['category_id'] == (seg_id // 1000 if seg_id >= 1000 else seg_id)
            assert seg['area'] == int((pan == seg_id).sum())
            assert seg['iscrowd'] == int(cats[seg['category_id']]['isthing'] == 1 and seg_id < 1000)


def test_panoptic_converter_alone_reproduces_the_generator_files(synthetic_root, tmp_path):
    written = convert_cityscapes_panoptic(str(synthetic_root), out_dir=str(tmp_path), splits=('val', ))
    assert written == {'val': str(tmp_path / 'cityscapes_panoptic_val.json')}
    assert Path(written['val']).read_bytes() == (synthetic_root / 'annotations' / 'cityscapes_panoptic_val.json'
                                                 ).read_bytes()
    for png in (synthetic_root / 'annotations' / 'cityscapes_panoptic_val').iterdir():
        assert (tmp_path / 'cityscapes_panoptic_val' / png.name).read_bytes() == png.read_bytes()


# ----------------------------------------------------------------------------------------------- KITTI-360


def test_kitti360_split_lists_become_coco_jsons(tmp_path):
    written = convert_kitti360_instances(str(write_kitti360(tmp_path)))
    train, val = (json.loads(Path(written[s]).read_text()) for s in ('train', 'val'))
    assert [len(train['images']), len(val['images'])] == [2, 1]
    assert val['images'][0]['file_name'] == 'data_2d_raw/2013_05_28_drive_0000_sync/image_00/data_rect/0000000300.png'
    assert (tmp_path / val['images'][0]['file_name']).is_file()
    assert [(a['category_id'], a['iscrowd']) for a in val['annotations']] == [(PERSON, 1), (PERSON, 0), (CAR, 0),
                                                                             (CAR, 0), (BICYCLE, 0)]
    assert val['categories'] == train['categories'] and len(val['categories']) == 8


def test_kitti360_names_a_missing_split_list(tmp_path):
    (tmp_path / 'data_2d_semantics').mkdir()
    with pytest.raises(FileNotFoundError, match='split list not found: .*2013_05_28_drive_train_frames.txt'):
        convert_kitti360_instances(str(tmp_path), splits=('train', ))


def test_kitti360_names_a_missing_semantics_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match='data_2d_semantics'):
        convert_kitti360_instances(str(tmp_path))


def test_kitti360_refuses_an_empty_split_list(tmp_path):
    write_kitti360(tmp_path)
    (tmp_path / 'data_2d_semantics' / 'train' / '2013_05_28_drive_val_frames.txt').write_text('\n')
    with pytest.raises(ValueError, match='val_frames.txt is empty'):
        convert_kitti360_instances(str(tmp_path), splits=('val', ))


def test_kitti360_names_a_malformed_line(tmp_path):
    write_kitti360(tmp_path)
    (tmp_path / 'data_2d_semantics' / 'train' / '2013_05_28_drive_val_frames.txt').write_text('only_one_path\n')
    with pytest.raises(ValueError, match='line 1: expected "image_path label_path"'):
        convert_kitti360_instances(str(tmp_path), splits=('val', ))


def test_kitti360_names_a_missing_image(tmp_path):
    write_kitti360(tmp_path)
    next((tmp_path / 'data_2d_raw').rglob('0000000300.png')).unlink()
    with pytest.raises(FileNotFoundError, match='KITTI-360 image not found: .*0000000300.png'):
        convert_kitti360_instances(str(tmp_path), splits=('val', ))


# ----------------------------------------------------------------------------------------------- Synscapes, UrbanSyn


def test_synscapes_rgb_encoded_instances_become_coco(tmp_path):
    data = json.loads(Path(convert_synscapes_instances(str(write_synscapes(tmp_path)))).read_text())
    assert [img['file_name'] for img in data['images']] == ['img/rgb/1.png', 'img/rgb/2.png', 'img/rgb/10.png']
    assert [(a['category_id'], a['iscrowd'], a['area']) for a in data['annotations'] if a['image_id'] == 0] == [
        (PERSON, 1, 112), (PERSON, 0, 56), (CAR, 0, 140), (CAR, 0, 150), (BICYCLE, 0, 48)]


def test_synscapes_names_a_missing_folder(tmp_path):
    (tmp_path / 'img' / 'rgb').mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r'img/class.*Synscapes'):
        convert_synscapes_instances(str(tmp_path))


def test_urbansyn_label_ids_and_panoptic_become_coco(tmp_path):
    data = json.loads(Path(convert_urbansyn_instances(str(write_urbansyn(tmp_path, lambda x: x)))).read_text())
    assert [img['file_name'] for img in data['images']] == ['rgb/rgb_0001.png', 'rgb/rgb_0003.png']
    assert len(data['annotations']) == 10


def test_urbansyn_train_ids_give_the_same_annotations(tmp_path):
    id_to_train = np.full(256, 255, np.uint8)
    id_to_train[TRAINID_TO_ID[:19]] = np.arange(19)
    by_ids = json.loads(Path(convert_urbansyn_instances(str(write_urbansyn(tmp_path / 'a', lambda x: x)))).read_text())
    by_train = json.loads(Path(convert_urbansyn_instances(str(write_urbansyn(tmp_path / 'b', lambda x: id_to_train[x])),
                                                          semantic_encoding='trainIds')).read_text())
    # Only the caravan (no trainId) differs, and it is not annotated either way.
    assert by_train['annotations'] == by_ids['annotations']


def test_urbansyn_refuses_colour_semantictoy_maps(tmp_path):
    write_urbansyn(tmp_path, lambda x: np.stack([x] * 3, -1))
    with pytest.raises(ValueError, match='ss_0001.png has shape .*one channel'):
        convert_urbansyn_instances(str(tmp_path))


# ----------------------------------------------------------------------------------------------- CLIs


def _cli(name):
    return load_tool(f'dataset_converters/{name}.py')


def test_generator_cli_writes_the_dataset(tmp_path, capsys):
    _cli('make_synthetic_cityscapes').main([str(tmp_path), '--num-train', '1', '--num-val', '1', '--height', '32',
                                            '--width', '64', '--no-panoptic'])
    assert 'train: 1 images' in capsys.readouterr().out
    assert (tmp_path / 'annotations' / 'instancesonly_filtered_gtFine_val.json').is_file()
    assert not (tmp_path / 'annotations' / 'cityscapes_panoptic_val.json').exists()


@pytest.mark.parametrize('name,args', [('cityscapes', []), ('cityscapes_panoptic', []), ('kitti360', []),
                                       ('synthetic_sources', ['synscapes']), ('synthetic_sources', ['urbansyn'])])
def test_converter_clis_exit_with_a_message_on_a_wrong_root(tmp_path, name, args, capsys):
    with pytest.raises(SystemExit) as info:
        _cli(name).main(args + [str(tmp_path / 'missing')])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith(f'error: no folder {tmp_path / "missing"}')
