"""MetricGuidedNeck: F(s) = aligned F_aux(s) at the injection stride(s), F_master(s) elsewhere (SPEC §6), with the
strides read from the fused backbone's output."""
import doctest

import pytest
import torch
from mmengine.registry import MODELS as ROOT_MODELS

import mmfusion.models.necks.metric_guided_neck as neck_module
from mmfusion.models.backbones import MasterAuxOutputs
from mmfusion.models.necks import MetricGuidedNeck

STRIDES = (4, 8, 16, 32)


def _master(skip=(), size=64):
    return tuple(None if s in skip else torch.full((1, 4, size // s, size // s), float(s)) for s in STRIDES)


def test_replaces_only_the_injected_level():
    master, aux = _master(skip=(16, )), torch.randn(1, 4, 4, 4)
    outs = MetricGuidedNeck()(MasterAuxOutputs(master, (aux, ), (aux, ), STRIDES, (16, )))
    assert outs[2] is aux
    assert all(outs[i] is master[i] for i in (0, 1, 3))


def test_several_inject_strides():
    master = _master(skip=(8, 32))
    inj = (torch.randn(1, 4, 8, 8), torch.randn(1, 4, 2, 2))
    outs = MetricGuidedNeck()(MasterAuxOutputs(master, inj, inj, STRIDES, (8, 32)))
    assert outs[1] is inj[0] and outs[3] is inj[1]
    assert outs[0] is master[0] and outs[2] is master[2]


def test_a_level_neither_computed_nor_injected_fails():
    with pytest.raises(ValueError, match=r'no map at strides \[8\]'):
        MetricGuidedNeck()(MasterAuxOutputs(_master(skip=(8, 16)), (), (torch.rand(1, 4, 4, 4), ), STRIDES, (16, )))


def test_rejects_inputs_that_are_not_the_fused_backbone_output():
    with pytest.raises(TypeError, match='MasterAuxBackbone'):
        MetricGuidedNeck()(_master())


def test_has_no_parameters_and_builds_from_root_registry():
    neck = ROOT_MODELS.build(dict(type='mmfusion.MetricGuidedNeck'))
    assert isinstance(neck, MetricGuidedNeck) and not list(neck.parameters())


def test_docstring_example_runs():
    result = doctest.testmod(neck_module, raise_on_error=False)
    assert result.attempted > 0 and result.failed == 0
