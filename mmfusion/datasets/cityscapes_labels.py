"""The Cityscapes label table, in the forms mmfusion's datasets and converters need.

The table itself is ``cityscapesscripts.helpers.labels`` (the official one, also used by mmdet's and mmseg's
converters and by mmdet's ``CityScapesMetric``); this module only derives from it:

- the 8 *thing* classes (``hasInstances`` and not ``ignoreInEval``), by label id: person 24, rider 25, car 26,
  truck 27, bus 28, train 31, motorcycle 32, bicycle 33;
- the 11 *stuff* classes (neither), the 19 evaluated classes in trainId order (mmseg's ``CityscapesDataset``);
- lookup tables label id -> trainId / colour and trainId -> label id as numpy arrays (unknown ids -> 255 / black /
  0 = unlabeled);
- the COCO category lists written by the converters.

Imports numpy and cityscapesscripts only, so the standalone generator can use it.
"""
import numpy as np
from cityscapesscripts.helpers.labels import id2label, labels, name2label

__all__ = [
    'labels', 'name2label', 'id2label', 'THING_IDS', 'THING_CLASSES', 'STUFF_IDS', 'STUFF_CLASSES',
    'TRAIN_CLASSES', 'TRAIN_PALETTE', 'ID_TO_TRAINID', 'TRAINID_TO_ID', 'ID_TO_COLOR', 'coco_instance_categories',
    'coco_panoptic_categories', 'thing_id_lut'
]

# Label ids lie in [-1, 33]; the LUTs cover every uint8 value so that any label png can be indexed safely.
_EVAL = [lab for lab in labels if lab.id >= 0 and not lab.ignoreInEval]

THING_IDS = tuple(lab.id for lab in _EVAL if lab.hasInstances)
THING_CLASSES = tuple(id2label[i].name for i in THING_IDS)
STUFF_IDS = tuple(lab.id for lab in _EVAL if not lab.hasInstances)
STUFF_CLASSES = tuple(id2label[i].name for i in STUFF_IDS)

_by_train_id = sorted(_EVAL, key=lambda lab: lab.trainId)
TRAIN_CLASSES = tuple(lab.name for lab in _by_train_id)
TRAIN_PALETTE = tuple(tuple(lab.color) for lab in _by_train_id)

ID_TO_TRAINID = np.full(256, 255, dtype=np.uint8)
ID_TO_COLOR = np.zeros((256, 3), dtype=np.uint8)
for _lab in labels:
    if _lab.id >= 0:
        ID_TO_TRAINID[_lab.id] = _lab.trainId if 0 <= _lab.trainId < 255 else 255
        ID_TO_COLOR[_lab.id] = _lab.color
TRAINID_TO_ID = np.zeros(256, dtype=np.uint8)  # trainId -> label id; 255 and unused values -> 0 (unlabeled)
for _lab in _EVAL:
    TRAINID_TO_ID[_lab.trainId] = _lab.id


def thing_id_lut(thing_ids=THING_IDS) -> np.ndarray:
    """Boolean table over label ids 0..255: True for the given thing ids."""
    lut = np.zeros(256, dtype=bool)
    lut[list(thing_ids)] = True
    return lut


def coco_instance_categories() -> list:
    """COCO ``categories`` of an instance json: the 8 thing classes with their Cityscapes label ids.

    The same list as mmdet's ``tools/dataset_converters/cityscapes.py`` writes, so mmdet's ``CityscapesDataset``
    (which selects categories by name) reads every json mmfusion writes.
    """
    return [dict(id=i, name=id2label[i].name) for i in THING_IDS]


def coco_panoptic_categories() -> list:
    """COCO-panoptic ``categories``: the 19 evaluated classes, things first, then stuff.

    Ids are Cityscapes label ids (as cityscapesscripts' ``createPanopticImgs`` writes). Things come first because
    mmdet's ``CocoDataset`` numbers classes in the order of this list, and Mask2Former's panoptic head expects labels
    ``[0, num_things)`` to be the thing classes.
    """
    return [
        dict(id=i, name=id2label[i].name, color=list(id2label[i].color), supercategory=id2label[i].category,
             isthing=int(id2label[i].hasInstances)) for i in THING_IDS + STUFF_IDS
    ]
