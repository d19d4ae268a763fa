"""Every constructor argument of mmfusion's registered components, and the modes in which it would do nothing.

Lesson of the project: a key that does nothing in the chosen mode is refused, never silently ignored. This file is
the record: each argument is either used in every mode (None below) or names the mode where it would be inert, and
each such mode has a case that must be refused with an error naming the argument. A new argument fails
``test_every_argument_is_recorded`` until it is recorded here. Datasets and MMEngine functions keep mmdet's / MMEngine's
own arguments and are left out; ``SafeCheckpointHook`` takes MMEngine's ``CheckpointHook`` arguments unchanged.
"""
from __future__ import annotations

import inspect
import re
import warnings

import pytest
import torch.nn as nn

import mmfusion.registry as registry
from mmfusion.engine.optimizers import FusionOptimWrapperConstructor
from tests.test_models.test_backbones.hf_utils import tiny_hf_config
from tests.test_models.test_backbones.vfm_utils import TINY_HIERA, TINY_VIT

DINO = dict(type='mmfusion.DINOv3ViT', arch=dict(TINY_VIT))
SAM2 = dict(type='mmfusion.SAM2Hiera', arch=dict(TINY_HIERA))

# None: used in every mode. A string: the mode in which the argument would do nothing (refused, see INERT).
ARGUMENTS = {
    'DINOv3ViT': dict(arch=None, pyramid=None, out_strides=None, skip_strides=None, checkpoint=None, frozen=None,
                      with_cp='frozen=True (the trunk runs under no_grad)', init_device=None,
                      init_cfg=None),  # init_cfg: only Pretrained, any other initialiser refused (base_vfm)
    'SAM2Hiera': dict(arch=None, out_strides=None, skip_strides=None, checkpoint=None, frozen=None, output=None,
                      neck_cfg="output='trunk'", with_cp='frozen=True (the trunk runs under no_grad)', init_cfg=None),
    'HFBackbone': dict(checkpoint=None, config=None, out_strides=None, skip_strides=None,
                       pyramid='a hierarchical encoder (its own stages)', stage_norms='a plain ViT (no stages)',
                       image_mean=None, image_std=None, input_mean=None, input_std=None, frozen=None,
                       with_cp='frozen=True (the trunk runs under no_grad)', init_cfg=None),
    'MasterAuxBackbone': dict(master=None, auxiliary=None, inject_stride=None,
                              profile="inject_stride other than 'auto'",
                              freeze_master=None, freeze_auxiliary=None, align=None,
                              align_norm_cfg="align='mean_pad' (parameter-free)",
                              aux_dtype='freeze_auxiliary=False', aux_compute_dtype='no half-precision aux_dtype',
                              init_cfg=None),
    'MetricGuidedNeck': dict(init_cfg='always: the neck has no parameters'),
    'FusionOptimWrapperConstructor': dict(optim_wrapper_cfg=None, paramwise_cfg=None),
    'SCEFHook': dict(interval=None, probe_images=None, num_probes=None, probe_size=None, before_train=None,
                     strides=None, preset=None, batch_size=None, log_keys=None),
    'RNGStateHook': dict(),
    'BoundaryIoUMetric': dict(ignore_index=None, dilation_ratio=None, collect_device=None, prefix=None),
    'BoundaryAPMetric': dict(ann_file=None, dilation_ratio=None, classwise=None, proposal_nums=None, iou_thrs=None,
                             outfile_prefix=None, backend_args=None, collect_device=None, prefix=None,
                             sort_categories=None),
}
# FusionOptimWrapperConstructor's own paramwise_cfg keys (MMEngine's are MMEngine's).
PARAMWISE_KEYS = dict(layer_decay_rate=None, layer_decay_prefixes='layer_decay_rate 1 (no decay to restrict)',
                      no_decay_keys=None)


def _components():
    import mmfusion.engine  # noqa: F401  (registers the hooks and the constructor)
    import mmfusion.evaluation  # noqa: F401
    import mmfusion.models  # noqa: F401
    found = {}
    for reg in (registry.MODELS, registry.HOOKS, registry.METRICS, registry.OPTIM_WRAPPER_CONSTRUCTORS):
        # Only the package's own (tests register stubs into the same registries).
        found.update({name: cls for name, cls in reg.module_dict.items()
                      if inspect.isclass(cls) and cls.__module__.startswith('mmfusion.')})
    found.pop('SafeCheckpointHook')  # MMEngine's CheckpointHook arguments
    return found


def test_every_argument_is_recorded():
    components = _components()
    assert set(components) == set(ARGUMENTS)
    for name, cls in components.items():
        params = [p for p, v in inspect.signature(cls.__init__).parameters.items()
                  if p != 'self' and v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)]
        assert set(params) == set(ARGUMENTS[name]), name


