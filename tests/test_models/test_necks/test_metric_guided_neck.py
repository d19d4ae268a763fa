"""MetricGuidedNeck: F(s) = aligned F_aux(s) at the injection stride(s), F_master(s) elsewhere (SPEC §6)."""
import doctest
import json

import pytest
import torch
from mmengine.registry import MODELS as ROOT_MODELS

import mmfusion.models.necks.metric_guided_neck as neck_module
from mmfusion.models.necks import MetricGuidedNeck

MASTER_C = (4, 6, 8, 10)
STRIDES = (4, 8, 16, 32)


def _master(size=64, batch=1):
    # Each level filled with its own stride so a replaced level is easy to tell apart.
    return tuple(torch.full((batch, c, size // s, size // s), float(s)) for c, s in zip(MASTER_C, STRIDES))


def _profile(tmp_path, selection, ef=(6.60, 8.59, 17.13, 12.47)):
    path = tmp_path / 'profile.json'
    encoders = dict(dinov3=dict(strides=list(STRIDES), SC=[0.73, 0.71, 0.65, 0.53], EF=[1.27, 1.64, 2.33, 5.88]),
                    sam2=dict(strides=list(STRIDES), SC=[0.49, 0.44, 0.11, 0.41], EF=list(ef)))
    path.write_text(json.dumps(dict(encoders=encoders, selection=selection, meta={})))
    return str(path)


def test_replaces_only_the_injected_level():
    neck = MetricGuidedNeck(MASTER_C, aux_channels=(8, ), aux_strides=(16, ), inject_stride=16)
    master, aux = _master(), (torch.randn(1, 8, 4, 4), )
    outs = neck(dict(master=master, auxiliary=aux))
    assert torch.equal(outs[2], aux[0])
    assert all(outs[i] is master[i] for i in (0, 1, 3))
    assert neck.out_channels == MASTER_C


def test_mean_pad_appends_channel_mean_copies():
    neck = MetricGuidedNeck(MASTER_C, aux_channels=(5, ), aux_strides=(16, ))
    aux = torch.tensor([1., 2., 3., 4., 10.]).view(1, 5, 1, 1).expand(1, 5, 4, 4)
    out = neck(dict(master=_master(), auxiliary=(aux, )))[2]
    expected = torch.tensor([1., 2., 3., 4., 10., 4., 4., 4.]).view(1, 8, 1, 1).expand(1, 8, 4, 4)
    assert torch.equal(out, expected)


def test_mean_pad_subsamples_channels_evenly():
    neck = MetricGuidedNeck(MASTER_C, aux_channels=(12, ), aux_strides=(16, ))
    aux = torch.arange(12.).view(1, 12, 1, 1).expand(1, 12, 4, 4)
    out = neck(dict(master=_master(), auxiliary=(aux, )))[2]
    # 12 -> 8 channels: indices floor(i * 12 / 8).
    assert out[0, :, 0, 0].tolist() == [0., 1., 3., 4., 6., 7., 9., 10.]


def test_several_inject_strides():
    neck = MetricGuidedNeck(MASTER_C, aux_channels=(6, 6, 10, 12), inject_stride=[32, 8])
    aux = tuple(torch.randn(1, c, 64 // s, 64 // s) for c, s in zip((6, 6, 10, 12), STRIDES))
    master = _master()
    outs = neck((master, aux))
    assert neck.inject_strides == (8, 32)
    assert torch.equal(outs[1], aux[1])
    assert outs[3].shape == (1, 10, 2, 2) and torch.equal(outs[3], aux[3][:, [0, 1, 2, 3, 4, 6, 7, 8, 9, 10]])
    assert outs[0] is master[0] and outs[2] is master[2]


def test_auto_uses_selection_inject_stride(tmp_path):
    profile = _profile(tmp_path, dict(master='dinov3', auxiliary='sam2', inject_stride=8))
    neck = MetricGuidedNeck(MASTER_C, aux_channels=(6, 8, 10, 12), inject_stride='auto', profile=profile)
    assert neck.inject_strides == (8, )


def test_auto_falls_back_to_auxiliary_ef_peak(tmp_path):
    profile = _profile(tmp_path, dict(master='dinov3', auxiliary='sam2'), ef=(6.6, 8.59, 3.0, 12.47))
    neck = MetricGuidedNeck(MASTER_C, aux_channels=(6, 8, 10, 12), inject_stride='auto', profile=profile)
    assert neck.inject_strides == (32, )


def test_auto_without_auxiliary_in_profile_fails(tmp_path):
    profile = _profile(tmp_path, {})
    with pytest.raises(ValueError, match='selection.auxiliary'):
        MetricGuidedNeck(MASTER_C, aux_channels=(6, 8, 10, 12), inject_stride='auto', profile=profile)


def test_auto_without_profile_fails():
    with pytest.raises(ValueError, match='profile=PATH'):
        MetricGuidedNeck(MASTER_C, aux_channels=(8, ), aux_strides=(16, ), inject_stride='auto')


def test_inject_stride_missing_from_pyramid_fails():
    with pytest.raises(ValueError, match=r'inject_stride 64 is not in strides=\(4, 8, 16, 32\)'):
        MetricGuidedNeck(MASTER_C, aux_channels=(6, 8, 10, 12), inject_stride=64)


def test_inject_stride_missing_from_auxiliary_fails():
    with pytest.raises(ValueError, match='add 8 to aux_strides'):
        MetricGuidedNeck(MASTER_C, aux_channels=(8, ), aux_strides=(16, ), inject_stride=8)


def test_master_channels_disagreeing_with_strides_fails():
    with pytest.raises(ValueError, match='one channel count per stride'):
        MetricGuidedNeck((4, 6, 8), aux_channels=(8, ), aux_strides=(16, ))


def test_aux_channels_disagreeing_with_aux_strides_fails():
    with pytest.raises(ValueError, match='one channel count per auxiliary stride'):
        MetricGuidedNeck(MASTER_C, aux_channels=(6, 8, 10, 12), aux_strides=(16, ))


def test_unordered_strides_fail():
    with pytest.raises(ValueError, match='increasing order'):
        MetricGuidedNeck(MASTER_C, aux_channels=(8, ), strides=(8, 4, 16, 32), aux_strides=(16, ))


def test_unknown_align_fails():
    with pytest.raises(ValueError, match="align='sum'"):
        MetricGuidedNeck(MASTER_C, aux_channels=(8, ), aux_strides=(16, ), align='sum')


def test_spatial_mismatch_fails_at_forward():
    neck = MetricGuidedNeck(MASTER_C, aux_channels=(8, ), aux_strides=(16, ))
    with pytest.raises(ValueError, match=r'ceil\(H/16\)'):
        neck(dict(master=_master(), auxiliary=(torch.randn(1, 8, 5, 4), )))


def test_conv_align_projects_to_master_channels_with_grads():
    neck = MetricGuidedNeck((32, 32, 64, 64), aux_channels=(12, ), aux_strides=(16, ), align='conv')
    master = tuple(torch.randn(2, c, 64 // s, 64 // s) for c, s in zip((32, 32, 64, 64), STRIDES))
    outs = neck(dict(master=master, auxiliary=(torch.randn(2, 12, 4, 4), )))
    assert [tuple(o.shape) for o in outs] == [(2, 32, 16, 16), (2, 32, 8, 8), (2, 64, 4, 4), (2, 64, 2, 2)]
    outs[2].pow(2).sum().backward()
    conv, norm = neck.align_convs['16']
    assert isinstance(norm, torch.nn.GroupNorm)
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_conv_align_group_norm_must_divide_channels():
    with pytest.raises(ValueError, match='pick num_groups dividing 8'):
        MetricGuidedNeck(MASTER_C, aux_channels=(8, ), aux_strides=(16, ), align='conv')


def test_builds_from_root_registry_with_scope_prefix():
    neck = ROOT_MODELS.build(dict(type='mmfusion.MetricGuidedNeck', master_channels=MASTER_C, aux_channels=(8, ),
                                  aux_strides=(16, )))
    assert isinstance(neck, MetricGuidedNeck)


def test_docstring_example_runs():
    assert doctest.testmod(neck_module).failed == 0
