"""mmfusion's registries: children of MMEngine's root registries.

Being children of the roots (as mmyolo's are) lets an mmdet- or mmseg-scoped config name our modules with a scope
prefix, ``type='mmfusion.MetricGuidedNeck'``, and lets our configs use mmdet/mmseg modules the same way.
"""
from mmfusion import compat

# Every OpenMMLab part of mmfusion imports this module first, so the fixes are in place before anything builds or
# loads a checkpoint (and ``import mmfusion.metrics`` never pulls mmengine in).
compat.apply()

from mmengine.registry import DATASETS as MMENGINE_DATASETS  # noqa: E402
from mmengine.registry import HOOKS as MMENGINE_HOOKS  # noqa: E402
from mmengine.registry import METRICS as MMENGINE_METRICS  # noqa: E402
from mmengine.registry import MODELS as MMENGINE_MODELS  # noqa: E402
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS  # noqa: E402
from mmengine.registry import Registry  # noqa: E402

# Only the registries mmfusion registers modules in, each pointing at where they live.
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, locations=['mmfusion.engine'])
DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, locations=['mmfusion.datasets'])
MODELS = Registry('model', parent=MMENGINE_MODELS, locations=['mmfusion.models'])
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    'optimizer wrapper constructor', parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS, locations=['mmfusion.engine'])
METRICS = Registry('metric', parent=MMENGINE_METRICS, locations=['mmfusion.evaluation'])
