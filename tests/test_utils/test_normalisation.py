"""One image normalisation (mmfusion.utils.normalisation): the data preprocessor's mean/std is the one place, every
encoder states the input it expects, and each consumer follows the preprocessor or refuses a mismatch in one line:
building a model to train/test or infer, HFBackbone's renormalisation, the profiler (which picks s*)."""
import json
import os.path as osp
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.model import BaseModel
from PIL import Image

import mmfusion.registry  # noqa: F401  (compat fixes and registries, before anything builds)
from mmfusion.models.backbones import DINOv3ViT, HFBackbone, SAM2Hiera
from mmfusion.registry import MODELS
from mmfusion.utils.errors import UserError
from mmfusion.utils.images import IMAGENET_MEAN, IMAGENET_STD
from mmfusion.utils.normalisation import (
    IDENTITY,
    check_input_normalisation,
    check_runner_normalisation,
    encoder_normalisations,
    preprocessor_normalisation,
)
from tests._stubs import StubPyramid
from tests._tools import load_tool
from tests.test_models.test_backbones.hf_utils import tiny_hf_config
from tests.test_models.test_backbones.vfm_utils import TINY_HIERA, TINY_VIT

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FLAGSHIP = osp.join(ROOT, 'configs', 'mask2former_d3s2_cityscapes.py')
HALF = [127.5, 127.5, 127.5]  # a preprocessor mapping 0-255 to [-1, 1]
IMAGENET_TEXT = 'mean=[123.675, 116.28, 103.53] std=[58.395, 57.12, 57.375]'
HALF_TEXT = 'mean=[127.5, 127.5, 127.5] std=[127.5, 127.5, 127.5]'
HALF_OPTIONS = {'model.data_preprocessor.mean': HALF, 'model.data_preprocessor.std': HALF}


class _Model(BaseModel):
    """Encoders under arbitrary attribute names: the check finds them by their input_mean/input_std."""

    def __init__(self, preprocessor, **encoders):
        super().__init__(data_preprocessor=preprocessor)
        for name, encoder in encoders.items():
            setattr(self, name, encoder)

    def forward(self, *args, **kwargs):
        raise NotImplementedError


def _pre(mean=HALF, std=HALF):
    return dict(type='ImgDataPreprocessor', mean=mean, std=std, bgr_to_rgb=True)


def _quiet(build, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)  # random weights
        return build(**kwargs)


def test_preprocessor_normalisation_is_what_it_applies():
    assert preprocessor_normalisation(_Model(_pre())) == ((127.5, ) * 3, (127.5, ) * 3)
    assert preprocessor_normalisation(_Model(_pre(None, None))) == IDENTITY  # mean=None: no normalisation
    assert preprocessor_normalisation(_Model(None)) == IDENTITY  # MMEngine's BaseDataPreprocessor
    assert preprocessor_normalisation(torch.nn.Conv2d(3, 3, 1)) is None


def test_dinov3_and_sam2_refuse_another_preprocessor_in_one_line():
    master = _quiet(DINOv3ViT, arch=dict(TINY_VIT))
    aux = _quiet(SAM2Hiera, arch=dict(TINY_HIERA), out_strides=(16, ))
    model = _Model(_pre(), trunk=master, edges=aux)
    assert [(name, norm) for name, _, norm in encoder_normalisations(model)] == [
        ('model.trunk', (IMAGENET_MEAN, IMAGENET_STD)), ('model.edges', (IMAGENET_MEAN, IMAGENET_STD))]
    with pytest.raises(UserError) as info:
        check_input_normalisation(model)
    assert str(info.value) == (
        f'model.data_preprocessor normalises images with {HALF_TEXT}, but model.trunk (DINOv3ViT) expects '
        f'{IMAGENET_TEXT}, the input it was pretrained on; set model.data_preprocessor.mean=[123.675, 116.28, '
        '103.53] std=[58.395, 57.12, 57.375] (1 more encoder(s) disagree too)')
    check_input_normalisation(_Model(_pre(list(IMAGENET_MEAN), list(IMAGENET_STD)), trunk=master, edges=aux))


def test_runner_without_a_built_model_is_checked_before_the_run():
    """FlexibleRunner (FSDP) builds its model in train(): the check runs at before_run."""
    hooks = []
    runner = SimpleNamespace(model=dict(type='SomeModel'), register_hook=hooks.append)
    check_runner_normalisation(runner)
    assert len(hooks) == 1
    runner.model = _Model(_pre(), master=_quiet(DINOv3ViT, arch=dict(TINY_VIT)))
    with pytest.raises(UserError, match=r'^model.data_preprocessor normalises images with mean=\[127.5'):
        hooks[0].before_run(runner)


# --- HFBackbone ------------------------------------------------------------------------------------------------


def _hf(**kwargs):
    return _quiet(HFBackbone, config=tiny_hf_config('dinov3_vit'), pyramid=dict(type='paper', project=False),
                  out_strides=(8, ), **kwargs).eval()


