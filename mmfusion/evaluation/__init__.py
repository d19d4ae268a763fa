"""Boundary-quality evaluation: Boundary IoU (functional), BoundaryIoUMetric (mmseg), BoundaryAPMetric (mmdet).

Imported by the registries (``locations=['mmfusion.evaluation']``), so ``type='mmfusion.BoundaryIoUMetric'``
builds from any scope.
"""
from .functional import *  # noqa: F401,F403
from .metrics import *  # noqa: F401,F403
