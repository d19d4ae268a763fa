"""BoundaryIoUMetric on tiny synthetic mmseg data samples with hand-computed answers.

All images are 32 x 32, so d = round(0.02 * 45.25) = 1: the boundary of a region is its pixels next to another
label or to the image border.
"""
import logging
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.evaluator import Evaluator
from mmengine.logging import MMLogger
from mmengine.registry import DefaultScope

from mmfusion.evaluation import BoundaryIoUMetric

CONFIGS = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))), 'configs')
CLASSES = ('background', 'thing', 'absent')


def label_map(square_left=None, size=32, top=8, side=8, fill=0):
    labels = torch.full((size, size), fill, dtype=torch.long)
    if square_left is not None:
        labels[top:top + side, square_left:square_left + side] = 1
    return labels


def sample(pred, gt):
    return dict(pred_sem_seg=dict(data=pred[None]), gt_sem_seg=dict(data=gt[None]))


def evaluate(samples, **kwargs):
    metric = BoundaryIoUMetric(**kwargs)
    metric.dataset_meta = dict(classes=CLASSES)
    metric.process({}, samples)
    return metric.evaluate(len(samples))


def test_perfect_prediction_gives_100():
    gt = label_map(8)
    res = evaluate([sample(gt.clone(), gt)])
    assert res['BIoU.background'] == 100.0 and res['BIoU.thing'] == 100.0 and res['mBIoU'] == 100.0


def test_shifted_square_per_class_and_mean():
    # thing: 8 x 8 square moved right by 1. Rings of 28 px share 7 px on the top and on the bottom row -> 14 / 42.
    # background: the image frame (124 px) plus the 36-px ring around the square, for both maps. The frames agree;
    # the outer rings share rows 7 and 16 on columns 8..16 (18 px) -> (124 + 18) / (2 * 160 - 142).
    res = evaluate([sample(label_map(9), label_map(8))])
    thing, background = 14 / 42, 142 / 178
    assert res['BIoU.thing'] == pytest.approx(round(100 * thing, 2))
    assert res['BIoU.background'] == pytest.approx(round(100 * background, 2))
    assert res['mBIoU'] == pytest.approx(round(100 * (thing + background) / 2, 2))


def test_class_absent_everywhere_is_nan_and_left_out_of_the_mean():
    res = evaluate([sample(label_map(9), label_map(8))])
    assert np.isnan(res['BIoU.absent'])
    assert res['mBIoU'] == pytest.approx(round(100 * (14 / 42 + 142 / 178) / 2, 2))


def test_dataset_accumulates_pixels_not_per_image_ratios():
    # thing: a perfect image (28 / 28) and the shifted one (14 / 42) give (28 + 14) / (28 + 42) = 60 %, not 66.67 %.
    res = evaluate([sample(label_map(8), label_map(8)), sample(label_map(9), label_map(8))])
    assert res['BIoU.thing'] == 60.0


def test_ignored_pixels_count_in_neither_boundary():
    # Columns 20..31 of the ground truth are ignored (255); the prediction puts a 'thing' blob there.
    # thing: the ring of the square matches exactly; the blob is ignored -> 100.
    # background (columns 0..19 only): the ground-truth region ends at column 19 (next to ignored pixels):
    # top and bottom rows (2 x 20) + left column (30) + column 19 (30) + the ring around the square (36) = 136;
    # the prediction's background boundary there is the same minus column 19: 106 -> 106 / 136.
    gt = label_map(8)
    gt[:, 20:] = 255
    pred = label_map(8)
    pred[20:28, 22:30] = 1
    res = evaluate([sample(pred, gt)])
    assert res['BIoU.thing'] == 100.0
    assert res['BIoU.background'] == pytest.approx(round(100 * 106 / 136, 2))


def test_custom_ignore_index():
    gt = label_map(8)
    gt[:, 20:] = 7
    pred = label_map(8)
    pred[20:28, 22:30] = 1
    assert evaluate([sample(pred, gt)], ignore_index=7)['BIoU.background'] == pytest.approx(round(100 * 106 / 136, 2))