def test_hfbackbone_renormalises_from_input_mean_std_to_its_own():
    mean, std = (0.3, 0.4, 0.5), (0.2, 0.25, 0.3)
    model = _hf(image_mean=mean, image_std=std, input_mean=HALF, input_std=HALF)
    # x = (p - 127.5) / 127.5 and the encoder wants (p / 255 - m) / s = x * 0.5 / s + (0.5 - m) / s
    torch.testing.assert_close(model.input_scale.flatten(), torch.tensor([2.5, 2.0, 5 / 3]))
    torch.testing.assert_close(model.input_shift.flatten(), torch.tensor([1.0, 0.4, 0.0]))
    # End to end: the same weights fed (p / 255 - m) / s by hand (input normalisation = its own: no renormalising).
    plain = _hf(image_mean=mean, image_std=std, input_mean=[255 * v for v in mean], input_std=[255 * v for v in std])
    plain.load_state_dict(model.state_dict())
    assert not plain._renormalise and model._renormalise
    pixels = torch.rand(2, 3, 32, 48) * 255
    assert all(v % model.pad_multiple == 0 for v in pixels.shape[-2:])  # no padding: the maps compare exactly
    by_hand = (pixels / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model((pixels - 127.5) / 127.5)[0], plain(by_hand)[0], rtol=1e-4, atol=1e-4)


def test_hfbackbone_input_normalisation_is_checked_against_the_preprocessor():
    with pytest.raises(UserError) as info:
        check_input_normalisation(_Model(_pre(), hf=_hf()))
    assert str(info.value) == (
        f'model.data_preprocessor normalises images with {HALF_TEXT}, but model.hf (HFBackbone) expects '
        f'{IMAGENET_TEXT}, the input it was pretrained on; set model.data_preprocessor.mean=[123.675, 116.28, '
        "103.53] std=[58.395, 57.12, 57.375], or model.hf.input_mean/input_std to the preprocessor's (it "
        'renormalises to its own)')
    check_input_normalisation(_Model(_pre(), hf=_hf(input_mean=HALF, input_std=HALF)))
    with pytest.raises(ValueError, match='set both input_mean and input_std'):
        _hf(input_mean=HALF)


# --- train / test / infer ----------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def tiny_cfg(tmp_path_factory):
    """The flagship (DINOv3 master, SAM2 auxiliary) shrunk, on 2 generated Cityscapes scenes."""
    from mmfusion.datasets.synthetic_cityscapes import generate_synthetic_cityscapes
    from tests.test_tools.test_train_test_tools import tiny_flagship
    out = tmp_path_factory.mktemp('norm')
    generate_synthetic_cityscapes(str(out / 'cs'), num_train=2, num_val=1, height=64, width=128, seed=0,
                                  panoptic=False)
    path = tiny_flagship(str(out / 'cs'), str(out / 'tiny.py'))
    cfg = Config.fromfile(path)
    cfg.optim_wrapper.type = 'OptimWrapper'  # float32: the recipe's AMP needs a GPU
    cfg.dump(path)
    return path


def test_train_refuses_a_preprocessor_the_encoders_were_not_pretrained_on(tiny_cfg, tmp_path, capsys):
    from tools.train import main
    with pytest.raises(SystemExit) as info:
        main([tiny_cfg, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
              *(f'{k}=[127.5,127.5,127.5]' for k in HALF_OPTIONS)])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f'error: model.data_preprocessor normalises images with {HALF_TEXT}, but model.backbone.master (DINOv3ViT) '
        f'expects {IMAGENET_TEXT}, the input it was pretrained on; set model.data_preprocessor.mean=[123.675, '
        '116.28, 103.53] std=[58.395, 57.12, 57.375] (1 more encoder(s) disagree too)')


def test_inferencer_refuses_a_preprocessor_the_encoders_were_not_pretrained_on(tiny_cfg):
    from mmfusion.apis.inference import FusionInferencer
    with pytest.raises(UserError, match=r'but model\.backbone\.master \(DINOv3ViT\) expects mean=\[123\.675'):
        FusionInferencer(tiny_cfg, cfg_options=dict(HALF_OPTIONS))


def test_shipped_flagship_preprocessor_gives_the_encoders_their_input():
    cfg = Config.fromfile(FLAGSHIP)
    pre = cfg.model.data_preprocessor
    assert (tuple(pre.mean), tuple(pre.std), pre.bgr_to_rgb) == (IMAGENET_MEAN, IMAGENET_STD, True)


# --- the profiler -----------------------------------------------------------------------------------------------


@MODELS.register_module(name='InputRecorder', force=True)
class InputRecorder(StubPyramid):
    """A stand-in encoder that keeps the inputs it was given (it states no expected normalisation)."""

    inputs = []

    def forward(self, x):
        InputRecorder.inputs.append(x.clone())
        return super().forward(x)


@pytest.fixture(scope='module')
def profiler():
    return load_tool('analysis/profile_vfm.py')


