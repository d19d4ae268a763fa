"""Boundary AP for instance segmentation (mmdet data samples): COCO mask AP with Boundary IoU in the matching."""
from __future__ import annotations

import os.path as osp
import tempfile
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import pycocotools.mask as mask_utils
from mmdet.datasets.api_wrappers import COCO
from mmdet.evaluation.metrics import CocoMetric
from mmengine.fileio import load
from mmengine.logging import MMLogger
from pycocotools.cocoeval import COCOeval
from terminaltables import AsciiTable

from mmfusion.registry import METRICS

from ..functional.boundary import check_dilation_ratio, dilation_pixels, mask_to_boundary

__all__ = ['BoundaryCOCOeval', 'BoundaryAPMetric']

# Positions of the AP values in COCOeval.stats, and the keys they get.
_STATS = OrderedDict(boundary_AP=0, boundary_AP50=1, boundary_AP75=2, boundary_APs=3, boundary_APm=4,
                     boundary_APl=5)


class BoundaryCOCOeval(COCOeval):
    """pycocotools' COCOeval for masks whose IoU of a (detection, ground truth) pair is min(mask IoU, Boundary IoU).

    Only the IoU changes; matching, accumulation and summaries are pycocotools'. Crowd ground truths keep the
    mask IoU (pycocotools' crowd rule: intersection over the detection's area), as in the reference. Boundaries are
    computed per image from the decoded masks, with d from the image size.

    Args:
        coco_gt (COCO): ground truth.
        coco_dt (COCO): detections (``coco_gt.loadRes(...)``).
        dilation_ratio (float): boundary width as a fraction of the image diagonal; the Boundary IoU authors
            use 0.005 for Cityscapes, 0.02 for COCO and LVIS (docs/boundary_metrics.md). Defaults to 0.02.
    """

    def __init__(self, coco_gt, coco_dt, dilation_ratio: float = 0.02) -> None:
        super().__init__(coco_gt, coco_dt, iouType='segm')
        check_dilation_ratio(dilation_ratio)
        self.dilation_ratio = dilation_ratio

    def _pairs(self, img_id: int, cat_id: int) -> tuple[list, list]:
        """The ground truths and detections whose IoUs ``COCOeval.computeIoU`` returns, in its order."""
        p = self.params
        if p.useCats:
            gt, dt = self._gts[img_id, cat_id], self._dts[img_id, cat_id]
        else:
            gt = [g for c in p.catIds for g in self._gts[img_id, c]]
            dt = [d for c in p.catIds for d in self._dts[img_id, c]]
        order = np.argsort([-d['score'] for d in dt], kind='mergesort')
        return gt, [dt[i] for i in order[:p.maxDets[-1]]]

    def computeIoU(self, imgId: int, catId: int) -> Union[list, np.ndarray]:  # noqa: N802,N803 (pycocotools' names)
        mask_ious = super().computeIoU(imgId, catId)
        if len(mask_ious) == 0:
            return mask_ious
        gt, dt = self._pairs(imgId, catId)
        crowd = np.array([int(g['iscrowd']) for g in gt], dtype=bool)
        b_ious = mask_utils.iou(self._boundaries(dt), self._boundaries(gt), crowd.astype(np.uint8).tolist())
        ious = np.array(mask_ious, dtype=np.float64)
        ious[:, ~crowd] = np.minimum(ious[:, ~crowd], np.asarray(b_ious)[:, ~crowd])
        return ious

    def _boundaries(self, anns: List[dict]) -> List[dict]:
        """RLEs of the annotations' boundaries (their 'segmentation' is an RLE after ``_prepare``)."""
        out = []
        for ann in anns:
            rle = ann['segmentation']
            h, w = rle['size']
            x, y, bw, bh = (int(v) for v in mask_utils.toBbox(rle))
            boundary = np.zeros((h, w), dtype=np.uint8, order='F')
            if bw > 0 and bh > 0:
                # The boundary lies inside the bounding box, and outside it the mask is background just as outside
                # the image, so eroding the crop (with d from the full image) gives the same boundary, faster.
                crop = mask_utils.decode(rle)[y:y + bh, x:x + bw]
                d = dilation_pixels(h, w, self.dilation_ratio)
                boundary[y:y + bh, x:x + bw] = mask_to_boundary(crop, dilation=d)
            out.append(mask_utils.encode(boundary))
        return out


