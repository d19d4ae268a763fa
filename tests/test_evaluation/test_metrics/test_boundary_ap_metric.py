"""BoundaryAPMetric on a tiny COCO json (two 64 x 64 images, one 20 x 20 square each) with hand-computed AP.

64 x 64 images: d = round(0.02 * 90.5) = 2, so a 20 x 20 square has a boundary ring of 400 - 16 * 16 = 144 px.
"""
import json
import os.path as osp

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from mmengine.config import Config
from mmengine.evaluator import Evaluator
from mmengine.registry import DefaultScope

from mmfusion.evaluation import BoundaryAPMetric, BoundaryCOCOeval

CONFIGS = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))), 'configs')
SIZE = 64
# With two ground truths and two detections, the higher-scored one a match: when the other one matches too the AP at
# that IoU threshold is 1; when it does not, precision is 1 up to recall 0.5 and 0.5 after it, and the 101-point
# interpolated AP is 51 / 101 (recall points 0.00 ... 0.50).
HALF_AP = 51 / 101


def square(top, left, side=20):
    m = np.zeros((SIZE, SIZE), dtype=np.uint8)
    m[top:top + side, left:left + side] = 1
    return m


def rle(mask):
    r = mask_utils.encode(np.asfortranarray(mask))
    r['counts'] = r['counts'].decode()
    return r


def write_coco(path, gt_masks, crowd=()):
    anns = []
    for img_id, masks in gt_masks.items():
        for m in masks:
            ys, xs = np.nonzero(m)
            anns.append(dict(id=len(anns) + 1, image_id=img_id, category_id=1, segmentation=rle(m),
                             area=float(m.sum()), iscrowd=int(len(anns) + 1 in crowd),
                             bbox=[float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)]))
    data = dict(images=[dict(id=i, width=SIZE, height=SIZE, file_name=f'{i}.png') for i in gt_masks],
                annotations=anns, categories=[dict(id=1, name='thing')])
    path.write_text(json.dumps(data))
    return str(path)


def det_sample(img_id, masks, scores):
    masks = torch.from_numpy(np.stack(masks)).bool()
    boxes = torch.tensor([[0., 0., SIZE, SIZE]] * len(masks))
    return dict(img_id=img_id, ori_shape=(SIZE, SIZE),
                pred_instances=dict(masks=masks, bboxes=boxes, scores=torch.tensor(scores),
                                    labels=torch.zeros(len(masks), dtype=torch.long)))


@pytest.fixture
def ann_file(tmp_path):
    return write_coco(tmp_path / 'gt.json', {1: [square(20, 20)], 2: [square(20, 20)]})


def run(metric, samples):
    metric.dataset_meta = dict(classes=('thing',))
    metric.process({}, samples)
    return metric.evaluate(len(samples))


def test_perfect_prediction_gives_one(ann_file):
    res = run(BoundaryAPMetric(ann_file=ann_file),
              [det_sample(1, [square(20, 20)], [0.9]), det_sample(2, [square(20, 20)], [0.8])])
    assert res['coco/boundary_AP'] == 1.0
    assert res['coco/boundary_AP50'] == 1.0 and res['coco/boundary_AP75'] == 1.0


def test_shift_lowers_boundary_ap_below_mask_ap(ann_file):
    # Image 2's detection is moved right by 2 px. Mask IoU = 20 * 18 / (20 * 22) = 0.818: a match at the 7
    # thresholds 0.50 ... 0.80. The 144-px rings share their two 2-row bands on 18 columns (72 px) and nothing else
    # (shift >= d), so Boundary IoU = 72 / (2 * 144 - 72) = 1/3 < 0.5: a match at no threshold.
    samples = [det_sample(1, [square(20, 20)], [0.9]), det_sample(2, [square(20, 22)], [0.8])]
    mask_ap = (7 * 1.0 + 3 * HALF_AP) / 10
    boundary = run(BoundaryAPMetric(ann_file=ann_file), samples)
    assert boundary['coco/boundary_AP'] == round(HALF_AP, 3)
    assert boundary['coco/boundary_AP50'] == round(HALF_AP, 3)
    assert boundary['coco/boundary_AP75'] == round(HALF_AP, 3)
    from mmdet.evaluation import CocoMetric
    mask = run(CocoMetric(ann_file=ann_file, metric='segm'), samples)
    assert mask['coco/segm_mAP'] == round(mask_ap, 3)
    assert mask['coco/segm_mAP_50'] == 1.0
    assert boundary['coco/boundary_AP'] < mask['coco/segm_mAP']


