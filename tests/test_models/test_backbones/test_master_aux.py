"""MasterAuxBackbone: one key per decision (inject_stride, freeze_master/freeze_auxiliary, align), the auxiliary
truncated at s*, the master skipping the replaced levels, channels read from the encoders."""
import json

import pytest
import torch
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import MODELS as ROOT_MODELS

from mmfusion.models.backbones import MasterAuxBackbone, MasterAuxOutputs
from mmfusion.models.backbones.int8_linear import FrozenInt8Linear
from mmfusion.models.backbones.master_aux import mean_pad_channels
from mmfusion.models.necks import MetricGuidedNeck
from tests._stubs import StubPyramid  # noqa: F401  (registers the stand-in backbone)
from tests.test_models.test_backbones.vfm_utils import TINY_HIERA, TINY_HIERA_CHANNELS, TINY_VIT

MASTER = dict(type='StubPyramid', channels=(4, 8, 16, 32))
AUX = dict(type='StubPyramid', channels=(3, 6, 12, 24))
DINO = dict(type='DINOv3ViT', arch=TINY_VIT, pyramid=dict(type='paper', channels=(8, 16, 32, 64)))
SAM2 = dict(type='SAM2Hiera', arch=TINY_HIERA)


def _fused(**kwargs):
    return torch.nn.Sequential(MasterAuxBackbone(MASTER, AUX, **kwargs), MetricGuidedNeck())


# --- the injection stride, in one key ----------------------------------------------------------------------------

def test_auxiliary_returns_and_runs_only_up_to_the_injected_stride():
    backbone = MasterAuxBackbone(MASTER, AUX, inject_stride=16)
    out = backbone(torch.rand(2, 3, 64, 96))
    assert isinstance(out, MasterAuxOutputs)
    assert backbone.auxiliary.out_strides == (16, ) and backbone.aux_channels == (12, )
    assert backbone.auxiliary.stages_run == 2  # OS8 and OS16 stages; OS32 is never computed
    assert [tuple(a.shape) for a in out.auxiliary] == [(2, 12, 4, 6)]
    assert (out.strides, out.inject_strides) == ((4, 8, 16, 32), (16, ))


def test_master_level_at_the_injected_stride_is_not_returned():
    out = MasterAuxBackbone(MASTER, AUX, inject_stride=8)(torch.rand(1, 3, 64, 64))
    assert out.master[1] is None
    assert [tuple(m.shape) for i, m in enumerate(out.master) if i != 1] == [(1, 4, 16, 16), (1, 16, 4, 4),
                                                                            (1, 32, 2, 2)]


@pytest.mark.parametrize('stride', [4, 8, 16, 32])
def test_inject_stride_alone_moves_the_replaced_level(stride):
    model = _fused(inject_stride=stride)
    x = torch.rand(1, 3, 64, 64)
    outs = model.eval()(x)
    backbone = model[0]
    aux = backbone.auxiliary(x)[-1]
    i = (4, 8, 16, 32).index(stride)
    assert torch.equal(outs[i], mean_pad_channels(aux, backbone.out_channels[i]))
    master = backbone.master(x)
    assert all(torch.equal(outs[j], master[j]) for j in range(4) if j != i)
    assert [o.shape[1] for o in outs] == [4, 8, 16, 32]


def test_several_inject_strides_run_the_auxiliary_to_the_deepest():
    backbone = MasterAuxBackbone(MASTER, AUX, inject_stride=[16, 4])
    out = backbone(torch.rand(1, 3, 64, 64))
    assert backbone.inject_strides == (4, 16) and backbone.auxiliary.out_strides == (4, 16)
    assert out.master[0] is None and out.master[2] is None and backbone.auxiliary.stages_run == 2


def test_auto_inject_stride_from_profile(tmp_path):
    path = tmp_path / 'profile.json'
    path.write_text(json.dumps(dict(encoders=dict(sam2=dict(strides=[4, 8, 16, 32], EF=[6.6, 8.59, 17.13, 12.47])),
                                    selection=dict(master='dinov3', auxiliary='sam2'), meta={})))
    backbone = MasterAuxBackbone(MASTER, AUX, inject_stride='auto', profile=str(path))
    assert backbone.inject_strides == (16, ) and backbone.auxiliary.out_strides == (16, )


def test_conflicting_auxiliary_out_strides_fail():
    with pytest.raises(ValueError, match='set only model.backbone.inject_stride'):
        MasterAuxBackbone(MASTER, dict(AUX, out_strides=(8, )), inject_stride=16)


