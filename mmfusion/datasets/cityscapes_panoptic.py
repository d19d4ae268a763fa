"""``mmfusion.CityscapesPanopticDataset``: mmdet's ``CocoPanopticDataset`` for the Cityscapes panoptic files written
by :mod:`mmfusion.datasets.converters.cityscapes_panoptic`.

Config sketch (data_root = a Cityscapes root, e.g. the synthetic one)::

    dict(type='mmfusion.CityscapesPanopticDataset', data_root=data_root,
         ann_file='annotations/cityscapes_panoptic_val.json',
         data_prefix=dict(img='leftImg8bit/val/', seg='annotations/cityscapes_panoptic_val/'), ...)
    val_evaluator = dict(type='CocoPanopticMetric', ann_file=data_root + 'annotations/cityscapes_panoptic_val.json',
                         seg_prefix=data_root + 'annotations/cityscapes_panoptic_val/')

Classes: the 8 things then the 11 stuff classes of Cityscapes (labels 0-7 things, 8-18 stuff), as Mask2Former's
panoptic head expects. The only change to mmdet's class besides METAINFO: the panoptic png is looked up by the
image's basename in the flat png folder (where mmdet's ``CocoPanopticMetric`` looks too), since Cityscapes image
file names carry a ``{city}/`` folder.
"""
import os.path as osp

from mmdet.datasets import CocoPanopticDataset

from mmfusion.registry import DATASETS

from .cityscapes_labels import STUFF_CLASSES, STUFF_IDS, THING_CLASSES, THING_IDS, id2label


@DATASETS.register_module()
class CityscapesPanopticDataset(CocoPanopticDataset):
    """Cityscapes panoptic segmentation (19 classes: 8 things, 11 stuff) in COCO-panoptic format."""

    METAINFO = dict(
        classes=THING_CLASSES + STUFF_CLASSES,
        thing_classes=THING_CLASSES,
        stuff_classes=STUFF_CLASSES,
        palette=[tuple(id2label[i].color) for i in THING_IDS + STUFF_IDS])

    def parse_data_info(self, raw_data_info: dict) -> dict:
        data_info = super().parse_data_info(raw_data_info)
        if data_info['seg_map_path'] is not None:
            name = osp.basename(raw_data_info['raw_img_info']['file_name'])
            data_info['seg_map_path'] = osp.join(self.data_prefix['seg'], name)
        return data_info
