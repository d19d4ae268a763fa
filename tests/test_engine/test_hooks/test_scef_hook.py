"""SCEFHook in a real MMEngine Runner: SC/EF scalars reach the JSON logs, profiles are written, the model is left as
it was found."""
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.runner import Runner
from PIL import Image
from torch.utils.data import Dataset

import mmfusion.engine.hooks.scef_hook as scef_module
from mmfusion.engine.hooks import SCEFHook
from mmfusion.models.backbones import MasterAuxBackbone
from mmfusion.models.necks import MetricGuidedNeck
from tests._stubs import StubPyramid  # noqa: F401  (registers the stand-in backbone)

MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


class _FusionModel(BaseModel):
    """Master + frozen auxiliary + neck + a 1x1 conv 'head'."""

    def __init__(self):
        super().__init__(data_preprocessor=dict(type='ImgDataPreprocessor', mean=MEAN, std=STD, bgr_to_rgb=True))
        self.backbone = MasterAuxBackbone(dict(type='StubPyramid', channels=(4, 8, 16, 32)),
                                          dict(type='StubPyramid', channels=(3, 6, 12, 24)), aux_strides=(16, ))
        self.neck = MetricGuidedNeck(self.backbone.master_channels, self.backbone.aux_channels, aux_strides=(16, ))
        self.head = nn.Conv2d(4, 1, 1)

    def forward(self, inputs, data_samples=None, mode='loss'):
        feats = self.neck(self.backbone(inputs))
        out = self.head(feats[0])
        return dict(loss=out.pow(2).mean() + sum(f.mean() for f in feats[1:])) if mode == 'loss' else [out]


class _Scenes(Dataset):
    """Uint8 (3, 64, 96) images with a bright square: edges for EF to find."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        img = torch.randint(0, 60, (3, 64, 96), dtype=torch.uint8, generator=g)
        img[:, 16 + 4 * i:40 + 4 * i, 24:64] += 150
        return dict(inputs=img)


def _runner(work_dir, hook):
    return Runner(
        model=_FusionModel(),
        work_dir=str(work_dir),
        train_dataloader=dict(dataset=_Scenes(), batch_size=2, sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='pseudo_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=1e-3)),
        train_cfg=dict(by_epoch=False, max_iters=3),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1), checkpoint=None),
        custom_hooks=[hook],
        randomness=dict(seed=0))


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('scef_run')
    runner = _runner(work_dir, dict(type='mmfusion.SCEFHook', interval=2, num_probes=2, probe_size=(64, 128)))
    runner.train()
    return runner, work_dir


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_scalars_reach_vis_data_scalars_json(trained):
    runner, _ = trained
    records = [r for r in _records(Path(runner.log_dir) / 'vis_data' / 'scalars.json') if 'scef/master/SC_os16' in r]
    assert [r['step'] for r in records] == [0, 2]
    for key in ('scef/master/EF_os4', 'scef/auxiliary/SC_os16', 'scef/auxiliary/EF_os16', 'scef/fused/SC_os32',
                'scef/seconds'):
        assert all(np.isfinite(r[key]) for r in records), key


def test_scalars_reach_the_timestamped_json_log(trained):
    runner, _ = trained
    records = _records(Path(runner.log_dir) / 'vis_data' / f'{runner.timestamp}.json')
    assert [r['step'] for r in records if 'scef/fused/EF_os16' in r] == [0, 2]


def test_fused_levels_outside_inject_stride_score_as_the_master(trained):
    runner, _ = trained
    hub = runner.message_hub
    for key in ('SC_os4', 'EF_os8', 'SC_os32'):
        assert hub.get_scalar(f'scef/fused/{key}').current() == pytest.approx(hub.get_scalar(f'scef/master/{key}')
                                                                                .current())


def test_profile_json_written_per_probe(trained):
    _, work_dir = trained
    names = sorted(p.name for p in (work_dir / 'scef').glob('*.json'))
    assert names == ['iter_0.json', 'iter_2.json']
    data = json.loads((work_dir / 'scef' / 'iter_2.json').read_text())
    assert data['encoders']['master']['strides'] == [4, 8, 16, 32]
    assert data['encoders']['auxiliary']['strides'] == [16]
    assert data['selection']['inject_stride'] == 16
    assert data['meta']['iter'] == 2 and data['meta']['num_probes'] == 2


def test_probe_runs_in_eval_no_grad_and_restores_modes(trained):
    runner, _ = trained
    model = runner.model
    model.train()
    seen = []
    handle = model.backbone.master.register_forward_pre_hook(
        lambda m, args: seen.append((m.training, torch.is_grad_enabled())))
    try:
        next(h for h in runner.hooks if isinstance(h, SCEFHook)).probe(runner, step=99)
    finally:
        handle.remove()
    assert seen and all(s == (False, False) for s in seen)
    assert model.training and model.backbone.master.stages[0].training
    assert not model.backbone.auxiliary.training


def test_probe_only_on_main_process(trained, monkeypatch, tmp_path):
    runner, _ = trained
    monkeypatch.setattr(scef_module, 'is_main_process', lambda: False)
    hook = SCEFHook(num_probes=1, probe_size=(64, 128))
    assert hook.probe(runner, step=5) is None
    assert hook._probes is None


def test_dataset_probes_are_converted_to_rgb():
    hook = SCEFHook(num_probes=1, probe_size=(8, 8))
    bgr = torch.zeros(3, 16, 16, dtype=torch.uint8)
    bgr[0] = 255  # blue in BGR
    runner = SimpleNamespace(train_dataloader=SimpleNamespace(dataset=[dict(inputs=bgr)]))
    probes = hook._get_probes(runner, _FusionModel())
    assert probes.shape == (1, 3, 8, 8) and probes[0, 2].min() == 255 and probes[0, :2].max() == 0


def test_folder_probes_are_sorted_rgb_and_cropped(tmp_path):
    red = np.zeros((40, 60, 3), np.uint8)
    red[..., 0] = 255
    Image.fromarray(red).save(tmp_path / 'b.png')
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / 'a.png')
    probes = SCEFHook(probe_images=str(tmp_path), num_probes=1, probe_size=(16, 32))._get_probes(None, None)
    assert probes.shape == (1, 3, 16, 32) and probes.max() == 0  # a.png first


def test_normalisation_follows_the_data_preprocessor():
    x = torch.full((1, 3, 2, 2), 200, dtype=torch.uint8)
    out = SCEFHook._normalise(x, _FusionModel())
    expected = (200 - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.allclose(out[0, :, 0, 0], expected)
