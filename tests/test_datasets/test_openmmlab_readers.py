"""The stock OpenMMLab readers and metrics on mmfusion's files: mmseg's and mmdet's Cityscapes datasets read the
synthetic dataset, perfect predictions score 100, and mmfusion.CityscapesPanopticDataset works with mmdet's
panoptic transform and metric. Needs mmcv/mmdet/mmseg (skipped where they do not import)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

from mmcv.transforms import LoadImageFromFile  # noqa: E402
from mmdet.datasets import CityscapesDataset as DetCityscapesDataset  # noqa: E402
from mmdet.datasets.transforms import LoadAnnotations as DetLoadAnnotations  # noqa: E402
from mmdet.evaluation import CityScapesMetric, CocoMetric  # noqa: E402
from mmseg.datasets import CityscapesDataset as SegCityscapesDataset  # noqa: E402
from mmseg.datasets.transforms import LoadAnnotations as SegLoadAnnotations  # noqa: E402
from mmseg.evaluation import IoUMetric  # noqa: E402

from mmfusion.datasets.cityscapes_labels import (  # noqa: E402
    STUFF_CLASSES,
    THING_CLASSES,
    THING_IDS,
    TRAIN_CLASSES,
    name2label,
)
from mmfusion.datasets.converters.kitti360 import convert_kitti360_instances  # noqa: E402
from mmfusion.datasets.converters.synthetic_sources import (  # noqa: E402
    convert_synscapes_instances,
    convert_urbansyn_instances,
)
from mmfusion.registry import DATASETS  # noqa: E402
from tests._tools import load_script  # noqa: E402

from ._layouts import write_kitti360, write_synscapes, write_urbansyn  # noqa: E402
from .conftest import TINY  # noqa: E402

VAL_JSON = 'annotations/instancesonly_filtered_gtFine_val.json'
PAN_JSON = 'annotations/cityscapes_panoptic_val.json'


def _instance_png(img_path):
    return np.array(Image.open(img_path.replace('leftImg8bit', 'gtFine').replace(
        '_gtFine.png', '_gtFine_instanceIds.png'))).astype(np.int64)


def _seg_dataset(root):
    return SegCityscapesDataset(data_root=str(root), pipeline=[LoadImageFromFile(), SegLoadAnnotations()],
                                data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val'))


def _det_dataset(root, ann_file=VAL_JSON, img_prefix='leftImg8bit/val/'):
    return DetCityscapesDataset(data_root=str(root), ann_file=ann_file, data_prefix=dict(img=img_prefix),
                                test_mode=True,
                                pipeline=[LoadImageFromFile(), DetLoadAnnotations(with_bbox=True, with_mask=True)])


def _perfect_instances(item):
    keep = ~item['gt_ignore_flags']
    masks = torch.from_numpy(item['gt_masks'].masks[keep].astype(bool))
    return dict(masks=masks, labels=torch.from_numpy(item['gt_bboxes_labels'][keep]),
                bboxes=item['gt_bboxes'].tensor[keep], scores=torch.ones(int(keep.sum())))


# ----------------------------------------------------------------------------------------------- mmseg


def test_mmseg_cityscapes_reads_the_train_idtoy_maps(synthetic_root):
    dataset = _seg_dataset(synthetic_root)
    assert len(dataset) == TINY['num_val'] and dataset.metainfo['classes'] == TRAIN_CLASSES
    for item in dataset:
        assert item['img'].shape == (TINY['height'], TINY['width'], 3)
        expected = np.array(Image.open(item['seg_map_path']))
        assert item['seg_map_path'].endswith('_gtFine_labelTrainIds.png')
        np.testing.assert_array_equal(item['gt_seg_map'], expected)
        assert len(np.unique(expected)) >= 8


def test_mmseg_iou_metric_scores_a_perfect_prediction_100(synthetic_root):
    dataset = _seg_dataset(synthetic_root)
    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = dataset.metainfo
    for item in dataset:
        seg = torch.from_numpy(item['gt_seg_map'].astype(np.int64))[None]
        metric.process({}, [dict(pred_sem_seg=dict(data=seg), gt_sem_seg=dict(data=seg))])
    assert metric.compute_metrics(metric.results)['mIoU'] == 100.0


# ----------------------------------------------------------------------------------------------- mmdet instances


def test_mmdet_cityscapes_reads_every_instance(synthetic_root):
    dataset = _det_dataset(synthetic_root)
    assert len(dataset) == TINY['num_val'] and dataset.metainfo['classes'] == THING_CLASSES
    total = 0
    for item in dataset:
        inst = _instance_png(item['img_path'])
        values = [v for v in np.unique(inst).tolist() if (v // 1000 if v >= 1000 else v) in THING_IDS]
        assert len(item['gt_masks']) == len(values)
        for mask, label, ignored in zip(item['gt_masks'].masks, item['gt_bboxes_labels'], item['gt_ignore_flags']):
            value = np.unique(inst[mask.astype(bool)])
            assert len(value) == 1 and (value[0] < 1000) == ignored
            assert name2label[THING_CLASSES[label]].id == (value[0] // 1000 if value[0] >= 1000 else value[0])
        total += int((~item['gt_ignore_flags']).sum())
    assert total >= 5


def test_mmdet_coco_metric_scores_perfect_predictions_100(synthetic_root):
    dataset = _det_dataset(synthetic_root)
    metric = CocoMetric(ann_file=str(synthetic_root / VAL_JSON), metric=['bbox', 'segm'])
    metric.dataset_meta = dataset.metainfo
    for item in dataset:
        metric.process({}, [dict(img_id=item['img_id'], ori_shape=item['ori_shape'],
                                 pred_instances=_perfect_instances(item))])
    results = metric.compute_metrics(metric.results)
    assert results['segm_mAP'] == 1.0 and results['bbox_mAP'] == 1.0


def test_mmdet_cityscapes_metric_scores_perfect_predictions_100(synthetic_root, tmp_path):
    dataset = _det_dataset(synthetic_root)
    metric = CityScapesMetric(outfile_prefix=str(tmp_path / 'cs'), seg_prefix=str(synthetic_root / 'gtFine' / 'val'))
    metric.dataset_meta = dataset.metainfo
    for item in dataset:
        pred = _perfect_instances(item)
        metric.process({}, [dict(img_path=item['img_path'], pred_instances=dict(
            masks=pred['masks'], labels=pred['labels'], scores=pred['scores']))])
    assert metric.compute_metrics(metric.results)['mAP'] == pytest.approx(1.0)


def test_instance_json_has_the_content_of_mmdets_converter(synthetic_root, tmp_path):
    import mmdet
    path = Path(mmdet.__file__).parent / '.mim' / 'tools' / 'dataset_converters' / 'cityscapes.py'
    converter = load_script(path, 'mmdet_cityscapes_converter')
    files = converter.collect_files(str(synthetic_root / 'leftImg8bit' / 'val'), str(synthetic_root / 'gtFine' / 'val'))
    theirs = converter.cvt_annotations([converter.load_img_info(f) for f in files], str(tmp_path / 'theirs.json'))
    ours = json.loads((synthetic_root / VAL_JSON).read_text())
    assert ours['categories'] == theirs['categories']

    def by_file(data):
        names = {img['id']: img['file_name'] for img in data['images']}
        images = {img['file_name']: {k: v for k, v in img.items() if k != 'id'} for img in data['images']}
        anns = {name: [] for name in images}
        for ann in data['annotations']:
            anns[names[ann['image_id']]].append({k: v for k, v in ann.items() if k not in ('id', 'image_id')})
        return images, anns

    assert by_file(ours) == by_file(json.loads(json.dumps(theirs)))


@pytest.mark.parametrize('name', ['kitti360', 'synscapes', 'urbansyn'])
def test_mmdet_cityscapes_reads_the_other_converters_jsons(tmp_path, name):
    if name == 'kitti360':
        ann_file = convert_kitti360_instances(str(write_kitti360(tmp_path)))['val']
    elif name == 'synscapes':
        ann_file = convert_synscapes_instances(str(write_synscapes(tmp_path)))
    else:
        ann_file = convert_urbansyn_instances(str(write_urbansyn(tmp_path, lambda x: x)))
    dataset = _det_dataset(tmp_path, ann_file=ann_file, img_prefix='')
    item = dataset[0]
    assert item['img'].shape == (32, 64, 3)
    assert len(item['gt_masks']) == 5 and int(item['gt_ignore_flags'].sum()) == 1
    assert [THING_CLASSES[i] for i in item['gt_bboxes_labels']] == ['person', 'person', 'car', 'car', 'bicycle']


# ----------------------------------------------------------------------------------------------- panoptic


def _panoptic_dataset(root, pipeline=()):
    return DATASETS.build(dict(type='mmfusion.CityscapesPanopticDataset', data_root=str(root), ann_file=PAN_JSON,
                               data_prefix=dict(img='leftImg8bit/val/', seg='annotations/cityscapes_panoptic_val/'),
                               test_mode=True, pipeline=list(pipeline)))


def test_panoptic_dataset_is_registered_with_cityscapes_classes(synthetic_root):
    dataset = _panoptic_dataset(synthetic_root)
    assert dataset.metainfo['classes'] == THING_CLASSES + STUFF_CLASSES
    assert dataset.metainfo['thing_classes'] == THING_CLASSES and len(dataset.metainfo['palette']) == 19
    assert len(dataset) == TINY['num_val']
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        assert Path(info['img_path']).is_file() and Path(info['seg_map_path']).is_file()
        assert Path(info['seg_map_path']).name == Path(info['img_path']).name
        things = [s for s in info['segments_info'] if s['is_thing']]
        assert len(things) == len(info['instances']) - sum(inst['ignore_flag'] for inst in info['instances'])
        assert all(s['category'] < 8 for s in things)


def _expected_panoptic_labels(img_path):
    """labelIds -> class index of CityscapesPanopticDataset (things 0-7, stuff 8-18), 255 elsewhere."""
    labels = np.array(Image.open(img_path.replace('leftImg8bit', 'gtFine').replace('_gtFine.png',
                                                                                    '_gtFine_labelIds.png')))
    lut = np.full(256, 255, np.uint8)
    for index, name in enumerate(THING_CLASSES + STUFF_CLASSES):
        lut[name2label[name].id] = index
    return lut[labels]


def test_panoptic_dataset_feeds_mmdets_panoptic_transform(synthetic_root):
    pytest.importorskip('panopticapi')
    from mmdet.datasets.transforms import LoadPanopticAnnotations
    dataset = _panoptic_dataset(synthetic_root, [LoadImageFromFile(), LoadPanopticAnnotations()])
    for item in dataset:
        np.testing.assert_array_equal(item['gt_seg_map'], _expected_panoptic_labels(item['img_path']))
        instances = [v for v in np.unique(_instance_png(item['img_path'])) if v >= 1000 and v // 1000 in THING_IDS]
        assert len(item['gt_masks']) == len(instances) > 0


def test_panoptic_metric_scores_a_perfect_prediction_100(synthetic_root):
    pytest.importorskip('panopticapi')
    from mmdet.datasets.transforms import LoadPanopticAnnotations
    from mmdet.evaluation import CocoPanopticMetric
    dataset = _panoptic_dataset(synthetic_root, [LoadImageFromFile(), LoadPanopticAnnotations()])
    metric = CocoPanopticMetric(ann_file=str(synthetic_root / PAN_JSON),
                                seg_prefix=str(synthetic_root / 'annotations' / 'cityscapes_panoptic_val'))
    metric.dataset_meta = dataset.metainfo
    void = len(dataset.metainfo['classes'])
    for item in dataset:
        sem = item['gt_seg_map'].astype(np.int64)
        pan = np.where((sem == 255) | (sem < 8), void, sem)  # stuff keeps its label; crowds stay void
        for k, (mask, label) in enumerate(zip(item['gt_masks'].masks, item['gt_bboxes_labels'])):
            pan[mask.astype(bool)] = label + (k + 1) * 1000
        metric.process({}, [dict(img_id=item['img_id'], img_path=item['img_path'], ori_shape=item['ori_shape'],
                                 pred_panoptic_seg=dict(sem_seg=torch.from_numpy(pan)[None]))])
    results = metric.compute_metrics(metric.results)
    assert results['PQ'] == pytest.approx(100.0)
