"""Evaluation metrics registered in ``mmfusion.registry.METRICS`` (``type='mmfusion.<Name>'`` in configs)."""
from .boundary_ap_metric import BoundaryAPMetric, BoundaryCOCOeval
from .boundary_iou_metric import BoundaryIoUMetric

__all__ = ['BoundaryAPMetric', 'BoundaryCOCOeval', 'BoundaryIoUMetric']