@METRICS.register_module()
class BoundaryAPMetric(CocoMetric):
    """COCO-style Boundary AP of instance masks (Cheng et al., CVPR 2021).

    The mask AP of mmdet's ``CocoMetric`` (``metric='segm'``, same ground truth, same detections, same maximum
    detections and IoU thresholds), except that a detection and a ground truth overlap by
    min(mask IoU, Boundary IoU) instead of the mask IoU (:class:`BoundaryCOCOeval`). Use it beside ``CocoMetric``
    on the same ``ann_file``: the gap between ``coco/segm_mAP`` and ``coco/boundary_AP`` shows how much of the mask
    quality is lost at the boundaries.

    Keys (prefix ``coco`` by default): ``boundary_AP``, ``boundary_AP50``, ``boundary_AP75``, ``boundary_APs``,
    ``boundary_APm``, ``boundary_APl`` (fractions rounded to 3 decimals, as ``CocoMetric``), and with
    ``classwise=True`` ``<class name>_boundary_precision``.

    Args:
        ann_file (str, optional): COCO-format annotation file; when None the ground truth is converted from the
            data samples as ``CocoMetric`` does. Defaults to None.
        dilation_ratio (float): boundary width as a fraction of the image diagonal; the Boundary IoU authors
            use 0.005 for Cityscapes, 0.02 for COCO and LVIS (docs/boundary_metrics.md). Defaults to 0.02.
        classwise (bool): also report and print the AP of every class. Defaults to False.
        proposal_nums (Sequence[int]): maximum detections per image of the COCO summaries (the largest is used for
            AP), as ``CocoMetric``. Defaults to (100, 300, 1000).
        iou_thrs (float | Sequence[float], optional): IoU thresholds. Defaults to None (0.50:0.05:0.95).
        outfile_prefix (str, optional): where to write the detections json; a temporary folder when None.
            Defaults to None.
        backend_args (dict, optional): file backend arguments for ``ann_file``. Defaults to None.
        collect_device (str): device for collecting results across ranks, 'cpu' or 'gpu'. Defaults to 'cpu'.
        prefix (str, optional): prefix of the metric names. Defaults to None ('coco').
        sort_categories (bool): sort the categories of ``ann_file``, as ``CocoMetric``. Defaults to False.
    """

    def __init__(self,
                 ann_file: Optional[str] = None,
                 dilation_ratio: float = 0.02,
                 classwise: bool = False,
                 proposal_nums: Sequence[int] = (100, 300, 1000),
                 iou_thrs: Optional[Union[float, Sequence[float]]] = None,
                 outfile_prefix: Optional[str] = None,
                 backend_args: Optional[dict] = None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None,
                 sort_categories: bool = False) -> None:
        check_dilation_ratio(dilation_ratio)
        if ann_file is not None and not osp.isfile(ann_file) and backend_args is None:
            raise ValueError(f'ann_file {ann_file!r} does not exist; point it at the COCO-format json of the '
                             'evaluated split (the same file as CocoMetric\'s)')
        super().__init__(ann_file=ann_file, metric='segm', classwise=classwise, proposal_nums=proposal_nums,
                         iou_thrs=iou_thrs, outfile_prefix=outfile_prefix, backend_args=backend_args,
                         collect_device=collect_device, prefix=prefix, sort_categories=sort_categories)
        self.dilation_ratio = dilation_ratio

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """Boundary AP over the processed results.

        Args:
            results (list): the (ground truth, prediction) pairs of ``CocoMetric.process``.

        Returns:
            Dict[str, float]: the keys listed in the class docstring.
        """
        logger: MMLogger = MMLogger.get_current_instance()
        gts, preds = zip(*results)
        with tempfile.TemporaryDirectory() as tmp_dir:
            outfile_prefix = self.outfile_prefix or osp.join(tmp_dir, 'results')
            if self._coco_api is None:
                logger.info('Converting ground truth to coco format...')
                self._coco_api = COCO(self.gt_to_coco_json(gts, outfile_prefix))
            if self.cat_ids is None:
                self.cat_ids = self._coco_api.get_cat_ids(cat_names=self.dataset_meta['classes'])
            if self.img_ids is None:
                self.img_ids = self._coco_api.get_img_ids()
            result_files = self.results2json(preds, outfile_prefix)
            if 'segm' not in result_files:
                raise ValueError('BoundaryAPMetric needs instance masks: the predictions have no pred_instances.masks;'
                                 ' evaluate an instance segmentation model')
            predictions = load(result_files['segm'])
        if not predictions:
            logger.error('The testing results of the whole dataset is empty.')
            return OrderedDict()
        # Without the box, loadRes takes the mask area for the small/medium/large ranges (as CocoMetric does).
        for p in predictions:
            p.pop('bbox')
        coco_eval = BoundaryCOCOeval(self._coco_api, self._coco_api.loadRes(predictions), self.dilation_ratio)
        coco_eval.params.catIds = self.cat_ids
        coco_eval.params.imgIds = self.img_ids
        coco_eval.params.maxDets = list(self.proposal_nums)
        coco_eval.params.iouThrs = self.iou_thrs
        logger.info('Evaluating boundary AP (IoU = min(mask IoU, boundary IoU))...')
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()

        eval_results = OrderedDict()
        if self.classwise:
            eval_results.update(self._classwise(coco_eval.eval['precision'], logger))
        for key, i in _STATS.items():
            eval_results[key] = float(f'{round(coco_eval.stats[i], 3)}')
        ap = coco_eval.stats[:6]
        logger.info('boundary_AP_copypaste: ' + ' '.join(f'{v:.3f}' for v in ap))
        return eval_results

    def _classwise(self, precisions: np.ndarray, logger: MMLogger) -> Dict[str, float]:
        """Per-class AP (all areas, largest maxDets); precisions are (iou, recall, class, area, maxDets)."""

        def mean_ap(p: np.ndarray) -> float:
            p = p[p > -1]
            return float(np.mean(p)) if p.size else float('nan')

        results, rows = OrderedDict(), [['category', 'AP', 'AP50', 'AP75', 'APs', 'APm', 'APl']]
        iou_thrs = np.asarray(self.iou_thrs, dtype=np.float64).reshape(-1)
        for idx, cat_id in enumerate(self.cat_ids):
            name = self._coco_api.loadCats(cat_id)[0]['name']
            row = [mean_ap(precisions[:, :, idx, 0, -1])]
            for thr in (0.5, 0.75):
                t = np.flatnonzero(np.isclose(iou_thrs, thr))
                row.append(mean_ap(precisions[t, :, idx, 0, -1]) if t.size else float('nan'))
            row += [mean_ap(precisions[:, :, idx, area, -1]) for area in (1, 2, 3)]
            results[f'{name}_boundary_precision'] = round(row[0], 3)
            rows.append([name] + [f'{v:.3f}' for v in row])
        logger.info('\n' + AsciiTable(rows).table)
        return results
