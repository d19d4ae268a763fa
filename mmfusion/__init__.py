"""mmfusion: metric-guided feature fusion of visual foundation models for OpenMMLab segmentation.

Importing the package imports no OpenMMLab module, so ``mmfusion.metrics`` stands alone. The OpenMMLab parts
(``mmfusion.registry`` and what builds on it: models, engine, evaluation, apis) apply the fixes of
:mod:`mmfusion.compat` when they are first imported; configs import them with
``custom_imports = dict(imports=['mmfusion.models', 'mmfusion.engine'])``.
"""
from .version import __version__

__all__ = ['__version__']