def test_iou_is_min_of_mask_and_boundary_iou_and_crowd_keeps_mask_iou(tmp_path):
    # Image 1: ground truth 1 is the 20 x 20 square at (20, 20); ground truth 2, a crowd region, is the 20 x 20
    # square at (20, 40) (touching the first). The detection is the first square moved right by 2 px.
    # vs gt 1: min(mask IoU 360 / 440, Boundary IoU 1/3) = 1/3.
    # vs the crowd: pycocotools' crowd IoU = intersection / detection area = 40 / 400 (columns 40, 41), kept.
    gt_file = write_coco(tmp_path / 'gt.json', {1: [square(20, 20), square(20, 40)]}, crowd=(2,))
    from mmdet.datasets.api_wrappers import COCO
    coco = COCO(gt_file)
    dets = coco.loadRes([dict(image_id=1, category_id=1, segmentation=rle(square(20, 22)), score=0.9)])
    ev = BoundaryCOCOeval(coco, dets)
    ev.params.imgIds = [1]
    ev.evaluate()
    np.testing.assert_allclose(ev.ious[1, 1], [[1 / 3, 40 / 400]])


def test_larger_dilation_ratio_is_used(ann_file):
    # dilation_ratio 0.15: d = round(13.58) = 14, and a 20 x 20 square has no interior left (20 < 2 * 14 + 1): the
    # boundaries are the whole masks, Boundary IoU = mask IoU = 0.818, and the AP is the mask AP (7 thresholds).
    samples = [det_sample(1, [square(20, 20)], [0.9]), det_sample(2, [square(20, 22)], [0.8])]
    res = run(BoundaryAPMetric(ann_file=ann_file, dilation_ratio=0.15), samples)
    assert res['coco/boundary_AP'] == round((7 + 3 * HALF_AP) / 10, 3)


def test_classwise_reports_per_class_ap(ann_file):
    samples = [det_sample(1, [square(20, 20)], [0.9]), det_sample(2, [square(20, 22)], [0.8])]
    res = run(BoundaryAPMetric(ann_file=ann_file, classwise=True), samples)
    assert res['coco/thing_boundary_precision'] == round(HALF_AP, 3)


# --- construction -------------------------------------------------------------------------------------------------

def test_builds_from_an_mmdet_scoped_config_beside_coco_metric(ann_file):
    import mmdet.evaluation  # noqa: F401 (registers CocoMetric)
    cfg = Config(dict(val_evaluator=[dict(type='CocoMetric', ann_file=ann_file, metric=['segm']),
                                     dict(type='mmfusion.BoundaryAPMetric', ann_file=ann_file)]))
    with DefaultScope.overwrite_default_scope('mmdet'):
        evaluator = Evaluator(cfg.val_evaluator)
    assert isinstance(evaluator.metrics[1], BoundaryAPMetric)
    evaluator.dataset_meta = dict(classes=('thing',))
    evaluator.process([det_sample(1, [square(20, 20)], [0.9]), det_sample(2, [square(20, 22)], [0.8])])
    res = evaluator.evaluate(2)
    assert res['coco/segm_mAP'] == round((7 + 3 * HALF_AP) / 10, 3)
    assert res['coco/boundary_AP'] == round(HALF_AP, 3)


def test_builds_through_mmdet_registry(ann_file):
    from mmdet.registry import METRICS
    with DefaultScope.overwrite_default_scope('mmdet'):
        metric = METRICS.build(dict(type='mmfusion.BoundaryAPMetric', ann_file=ann_file, dilation_ratio=0.01))
    assert isinstance(metric, BoundaryAPMetric) and metric.dilation_ratio == 0.01 and metric.metrics == ['segm']


# --- bad input ---------------------------------------------------------------------------------------------------

def test_missing_ann_file_is_refused(tmp_path):
    with pytest.raises(ValueError, match='does not exist; point it at the COCO-format json'):
        BoundaryAPMetric(ann_file=str(tmp_path / 'missing.json'))


def test_non_positive_dilation_ratio_is_refused(ann_file):
    with pytest.raises(ValueError, match='dilation_ratio must be a finite number > 0'):
        BoundaryAPMetric(ann_file=ann_file, dilation_ratio=-1)


@pytest.mark.parametrize('name', ['mask2former_d3s2_cityscapes.py', 'mask2former_d3s2_coco.py',
                                  'demo/mask2former_d3s2_synthetic_demo.py'])
def test_shipped_instance_configs_evaluate_boundary_ap_beside_coco_metric(name):
    cfg = Config.fromfile(osp.join(CONFIGS, name))
    metrics = {m['type']: m for m in cfg.val_evaluator}
    assert metrics['mmfusion.BoundaryAPMetric']['ann_file'] == metrics['CocoMetric']['ann_file']
    assert cfg.test_evaluator == cfg.val_evaluator