def test_stride_the_master_lacks_fails():
    with pytest.raises(ValueError, match='not a stride of the master'):
        MasterAuxBackbone(dict(MASTER, out_strides=(4, 8, 32)), AUX, inject_stride=16)


def test_profile_without_auto_fails():
    with pytest.raises(ValueError, match="only read with inject_stride='auto'"):
        MasterAuxBackbone(MASTER, AUX, inject_stride=16, profile='p.json')


# --- alignment -----------------------------------------------------------------------------------------------------

def test_mean_pad_appends_channel_mean_copies():
    aux = torch.tensor([1., 2., 3., 4., 10.]).view(1, 5, 1, 1)
    assert mean_pad_channels(aux, 8).flatten().tolist() == [1., 2., 3., 4., 10., 4., 4., 4.]


def test_mean_pad_subsamples_channels_evenly():
    # 12 -> 8 channels: indices floor(i * 12 / 8).
    assert mean_pad_channels(torch.arange(12.).view(1, 12, 1, 1), 8).flatten().tolist() == [0, 1, 3, 4, 6, 7, 9, 10]


def test_conv_align_learns_and_reaches_the_master_channels():
    backbone = MasterAuxBackbone(MASTER, AUX, inject_stride=16, align='conv', align_norm_cfg=dict(type='GN',
                                                                                                 num_groups=4))
    out = backbone(torch.rand(2, 3, 64, 64))
    assert out.injected[0].shape == (2, 16, 4, 4)
    out.injected[0].sum().backward()
    assert backbone.align_convs['16'][0].weight.grad.abs().sum() > 0


# --- freezing --------------------------------------------------------------------------------------------------------

def test_frozen_auxiliary_gets_no_grad_stays_in_eval_and_keeps_its_statistics():
    model = _fused(inject_stride=16)
    backbone = model[0]
    model.train()
    assert backbone.master.stages[0][1].training and not any(m.training for m in backbone.auxiliary.modules())
    stats = backbone.auxiliary.stages[0][1].running_mean.clone()
    sum(o.sum() for o in model(torch.rand(2, 3, 64, 64))).backward()
    assert all(p.grad is None and not p.requires_grad for p in backbone.auxiliary.parameters())
    assert backbone.master.stem[0].weight.grad is not None
    assert torch.equal(backbone.auxiliary.stages[0][1].running_mean, stats)


