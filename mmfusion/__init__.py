"""mmfusion: metric-guided feature fusion of visual foundation models for OpenMMLab segmentation."""
from . import compat
from .version import __version__

compat.apply()

__all__ = ['__version__']