def _build(cfg):
    from mmfusion.registry import MODELS
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)  # random weights
        return MODELS.build(cfg)


def _hf(model_type, **kwargs):
    return dict(type='mmfusion.HFBackbone', config=tiny_hf_config(model_type), **kwargs)


def _constructor(paramwise_cfg):
    return FusionOptimWrapperConstructor(dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4)),
                                         paramwise_cfg)


# (component, argument, call that sets the argument in its inert mode, the words the error must contain)
INERT = [
    ('DINOv3ViT', 'with_cp', lambda: _build(dict(DINO, frozen=True, with_cp=True)), 'with_cp=True'),
    ('SAM2Hiera', 'with_cp', lambda: _build(dict(SAM2, frozen=True, with_cp=True)), 'with_cp=True'),
    ('SAM2Hiera', 'neck_cfg', lambda: _build(dict(SAM2, output='trunk', neck_cfg=dict(d_model=32))), 'neck_cfg'),
    ('HFBackbone', 'with_cp', lambda: _build(_hf('dinov2', frozen=True, with_cp=True)), 'with_cp=True'),
    ('HFBackbone', 'pyramid', lambda: _build(_hf('swin', pyramid='paper')), 'pyramid='),
    ('HFBackbone', 'stage_norms', lambda: _build(_hf('dinov2', stage_norms=True)), 'stage_norms'),
    ('MasterAuxBackbone', 'profile',
     lambda: _build(dict(type='mmfusion.MasterAuxBackbone', master=DINO, auxiliary=SAM2, inject_stride=16,
                         profile='p.json')), 'profile='),
    ('MasterAuxBackbone', 'align_norm_cfg',
     lambda: _build(dict(type='mmfusion.MasterAuxBackbone', master=DINO, auxiliary=SAM2, inject_stride=16,
                         align='mean_pad', align_norm_cfg=dict(type='BN'))), 'align_norm_cfg'),
    ('MasterAuxBackbone', 'aux_dtype',
     lambda: _build(dict(type='mmfusion.MasterAuxBackbone', master=DINO, auxiliary=SAM2, inject_stride=16,
                         freeze_auxiliary=False, aux_dtype='bfloat16')), 'aux_dtype'),
    ('MasterAuxBackbone', 'aux_compute_dtype',
     lambda: _build(dict(type='mmfusion.MasterAuxBackbone', master=DINO, auxiliary=SAM2, inject_stride=16,
                         aux_compute_dtype='float32')), 'aux_compute_dtype'),
    ('MetricGuidedNeck', 'init_cfg',
     lambda: _build(dict(type='mmfusion.MetricGuidedNeck', init_cfg=dict(type='Xavier', layer='Conv2d'))),
     'init_cfg'),
    ('FusionOptimWrapperConstructor', 'paramwise_cfg.layer_decay_prefixes',
     lambda: _constructor(dict(layer_decay_prefixes=['backbone.master'])), 'layer_decay_prefixes'),
]


def test_every_inert_mode_has_a_refusal_case():
    recorded = {(c, a) for c, args in ARGUMENTS.items() for a, mode in args.items() if mode}
    recorded |= {('FusionOptimWrapperConstructor', f'paramwise_cfg.{k}') for k, mode in PARAMWISE_KEYS.items() if mode}
    assert recorded == {(c, a) for c, a, _, _ in INERT}


@pytest.mark.parametrize('component, argument, call, words', INERT, ids=[f'{c}.{a}' for c, a, _, _ in INERT])
def test_inert_argument_is_refused(component, argument, call, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        call()


def test_the_modes_refused_are_real_modes():
    """The same arguments where they act are accepted: the refusals above are about the mode, not the value."""
    assert _build(dict(DINO, frozen=False, with_cp=True)).frozen is False
    assert _build(dict(type='mmfusion.MasterAuxBackbone', master=DINO, auxiliary=SAM2, inject_stride=16,
                       align='conv', align_norm_cfg=dict(type='BN'))).align_convs['16'][1].__class__ is nn.BatchNorm2d
    assert _constructor(dict(layer_decay_rate=0.8, layer_decay_prefixes=['backbone.master'])).layer_decay_prefixes \
        == ('backbone.master', )


@pytest.mark.parametrize('kwargs, words', [(dict(log_keys=('SC', 'XX')), "log_keys ['XX'] are not profile metrics"),
                                           (dict(preset='fast'), "preset='fast' is not an EF preset")])
def test_scef_hook_values_that_would_log_nothing_are_refused(kwargs, words):
    from mmfusion.engine.hooks import SCEFHook
    with pytest.raises(ValueError, match=re.escape(words)):
        SCEFHook(**kwargs)
    assert SCEFHook(log_keys=('SC', 'EF', 'EC'), preset='selection').log_keys == ('SC', 'EF', 'EC')