@pytest.fixture(scope='module')
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp('images')
    rng = np.random.default_rng(0)
    img = rng.integers(0, 40, (48, 128, 3), dtype=np.uint8)
    img[10:30, 30:90] += 180
    Image.fromarray(img).save(folder / 'a.png')
    return str(folder)


def _profile(profiler, image_dir, out, *extra):
    InputRecorder.inputs.clear()
    return profiler.main(['--images', image_dir, '--size', '48', '128', '--device', 'cpu', '--threads', '1',
                          '--num-vis', '0', '--out-dir', str(out), '--encoder', 'r=InputRecorder', '--cfg-options',
                          'r.out_strides=[4,8]', *extra])


def _base_config(path, mean=HALF, std=HALF):
    path.write_text(f"model = dict(type='Fused', data_preprocessor=dict(type='DetDataPreprocessor', mean={mean}, "
                    f'std={std}, bgr_to_rgb=True))\n')
    return str(path)


def test_profiler_normalises_with_the_base_configs_preprocessor(profiler, image_dir, tmp_path, capsys):
    from mmfusion.apis.profiling import load_image
    from mmfusion.metrics import ProfileAccumulator
    base = _base_config(tmp_path / 'base.py')
    result = _profile(profiler, image_dir, tmp_path / 'half', '--base-config', base)
    image = load_image(osp.join(image_dir, 'a.png'), (48, 128))[None]
    by_hand = (image.float() - 127.5) / 127.5
    assert len(InputRecorder.inputs) == 1 and torch.equal(InputRecorder.inputs[0], by_hand)
    # the profile is that of the features of the hand-normalised image (the tool seeds the encoder with --seed 0)
    torch.manual_seed(0)
    encoder = StubPyramid(out_strides=(4, 8)).eval()
    acc = ProfileAccumulator((4, 8))
    with torch.no_grad():
        acc.update(list(encoder(by_hand)), image)
    for stride, metrics in acc.compute().items():
        for key in ('SC', 'EF'):
            assert result['profiles']['r'][stride][key] == pytest.approx(metrics[key], rel=1e-5), (stride, key)
    with open(tmp_path / 'half' / 'profile.json') as f:
        meta = json.load(f)['meta']
    assert meta['normalisation'] == dict(mean=HALF, std=HALF, source=f'model.data_preprocessor of {base}')
    assert f'images normalised with {HALF_TEXT}: model.data_preprocessor of {base}' in capsys.readouterr().out

    _profile(profiler, image_dir, tmp_path / 'imagenet')  # no --base-config: ImageNet's
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(InputRecorder.inputs[0], (image.float() - mean) / std)
    with open(tmp_path / 'imagenet' / 'profile.json') as f:
        assert json.load(f)['meta']['normalisation']['source'].startswith("ImageNet's (no --base-config")


def test_profiler_refuses_an_encoder_that_expects_another_normalisation(profiler, image_dir, tmp_path, capsys):
    base = _base_config(tmp_path / 'base.py')
    encoder = tmp_path / 'dinov3_tiny.py'
    encoder.write_text(f"backbone = dict(type='mmfusion.DINOv3ViT', arch={dict(TINY_VIT)!r}, "
                       "pyramid=dict(type='paper', project=False), out_strides=(8, 16))\n")
    argv = ['--images', image_dir, '--size', '48', '128', '--device', 'cpu', '--num-vis', '0', '--out-dir',
            str(tmp_path / 'o'), '--encoder', f'd={encoder}', '--base-config', base]
    with pytest.raises(SystemExit) as info:
        profiler.main(argv)
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f'profile_vfm.py: error: the profile normalises images with {HALF_TEXT}, model.data_preprocessor of {base}, '
        f'but encoder d (DINOv3ViT) expects {IMAGENET_TEXT}, the input it was pretrained on; profile it with a '
        '--base-config whose model.data_preprocessor normalises so')


def test_metric_validity_refuses_an_encoder_that_expects_another_normalisation():
    """metric_validity.py has no model config: it feeds ImageNet-normalised images, so an encoder set up for another
    preprocessor (here an HFBackbone told the preprocessor maps to [-1, 1]) is refused, not scored on wrong input."""
    from mmfusion.apis import validity
    from mmfusion.apis.profiling import ProfileError, tool_error
    hf = dict(type='mmfusion.HFBackbone', config=tiny_hf_config('dinov3_vit'), input_mean=HALF, input_std=HALF,
              pyramid=dict(type='paper', project=False), out_strides=(8, ))
    with pytest.raises(ProfileError) as info, warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)  # random weights
        validity.build_encoders(dict(h=hf))
    assert tool_error(info.value) == (
        f"the profile normalises images with {IMAGENET_TEXT}, ImageNet's, as every shipped config, but encoder h "
        f'(HFBackbone) expects {HALF_TEXT}, the input it was pretrained on; metric_validity.py feeds '
        'ImageNet-normalised images: validate an encoder that expects them, or set --cfg-options '
        'h.input_mean=[123.675,116.28,103.53] h.input_std=[58.395,57.12,57.375] (it renormalises to its own)')
