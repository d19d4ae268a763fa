"""mmfusion's registries: children of MMEngine's root registries.

Being children of the roots (as mmyolo's are) lets an mmdet- or mmseg-scoped config name our modules with a scope
prefix, ``type='mmfusion.MetricGuidedNeck'``, and lets our configs use mmdet/mmseg modules the same way.
"""
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import EVALUATOR as MMENGINE_EVALUATOR
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import RUNNERS as MMENGINE_RUNNERS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import VISBACKENDS as MMENGINE_VISBACKENDS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import Registry

RUNNERS = Registry('runner', parent=MMENGINE_RUNNERS, locations=['mmfusion.engine'])
LOOPS = Registry('loop', parent=MMENGINE_LOOPS, locations=['mmfusion.engine'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, locations=['mmfusion.engine'])
DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, locations=['mmfusion.datasets'])
DATA_SAMPLERS = Registry('data sampler', parent=MMENGINE_DATA_SAMPLERS, locations=['mmfusion.datasets'])
TRANSFORMS = Registry('transform', parent=MMENGINE_TRANSFORMS, locations=['mmfusion.datasets'])
MODELS = Registry('model', parent=MMENGINE_MODELS, locations=['mmfusion.models'])
MODEL_WRAPPERS = Registry('model_wrapper', parent=MMENGINE_MODEL_WRAPPERS, locations=['mmfusion.models'])
OPTIMIZERS = Registry('optimizer', parent=MMENGINE_OPTIMIZERS, locations=['mmfusion.engine'])
OPTIM_WRAPPERS = Registry('optim_wrapper', parent=MMENGINE_OPTIM_WRAPPERS, locations=['mmfusion.engine'])
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    'optimizer wrapper constructor', parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS, locations=['mmfusion.engine'])
PARAM_SCHEDULERS = Registry('parameter scheduler', parent=MMENGINE_PARAM_SCHEDULERS, locations=['mmfusion.engine'])
METRICS = Registry('metric', parent=MMENGINE_METRICS, locations=['mmfusion.evaluation'])
EVALUATOR = Registry('evaluator', parent=MMENGINE_EVALUATOR, locations=['mmfusion.evaluation'])
VISUALIZERS = Registry('visualizer', parent=MMENGINE_VISUALIZERS, locations=['mmfusion.visualization'])
VISBACKENDS = Registry('vis_backend', parent=MMENGINE_VISBACKENDS, locations=['mmfusion.visualization'])