def test_wider_boundary_with_larger_ratio():
    # dilation_ratio 0.05 on 32 x 32: d = round(2.26) = 2. thing rings: 64 - 16 = 48 px; shift by 1: the two 2-row
    # bands overlap on 7 columns (28 px) and the side bands (rows 10..13) on one column each (2 x 4 px) -> 36 / 60.
    res = evaluate([sample(label_map(9), label_map(8))], dilation_ratio=0.05)
    assert res['BIoU.thing'] == 60.0


def test_table_is_logged():
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        evaluate([sample(label_map(8), label_map(8))])
    finally:
        logger.removeHandler(handler)
    rows = [line for r in records for line in r.getMessage().splitlines()]
    assert any(line.split('|')[1:3] == ['   thing    ', ' 100.0 '] for line in rows)
    assert any('absent' in line and 'nan' in line for line in rows)


# --- construction -------------------------------------------------------------------------------------------------

def test_builds_from_an_mmseg_scoped_config_beside_iou_metric():
    import mmseg.evaluation  # noqa: F401 (registers IoUMetric)
    cfg = Config(dict(val_evaluator=[dict(type='IoUMetric', iou_metrics=['mIoU']),
                                     dict(type='mmfusion.BoundaryIoUMetric')]))
    with DefaultScope.overwrite_default_scope('mmseg'):
        evaluator = Evaluator(cfg.val_evaluator)
    assert isinstance(evaluator.metrics[1], BoundaryIoUMetric)
    evaluator.dataset_meta = dict(classes=CLASSES)
    evaluator.process([sample(label_map(9), label_map(8))])
    res = evaluator.evaluate(1)
    assert res['mBIoU'] == pytest.approx(round(100 * (14 / 42 + 142 / 178) / 2, 2))
    assert res['mIoU'] > res['mBIoU']  # the area IoU of the shifted square is still 56 / 72


def test_builds_through_mmseg_registry():
    from mmseg.registry import METRICS
    with DefaultScope.overwrite_default_scope('mmseg'):
        metric = METRICS.build(dict(type='mmfusion.BoundaryIoUMetric', ignore_index=0, dilation_ratio=0.01))
    assert isinstance(metric, BoundaryIoUMetric) and metric.ignore_index == 0 and metric.dilation_ratio == 0.01


# --- bad input ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('ignore_index', ['255', 255.0, None, True])
def test_ignore_index_must_be_an_int(ignore_index):
    with pytest.raises(ValueError, match='ignore_index must be an int label'):
        BoundaryIoUMetric(ignore_index=ignore_index)


def test_non_positive_dilation_ratio_is_refused():
    with pytest.raises(ValueError, match='dilation_ratio must be a finite number > 0'):
        BoundaryIoUMetric(dilation_ratio=0)


def test_mismatched_prediction_size_is_refused():
    metric = BoundaryIoUMetric()
    metric.dataset_meta = dict(classes=CLASSES)
    with pytest.raises(ValueError, match='same size, got \\(32, 32\\) and \\(16, 16\\); resize the prediction'):
        metric.process({}, [sample(label_map(8), label_map(8, size=16, top=2, side=4))])


@pytest.mark.parametrize('name', ['mask2former_d3s2_cityscapes_semantic.py', 'mask2former_d3s2_ade20k.py'])
def test_shipped_semantic_configs_evaluate_boundary_iou_beside_iou(name):
    cfg = Config.fromfile(osp.join(CONFIGS, name))
    assert [m['type'] for m in cfg.val_evaluator] == ['IoUMetric', 'mmfusion.BoundaryIoUMetric']
    assert cfg.test_evaluator == cfg.val_evaluator
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        evaluator = Evaluator(cfg.val_evaluator)
    evaluator.dataset_meta = dict(classes=CLASSES)
    evaluator.process([sample(label_map(9), label_map(8))])
    assert evaluator.evaluate(1)['mBIoU'] == pytest.approx(round(100 * (14 / 42 + 142 / 178) / 2, 2))
