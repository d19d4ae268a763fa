"""Boundary IoU for semantic segmentation (mmseg data samples), accumulated over the dataset per class."""
from __future__ import annotations

import numbers
from collections import OrderedDict
from typing import Dict, Optional, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger, print_log
from prettytable import PrettyTable
from torch import Tensor

from mmfusion.registry import METRICS

from ..functional.boundary import check_dilation_ratio, dilation_pixels, label_boundary


@METRICS.register_module()
class BoundaryIoUMetric(BaseMetric):
    """Per-class and mean Boundary IoU of semantic segmentation maps.

    For every class c, the boundary of the mask ``gt == c`` (resp. ``pred == c``) is taken as in
    :func:`mmfusion.evaluation.functional.mask_to_boundary`, with d from each image's size. Like mmseg's
    ``IoUMetric`` accumulates areas, this metric accumulates, over the whole dataset, the boundary pixels of the
    ground truth, of the prediction and of both; the Boundary IoU of class c is
    ``sum |G_c,d & P_c,d| / sum |G_c,d | P_c,d|`` and mBIoU is its mean over the classes with a non-empty union
    (a class absent from both the ground truth and the predictions gets NaN and is left out of the mean, as in
    ``IoUMetric``). Values are percentages rounded to 2 decimals, as ``IoUMetric`` reports mIoU.

    Ignored pixels (``gt == ignore_index``) are not part of any ground-truth mask, so a ground-truth region next to
    them has a boundary there; they are then removed from both boundaries, so a prediction is neither rewarded nor
    penalised on them (as mmseg drops them from IoU, and as the reference's panoptic Boundary IoU drops void pixels).

    Reads ``data_sample['pred_sem_seg']['data']`` and ``data_sample['gt_sem_seg']['data']`` ((1, H, W) or (H, W),
    the same size) and ``dataset_meta['classes']``.

    Args:
        ignore_index (int): ground-truth label that is not evaluated. Defaults to 255.
        dilation_ratio (float): boundary width as a fraction of the image diagonal; the Boundary IoU authors
            use 0.005 for Cityscapes, 0.02 for COCO and LVIS (docs/boundary_metrics.md). Defaults to 0.02.
        collect_device (str): device for collecting results across ranks, 'cpu' or 'gpu'. Defaults to 'cpu'.
        prefix (str, optional): prefix of the metric names. Defaults to None.
    """

    def __init__(self,
                 ignore_index: int = 255,
                 dilation_ratio: float = 0.02,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
            raise ValueError(f'ignore_index must be an int label, got {ignore_index!r} '
                             f'({type(ignore_index).__name__}); pass e.g. ignore_index=255')
        check_dilation_ratio(dilation_ratio)
        self.ignore_index = int(ignore_index)
        self.dilation_ratio = dilation_ratio

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Accumulate the boundary intersection and union of every class for a batch of data samples.

        Args:
            data_batch (dict): a batch from the dataloader (unused).
            data_samples (Sequence[dict]): mmseg data samples with ``pred_sem_seg`` and ``gt_sem_seg``.
        """
        num_classes = len(self.dataset_meta['classes'])
        for data_sample in data_samples:
            pred = data_sample['pred_sem_seg']['data'].squeeze()
            gt = data_sample['gt_sem_seg']['data'].squeeze().to(pred.device)
            self.results.append(self.boundary_intersect_and_union(pred, gt, num_classes))

    def boundary_intersect_and_union(self, pred: Tensor, gt: Tensor, num_classes: int) -> tuple[np.ndarray, ...]:
        """Boundary pixel counts of one image, per class.

        Args:
            pred (Tensor): (H, W) predicted labels.
            gt (Tensor): (H, W) ground-truth labels, ``ignore_index`` where not evaluated.
            num_classes (int): number of classes; labels outside [0, num_classes) belong to no class.

        Returns:
            tuple[np.ndarray, ...]: (num_classes,) int64 arrays: intersection, union, ground-truth and predicted
            boundary pixels.
        """
        if pred.shape != gt.shape or pred.dim() != 2:
            raise ValueError(f'pred_sem_seg and gt_sem_seg must be (H, W) maps of the same size, got '
                             f'{tuple(pred.shape)} and {tuple(gt.shape)}; resize the prediction to the '
                             'ground-truth size (mmseg does so in postprocess_result)')
        d = dilation_pixels(gt.shape[0], gt.shape[1], self.dilation_ratio)
        # numpy + OpenCV on the CPU: far faster than CPU tensors for these per-pixel passes.
        pred = pred.detach().cpu().numpy().astype(np.int64, copy=False)
        gt = gt.detach().cpu().numpy().astype(np.int64, copy=False)
        valid = gt != self.ignore_index
        gt_b = label_boundary(gt, dilation=d) & valid
        pred_b = label_boundary(pred, dilation=d) & valid

        def count(labels: np.ndarray) -> np.ndarray:
            return np.bincount(labels[(labels >= 0) & (labels < num_classes)], minlength=num_classes)

        area_gt = count(gt[gt_b])
        area_pred = count(pred[pred_b])
        area_inter = count(gt[gt_b & pred_b & (gt == pred)])
        return area_inter, area_gt + area_pred - area_inter, area_gt, area_pred

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """Boundary IoU per class and its mean over the dataset.

        Args:
            results (list): the per-image tuples of :meth:`boundary_intersect_and_union`.

        Returns:
            Dict[str, float]: ``mBIoU`` and ``BIoU.<class name>`` for every class, in percent.
        """
        logger: MMLogger = MMLogger.get_current_instance()
        inter = np.sum([r[0] for r in results], axis=0, dtype=np.float64)
        union = np.sum([r[1] for r in results], axis=0, dtype=np.float64)
        with np.errstate(invalid='ignore', divide='ignore'):
            biou = np.where(union > 0, inter / union, np.nan)
        class_names = list(self.dataset_meta['classes'])
        per_class = np.round(biou * 100, 2)
        mean = float(np.round(np.nanmean(biou) * 100, 2)) if np.isfinite(biou).any() else float('nan')

        table = PrettyTable()
        table.add_column('Class', class_names)
        table.add_column('BIoU', per_class.tolist())
        print_log('per class boundary IoU:', logger)
        print_log('\n' + table.get_string(), logger=logger)

        metrics = OrderedDict(mBIoU=mean)
        metrics.update((f'BIoU.{name}', float(v)) for name, v in zip(class_names, per_class))
        return metrics
