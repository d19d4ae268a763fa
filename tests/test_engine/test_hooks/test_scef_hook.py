"""SCEFHook in a real MMEngine Runner: SC/EF scalars reach the JSON logs, profiles are written, the model and the
random generators are left as they were found; the probes are the same fixed images in every run (a resumed one
too), and under DDP only rank 0 probes."""
import itertools
import json
import os
import os.path as osp
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.runner import Runner
from PIL import Image
from torch.utils.data import Dataset

import mmfusion.engine.hooks.scef_hook as scef_module
from mmfusion.engine.hooks import SCEFHook
from mmfusion.engine.hooks.rng_state_hook import get_rng_state, set_rng_state
from mmfusion.engine.hooks.scef_hook import _fit
from mmfusion.models.backbones import MasterAuxBackbone
from mmfusion.models.necks import MetricGuidedNeck
from mmfusion.utils.images import read_rgb
from tests._stubs import StubPyramid
from tests._tools import free_port

from ._scef_models import MEAN, STD, FusionModel, Scenes, scene

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
# MMEngine keys its visualizer and logger instances by experiment name (by default the start second): runners
# started in the same second by earlier tests must not lend theirs to these.
_RUN_IDS = itertools.count()


def _runner(work_dir, hook, max_iters=3, checkpoint=None, **kwargs):
    return Runner(
        model=FusionModel(),
        work_dir=str(work_dir),
        train_dataloader=dict(dataset=Scenes(augment=True), batch_size=2,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='pseudo_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=1e-3)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1), checkpoint=checkpoint),
        custom_hooks=[hook],
        randomness=dict(seed=0),
        experiment_name=f'scef_{osp.basename(str(work_dir))}_{next(_RUN_IDS)}',
        **kwargs)


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
    records = [r for r in _records(Path(runner.log_dir) / 'vis_data' / 'scalars.json') if 'scef/master/SC_os8' in r]
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
    # The master leaves OS16 to the auxiliary (its map there is None): only the maps that exist are profiled.
    assert data['encoders']['master']['strides'] == [4, 8, 32]
    assert data['encoders']['auxiliary']['strides'] == [16]
    assert data['encoders']['fused']['strides'] == [4, 8, 16, 32]
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
    probes = hook._get_probes(runner, FusionModel())
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
    out = SCEFHook._normalise(x, FusionModel())
    expected = (200 - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.allclose(out[0, :, 0, 0], expected)


# --- fixed probes --------------------------------------------------------------------------------------------------


class _SceneFiles(Dataset):
    """The scenes as PNG files with MMEngine-style data infos; its pipeline (``__getitem__``) must not be used."""

    def __init__(self, folder):
        self.paths = []
        for i in range(4):
            path = osp.join(folder, f'scene{i}.png')
            Image.fromarray(scene(i).permute(1, 2, 0).numpy()).save(path)
            self.paths.append(path)

    def __len__(self):
        return len(self.paths)

    def get_data_info(self, i):
        return dict(img_path=self.paths[i])

    def __getitem__(self, i):
        raise AssertionError('the probes must not go through the pipeline')


def test_probes_are_the_same_for_two_hooks_despite_random_augmentation():
    dataset = Scenes(augment=True)
    assert not torch.equal(dataset[0]['inputs'], dataset[0]['inputs'])  # the pipeline is random
    runner = SimpleNamespace(train_dataloader=SimpleNamespace(dataset=dataset))
    first = SCEFHook(num_probes=2, probe_size=(32, 48))._get_probes(runner, FusionModel())
    torch.rand(5), np.random.rand(5)  # whatever the training run drew in between
    second = SCEFHook(num_probes=2, probe_size=(32, 48))._get_probes(runner, FusionModel())
    assert first.shape == (2, 3, 32, 48) and torch.equal(first, second)


def test_probes_are_the_validation_images_read_from_disk(tmp_path):
    val = _SceneFiles(str(tmp_path))
    runner = SimpleNamespace(val_loop=SimpleNamespace(dataloader=SimpleNamespace(dataset=val)),
                             train_dataloader=SimpleNamespace(dataset=Scenes(augment=True)))
    hook = SCEFHook(num_probes=2, probe_size=(32, 48))
    probes = hook._get_probes(runner, FusionModel())
    expected = torch.stack([_fit(read_rgb(p), (32, 48)) for p in val.paths[:2]])
    assert torch.equal(probes, expected) and hook._source == 'val_dataloader.dataset image files'


def test_probe_leaves_the_global_generators_as_found(trained, tmp_path, monkeypatch):
    runner, _ = trained
    monkeypatch.setattr(runner, '_work_dir', str(tmp_path))  # keep the fixture's scef/ folder as it is
    state = get_rng_state()
    expected = torch.rand(4), np.random.rand(4)
    set_rng_state(state)
    SCEFHook(num_probes=2, probe_size=(64, 128)).probe(runner, step=7)  # takes its probes from the random pipeline
    assert torch.equal(torch.rand(4), expected[0]) and np.array_equal(np.random.rand(4), expected[1])


def test_resumed_run_skips_the_baseline_and_probes_the_same_images(tmp_path):
    hook_cfg = dict(type='mmfusion.SCEFHook', interval=2, num_probes=2, probe_size=(64, 128))
    ckpt = dict(type='CheckpointHook', interval=2, by_epoch=False)
    first = _runner(tmp_path, hook_cfg, max_iters=2, checkpoint=ckpt)
    first.train()
    baseline = tmp_path / 'scef' / 'iter_0.json'
    written = baseline.stat().st_mtime_ns
    first_probes = next(h for h in first.hooks if isinstance(h, SCEFHook))._probes

    resumed = _runner(tmp_path, hook_cfg, max_iters=4, checkpoint=ckpt, resume=True)
    resumed.train()
    assert resumed.iter == 4
    assert baseline.stat().st_mtime_ns == written
    assert sorted(p.name for p in (tmp_path / 'scef').glob('*.json')) == ['iter_0.json', 'iter_2.json',
                                                                         'iter_4.json']
    assert torch.equal(next(h for h in resumed.hooks if isinstance(h, SCEFHook))._probes, first_probes)


@pytest.mark.slow
def test_two_process_run_probes_and_writes_on_rank_0_only(tmp_path):
    work = tmp_path / 'ddp'
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    res = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', str(free_port()),
         osp.join(osp.dirname(osp.abspath(__file__)), 'ddp_scef_run.py'), str(work)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    ranks = [json.loads((work / f'rank{r}.json').read_text()) for r in (0, 1)]
    assert ranks == [dict(iter=2, world_size=2, probed=True), dict(iter=2, world_size=2, probed=False)]
    assert sorted(p.name for p in (work / 'scef').glob('*.json')) == ['iter_0.json', 'iter_1.json', 'iter_2.json']
    # RNGStateHook gathered both ranks' generator states into the checkpoint rank 0 wrote.
    assert torch.load(work / 'iter_2.pth', map_location='cpu')['rng_states']['world_size'] == 2


def test_several_auxiliaries_profile_only_the_maps_that_exist():
    model = torch.nn.Module()
    model.backbone = MasterAuxBackbone(
        dict(type='StubPyramid'), [dict(type='StubPyramid', channels=(3, 6, 12, 24)),
                                   dict(type='StubPyramid', channels=(5, 6, 12, 24))], inject_stride=[16, 8])
    model.neck = MetricGuidedNeck()
    pyramids = SCEFHook()._pyramids(model, torch.rand(1, 3, 64, 128))
    assert {name: strides for name, (_, strides) in pyramids.items()} == dict(
        master=(4, 32), auxiliary=(8, 16), fused=(4, 8, 16, 32))
    assert [tuple(f.shape[1:]) for f in pyramids['auxiliary'][0]] == [(6, 8, 16), (12, 4, 8)]


# --- normalisation and strides ---------------------------------------------------------------------------------


def _probe_input(model, images):
    """What the master receives from a probe of ``images``."""
    seen = []
    handle = model.backbone.master.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    try:
        SCEFHook(batch_size=len(images), strides=(4, ))._profile(model.eval(), images)  # one stride: quick
    finally:
        handle.remove()
    return seen[0]


def test_probes_are_normalised_with_the_preprocessors_values():
    """A preprocessor with other values than ImageNet's (here 0-255 to [-1, 1]) is followed, not ImageNet's."""
    from mmengine.model import ImgDataPreprocessor
    model = FusionModel()
    model.data_preprocessor = ImgDataPreprocessor(mean=[127.5] * 3, std=[127.5] * 3, bgr_to_rgb=True)
    images = torch.stack([scene(0), scene(1)])
    torch.testing.assert_close(_probe_input(model, images), (images.float() - 127.5) / 127.5)


def test_probes_are_raw_pixels_when_the_preprocessor_does_not_normalise():
    from mmengine.model import BaseDataPreprocessor, ImgDataPreprocessor
    images = torch.stack([scene(2)])
    for pre in (ImgDataPreprocessor(), BaseDataPreprocessor()):  # mean=None; no normalisation at all
        model = FusionModel()
        model.data_preprocessor = pre
        assert torch.equal(_probe_input(model, images), images.float()), type(pre).__name__


def test_plain_backbone_strides_come_from_its_out_strides():
    model = torch.nn.Module()
    model.backbone = StubPyramid(out_strides=(4, 8, 16))
    pyramids = SCEFHook()._pyramids(model, torch.rand(1, 3, 64, 128))
    assert list(pyramids) == ['backbone'] and pyramids['backbone'][1] == (4, 8, 16)
    assert [tuple(f.shape[-2:]) for f in pyramids['backbone'][0]] == [(16, 32), (8, 16), (4, 8)]


def test_plain_backbone_without_out_strides_is_refused():
    """The strides are never guessed from the number of maps."""
    class FourMaps(torch.nn.Module):
        def forward(self, x):
            return tuple(x[..., ::s, ::s] for s in (4, 8, 16, 32))

    model = torch.nn.Module()
    model.backbone = FourMaps()
    with pytest.raises(RuntimeError) as info:
        SCEFHook()._pyramids(model, torch.rand(1, 3, 64, 128))
    assert str(info.value) == ('SCEFHook: FourMaps returns 4 maps but has no out_strides attribute to say their '
                               'strides; set out_strides on the backbone (one stride per map, increasing)')