def test_freeze_auxiliary_false_trains_the_auxiliary():
    model = _fused(inject_stride=16, freeze_auxiliary=False)
    model.train()
    backbone = model[0]
    assert backbone.auxiliary.training
    sum(o.sum() for o in model(torch.rand(2, 3, 64, 64))).backward()
    assert backbone.auxiliary.stem[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize('freeze', [True, False])
def test_encoder_frozen_equal_to_the_switch_is_accepted(freeze):
    backbone = MasterAuxBackbone(dict(DINO, frozen=False), dict(SAM2, frozen=freeze), inject_stride=16,
                                 freeze_auxiliary=freeze)
    assert backbone.auxiliary.frozen is freeze
    assert all(p.requires_grad is not freeze for p in backbone.auxiliary.parameters())


@pytest.mark.parametrize('role, switch', [('auxiliary', 'freeze_auxiliary'), ('master', 'freeze_master')])
@pytest.mark.parametrize('own', [True, False])
def test_encoder_frozen_contradicting_the_switch_is_refused(role, switch, own):
    """The fused backbone owns freezing: an encoder's own frozen= that disagrees names the key to set instead."""
    cfgs = dict(master=dict(DINO), auxiliary=dict(SAM2))
    cfgs[role]['frozen'] = own
    with pytest.raises(ValueError, match=rf'{role}\.frozen={own} disagrees with the fused backbone\'s {switch}.*'
                                         rf'set only model\.backbone\.{switch}'):
        MasterAuxBackbone(cfgs['master'], cfgs['auxiliary'], inject_stride=16, **{switch: not own})


def test_freeze_master_freezes_the_vit_and_trains_its_new_pyramid():
    backbone = MasterAuxBackbone(DINO, SAM2, inject_stride=16, freeze_master=True)
    master = backbone.master
    assert not any(p.requires_grad for p in master.vit.parameters())
    assert all(p.requires_grad for p in master.pyramid.parameters())
    backbone.train()
    assert not master.vit.training and master.pyramid.training
    out = backbone(torch.rand(1, 3, 32, 64))
    sum(m.sum() for m in out.master if m is not None).backward()
    assert all(p.grad is None for p in master.vit.parameters())
    assert master.pyramid.convs[0].weight.grad.abs().sum() > 0


def test_frozen_auxiliary_with_random_layers_is_refused():
    with pytest.raises(ValueError, match='random projection'):
        MasterAuxBackbone(SAM2, dict(DINO, pyramid='paper'), inject_stride=16)  # a projecting pyramid, frozen


def test_reverse_pair_injects_dinov3_features_aligned_to_sam2():
    aux = dict(DINO, pyramid=dict(type='paper', project=False))
    backbone = MasterAuxBackbone(SAM2, aux, inject_stride=16).eval()
    assert not list(backbone.auxiliary.new_parameters())
    x = torch.rand(1, 3, 64, 64)
    out = backbone(x)
    (raw, ) = backbone.auxiliary(x)
    assert raw.shape[1] == TINY_VIT['hidden_size']
    assert torch.equal(out.injected[0], mean_pad_channels(raw, TINY_HIERA_CHANNELS[2]))


# --- no unused parameters --------------------------------------------------------------------------------------------

@pytest.mark.parametrize('stride', [4, 16, 32])
def test_every_trainable_parameter_gets_a_gradient(stride):
    backbone = MasterAuxBackbone(DINO, SAM2, inject_stride=stride)
    neck = MetricGuidedNeck()
    backbone.train()
    sum(o.mean() for o in neck(backbone(torch.rand(1, 3, 64, 64)))).backward()
    unused = [n for n, p in backbone.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused
    i = (4, 8, 16, 32).index(stride)
    assert not list(backbone.master.pyramid.convs[i].parameters())  # no parameters for the replaced level


def test_sam2_auxiliary_never_builds_stages_past_the_injected_stride():
    backbone = MasterAuxBackbone(DINO, SAM2, inject_stride=16)
    assert len(backbone.auxiliary.trunk.blocks) == sum(TINY_HIERA['stages'][:3])


# --- optimizer membership ---------------------------------------------------------------------------------------------

def test_mmengine_constructor_with_paramwise_cfg_excludes_frozen_auxiliary():
    model = _fused(inject_stride=16)
    constructor = DefaultOptimWrapperConstructor(dict(optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05)),
                                                 paramwise_cfg=dict(norm_decay_mult=0.0))
    in_optimizer = {id(p) for g in constructor(model).optimizer.param_groups for p in g['params']}
    assert not in_optimizer & {id(p) for p in model[0].auxiliary.parameters()}
    assert {id(p) for p in model[0].master.parameters()} <= in_optimizer


def test_builds_from_root_registry_with_scope_prefix():
    cfg = dict(type='mmfusion.MasterAuxBackbone', master=dict(MASTER, type='mmfusion.StubPyramid'),
               auxiliary=dict(AUX, type='mmfusion.StubPyramid'), inject_stride=16)
    assert isinstance(ROOT_MODELS.build(cfg), MasterAuxBackbone)


def test_building_reads_no_checkpoint(tmp_path):
    missing = str(tmp_path / 'absent.pth')
    backbone = MasterAuxBackbone(dict(DINO, checkpoint=missing), dict(SAM2, checkpoint=missing), inject_stride=16)
    assert backbone.master.checkpoint == missing
    with pytest.raises(FileNotFoundError, match='absent.pth'):
        backbone.init_weights()


# --- several auxiliaries (beyond the paper) ----------------------------------------------------------------------

def test_two_auxiliaries_each_at_its_own_stride():
    aux2 = dict(type='StubPyramid', channels=(5, 10, 20, 40))
    model = torch.nn.Sequential(MasterAuxBackbone(MASTER, [AUX, aux2], inject_stride=[16, 8]), MetricGuidedNeck())
    backbone = model[0]
    assert backbone.aux_groups == ((16, ), (8, )) and backbone.inject_strides == (8, 16)
    assert backbone.auxiliary[0].out_strides == (16, ) and backbone.auxiliary[1].out_strides == (8, )
    assert backbone.aux_channels == (10, 12)
    x = torch.rand(1, 3, 64, 64)
    outs = model.eval()(x)
    assert backbone.auxiliary[1].stages_run == 1  # the OS8 auxiliary stops after OS8
    assert torch.equal(outs[1], mean_pad_channels(backbone.auxiliary[1](x)[0], 8))
    assert torch.equal(outs[2], mean_pad_channels(backbone.auxiliary[0](x)[0], 16))
    assert torch.equal(outs[0], backbone.master(x)[0])


def test_several_auxiliaries_are_all_frozen_or_all_trained():
    aux2 = dict(type='StubPyramid', channels=(5, 10, 20, 40))
    frozen = MasterAuxBackbone(MASTER, [AUX, aux2], inject_stride=[16, 8])
    assert not any(p.requires_grad for p in frozen.auxiliary.parameters())
    trained = MasterAuxBackbone(MASTER, [AUX, aux2], inject_stride=[16, 8], freeze_auxiliary=False)
    trained.train()
    sum(o.sum() for o in MetricGuidedNeck()(trained(torch.rand(2, 3, 64, 64)))).backward()
    assert all(a.stem[0].weight.grad.abs().sum() > 0 for a in trained.auxiliary)


def test_several_auxiliaries_need_one_stride_entry_each_and_distinct_strides():
    with pytest.raises(ValueError, match='one stride'):
        MasterAuxBackbone(MASTER, [AUX, AUX], inject_stride=16)
    with pytest.raises(ValueError, match='distinct'):
        MasterAuxBackbone(MASTER, [AUX, AUX], inject_stride=[16, [8, 16]])


def test_fused_mask2former_loss_with_two_real_auxiliaries():
    from mmdet.registry import MODELS as DET_MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    from tests._fusion_cfg import shrink_fusion_model
    from tests._m2f import det_inputs
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile('configs/ablations/mask2former_d3s2_multiaux_cityscapes.py')
    shrink_fusion_model(cfg.model)
    model = DET_MODELS.build(cfg.model)
    model.data_preprocessor.batch_augments = None
    losses = model(**model.data_preprocessor(det_inputs(2, (64, 128), num_classes=8), True), mode='loss')
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    assert model.backbone.inject_strides == (8, 16)
    assert all(p.grad is None for p in model.backbone.auxiliary.parameters())
    assert model.backbone.master.pyramid.convs[0].weight.grad.abs().sum() > 0


# --- cheaper auxiliary ---------------------------------------------------------------------------------------------

def test_aux_dtype_keeps_the_frozen_auxiliary_in_half_precision():
    fp32 = MasterAuxBackbone(DINO, SAM2, inject_stride=16).eval()
    half = MasterAuxBackbone(DINO, SAM2, inject_stride=16, aux_dtype='bfloat16').eval()
    half.load_state_dict(fp32.state_dict())
    assert all(p.dtype == torch.bfloat16 for p in half.auxiliary.parameters())
    aux_bytes = sum(p.numel() * p.element_size() for p in half.auxiliary.parameters())
    assert aux_bytes * 2 == sum(p.numel() * p.element_size() for p in fp32.auxiliary.parameters())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a, b = fp32(x).injected[0], half(x).injected[0]
    assert b.dtype == torch.float32
    torch.testing.assert_close(b, a, rtol=0.05, atol=0.05 * a.abs().max().item())


def test_aux_compute_dtype_keeps_half_weights_but_computes_in_float32():
    ref = MasterAuxBackbone(DINO, SAM2, inject_stride=16).eval()
    for p in ref.auxiliary.parameters():  # what the half-precision weights hold, in float32
        p.data = p.data.bfloat16().float()
    mixed = MasterAuxBackbone(DINO, SAM2, inject_stride=16, aux_dtype='bfloat16', aux_compute_dtype='float32').eval()
    half = MasterAuxBackbone(DINO, SAM2, inject_stride=16, aux_dtype='bfloat16').eval()
    mixed.load_state_dict(ref.state_dict())
    half.load_state_dict(ref.state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        want, got, bf16 = ref(x).injected[0], mixed(x).injected[0], half(x).injected[0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)  # float32 arithmetic on the rounded weights
    assert (bf16 - want).abs().max() > 100 * (got - want).abs().max()  # bf16 arithmetic differs
    # the float32 copies were temporary: parameters and checkpoint entries stay bfloat16
    assert all(p.dtype == torch.bfloat16 for p in mixed.auxiliary.parameters())
    assert {v.dtype for k, v in mixed.state_dict().items() if k.startswith('auxiliary.')} == {torch.bfloat16}


def test_aux_dtype_qint8_stores_the_auxiliary_linears_in_int8():
    ref = MasterAuxBackbone(DINO, SAM2, inject_stride=16).eval()
    int8 = MasterAuxBackbone(DINO, SAM2, inject_stride=16, aux_dtype='qint8').eval()
    int8.load_state_dict(ref.state_dict())
    linears = sum(type(m) is torch.nn.Linear for m in ref.auxiliary.modules())
    assert sum(isinstance(m, FrozenInt8Linear) for m in int8.auxiliary.modules()) == linears > 0
    assert not any(type(m) is torch.nn.Linear for m in int8.auxiliary.modules())
    linear_numel = sum(m.weight.numel() for m in ref.auxiliary.modules() if type(m) is torch.nn.Linear)
    float_numel = sum(p.numel() for p in ref.auxiliary.parameters())
    assert sum(p.numel() for p in int8.auxiliary.parameters()) < float_numel - linear_numel  # no float copy left
    assert all(p.dtype == torch.float32 for p in int8.auxiliary.parameters())  # the other layers stay float32
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        want, got = ref(x).injected[0], int8(x).injected[0]
    assert got.dtype == torch.float32 and 1e-5 < ((got - want).norm() / want.norm()).item() < 0.1
    # the master is untouched and still trains
    assert all(type(m) is not FrozenInt8Linear for m in int8.master.modules())
    int8.train()
    sum(o.sum() for o in int8(x).master if o is not None).backward()
    assert any(p.grad is not None for p in int8.master.parameters())


def test_aux_dtype_qint8_checkpoints_keep_float_weights_that_round_trip():
    ref = MasterAuxBackbone(DINO, SAM2, inject_stride=16).eval()
    int8 = MasterAuxBackbone(DINO, SAM2, inject_stride=16, aux_dtype='qint8').eval()
    int8.load_state_dict(ref.state_dict())
    state = int8.state_dict()
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert all(v.dtype == ref.state_dict()[k].dtype for k, v in state.items())
    x = torch.rand(1, 3, 64, 64)
    again = MasterAuxBackbone(DINO, SAM2, inject_stride=16, aux_dtype='qint8').eval()
    again.load_state_dict(state)  # int8 -> float checkpoint -> int8: the same integers
    plain = MasterAuxBackbone(DINO, SAM2, inject_stride=16).eval()
    plain.load_state_dict(state)  # and a float model takes it as it is
    with torch.no_grad():
        assert torch.equal(again(x).injected[0], int8(x).injected[0])
        assert not torch.equal(plain(x).injected[0], ref(x).injected[0])  # the dequantised weights, not the originals


DTYPE_ERRORS = {
    'half weights of a trained auxiliary': (dict(freeze_auxiliary=False, aux_dtype='bfloat16'),
                                            "aux_dtype='bfloat16' is for a frozen auxiliary.*freeze_auxiliary=True"),
    'int8 weights of a trained auxiliary': (dict(freeze_auxiliary=False, aux_dtype='qint8'),
                                            "aux_dtype='qint8' is for a frozen auxiliary.*freeze_auxiliary=True"),
    'unknown aux_dtype': (dict(aux_dtype='double'), "aux_dtype='double': use 'bfloat16', 'float16', 'qint8'"),
    'compute dtype without storage dtype': (dict(aux_compute_dtype='float32'), 'needs aux_dtype'),
    'unknown compute dtype': (dict(aux_dtype='bfloat16', aux_compute_dtype='double'), "aux_compute_dtype='double'"),
    'int8 as compute dtype': (dict(aux_compute_dtype='qint8'), "set aux_dtype='qint8'"),
    'compute dtype with int8 weights': (dict(aux_dtype='qint8', aux_compute_dtype='float32'), 'drop aux_compute_dtype'),
    'int8 without Linear layers': (dict(aux_dtype='qint8'), 'has no nn.Linear layer; drop aux_dtype'),  # the stub
}


@pytest.mark.parametrize('case', DTYPE_ERRORS)
def test_aux_dtype_options_are_refused_with_the_fix(case):
    kwargs, match = DTYPE_ERRORS[case]
    with pytest.raises(ValueError, match=match):
        MasterAuxBackbone(MASTER, AUX, inject_stride=16, **kwargs)


def test_aux_compute_dtype_refuses_an_fsdp_sharded_auxiliary(tmp_path):
    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel
    backbone = MasterAuxBackbone(MASTER, AUX, inject_stride=16, aux_dtype='bfloat16', aux_compute_dtype='float32')
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/pg', rank=0, world_size=1)
    try:
        backbone.auxiliary = FullyShardedDataParallel(backbone.auxiliary, device_id=torch.device('cpu'))
        with pytest.raises(RuntimeError, match="mixed_precision instead"):
            backbone(torch.rand(1, 3, 64, 64))
    finally:
        dist.destroy_process_group()
