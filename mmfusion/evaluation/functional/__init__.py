"""Functional forms of the evaluation quantities (plain numpy/PyTorch)."""
from .boundary import boundary_iou, dilation_pixels, label_boundary, mask_to_boundary

__all__ = ['boundary_iou', 'dilation_pixels', 'label_boundary', 'mask_to_boundary']
