"""mmfusion.DINOv3ViT(init_device='meta'): built without weights, given the checkpoint's tensors by init_weights."""
import os.path as osp
import warnings

import pytest
import torch
from mmengine.config import Config

from mmfusion.models.backbones import DINOv3ViT
from mmfusion.registry import MODELS

from .vfm_utils import TINY_VIT, hf_dinov3, hf_to_meta

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
VIT7B_CONFIG = osp.join(ROOT, 'configs', 'fsdp', 'mask2former_d3s2_vit7b_fsdp_cityscapes.py')
STRIDES = (4, 8, 16, 32)


@pytest.fixture(scope='module')
def meta_pth(tmp_path_factory):
    """Meta's .pth layout of a tiny random DINOv3 (what init_weights reads)."""
    path = tmp_path_factory.mktemp('dinov3_meta_init') / 'dinov3_tiny.pth'
    torch.save(hf_to_meta(hf_dinov3(seed=2)), path)
    return str(path)


def _tiny(init_device, checkpoint=None, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)  # random weights
        return DINOv3ViT(arch=dict(TINY_VIT), out_strides=STRIDES, checkpoint=checkpoint, init_device=init_device,
                         **kwargs)


def _allocated_bytes(module):
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()] if not t.is_meta)


def test_vit7b_config_master_builds_on_meta():
    cfg = Config.fromfile(VIT7B_CONFIG)
    master = MODELS.build(cfg.model.backbone.master)
    vit_params = sum(p.numel() for p in master.vit.parameters())
    assert vit_params == pytest.approx(6.716e9, rel=1e-3)  # DINOv3 ViT-7B/16
    assert all(t.is_meta for t in [*master.vit.parameters(), *master.vit.buffers()])
    assert _allocated_bytes(master.vit) == 0
    # only the pyramid's new 1x1 convs (4096 -> 128/256/512/1024 channels, with bias) are allocated, in float32
    assert _allocated_bytes(master) == (4096 + 1) * (128 + 256 + 512 + 1024) * 4


def test_init_weights_on_meta_equals_loading_on_cpu(meta_pth):
    on_cpu, on_meta = _tiny('cpu', meta_pth), _tiny('meta', meta_pth)
    assert on_meta.on_meta
    on_cpu.init_weights()
    on_meta.init_weights()
    assert not on_meta.on_meta
    for (name, a), b in zip(on_cpu.vit.state_dict().items(), on_meta.vit.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)
    on_meta.pyramid.load_state_dict(on_cpu.pyramid.state_dict())  # new layers: random either way
    x = torch.randn(2, 3, 48, 80)
    for a, b in zip(on_cpu.eval()(x), on_meta.eval()(x)):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


def test_materialize_assigns_the_checkpoint_tensors_without_copy():
    model = _tiny('meta')
    state = {k: torch.randn(v.shape) for k, v in hf_dinov3(seed=3).state_dict().items()}
    model.materialize(state)
    for name, tensor in model.vit.state_dict().items():
        if name in state:
            assert tensor.data_ptr() == state[name].data_ptr(), name


def test_materialize_keeps_the_parameter_objects():
    """MMEngine's init_weights bookkeeping (and any optimizer or wrapper) refers to the parameters themselves."""
    model = _tiny('meta')
    before = [id(p) for p in model.parameters()]
    model.materialize({k: v for k, v in hf_dinov3(seed=3).state_dict().items() if k != 'embeddings.mask_token'})
    assert [id(p) for p in model.parameters()] == before


def test_fused_backbone_init_weights_materialises_a_meta_master(meta_pth):
    """Through MMEngine's BaseModule.init_weights (the Runner's path): the meta master gets the checkpoint."""
    from mmfusion.models.backbones.master_aux import MasterAuxBackbone

    from .vfm_utils import TINY_HIERA
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)  # random auxiliary
        fused = MasterAuxBackbone(
            master=dict(type='mmfusion.DINOv3ViT', arch=dict(TINY_VIT), checkpoint=meta_pth, init_device='meta'),
            auxiliary=dict(type='mmfusion.SAM2Hiera', arch=dict(TINY_HIERA)), inject_stride=16)
    fused.init_weights()
    reference = _tiny('cpu', meta_pth)
    reference.init_weights()
    for (name, a), b in zip(reference.vit.state_dict().items(), fused.master.vit.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)


def test_materialize_casts_to_the_vit_dtype():
    model = _tiny('meta')
    state = {k: v.to(torch.bfloat16) for k, v in hf_dinov3(seed=3).state_dict().items()}
    model.materialize(state)
    assert {p.dtype for p in model.vit.parameters()} == {torch.float32}
    torch.testing.assert_close(model.vit.norm.weight, state['norm.weight'].float(), rtol=0, atol=0)


def test_materialize_initialises_what_the_checkpoint_lacks_as_transformers_does():
    model, reference = _tiny('meta'), hf_dinov3(seed=3)
    state = {k: v for k, v in reference.state_dict().items() if k != 'embeddings.mask_token'}
    model.materialize(state)
    torch.testing.assert_close(model.vit.rope_embeddings.inv_freq, reference.rope_embeddings.inv_freq)
    assert model.vit.embeddings.mask_token.abs().sum() == 0
    # the module that held the missing token keeps the tensors it was given
    torch.testing.assert_close(model.vit.embeddings.cls_token, state['embeddings.cls_token'], rtol=0, atol=0)
    assert not model.vit.embeddings.mask_token.requires_grad  # frozen at build, kept through materialisation


def test_trained_checkpoint_loads_into_a_meta_model(meta_pth):
    """Testing loads the trained state dict without init_weights: the meta ViT takes its tensors."""
    trained = _tiny('cpu', meta_pth)
    trained.init_weights()
    model = _tiny('meta', meta_pth)
    model.load_state_dict(trained.state_dict())
    assert not model.on_meta
    x = torch.randn(1, 3, 32, 64)
    for a, b in zip(trained.eval()(x), model.eval()(x)):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


def test_random_init_on_meta_is_refused():
    model = _tiny('meta')
    with pytest.raises(ValueError, match=r"built with init_device='meta'.*pass checkpoint=PATH, or init_device='cpu'"):
        model.init_weights()


def test_running_before_init_on_meta_is_refused(meta_pth):
    with pytest.raises(RuntimeError, match=r'call init_weights\(\)'):
        _tiny('meta', meta_pth)(torch.randn(1, 3, 32, 32))


def test_unknown_init_device_is_refused():
    with pytest.raises(ValueError, match="init_device must be 'cpu' or 'meta', got 'gpu'"):
        _tiny('gpu')
