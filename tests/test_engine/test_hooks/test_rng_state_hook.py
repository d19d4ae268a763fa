"""Exact resume: a run killed by SIGKILL right after a checkpoint and resumed ends bit-identical to an uninterrupted
one with the same seed (weights, optimizer and scheduler states), with RNGStateHook; without it, it does not.

The interrupted run fixes no seed, as the shipped configs (MMEngine draws one per process): the resumed process
builds its dataloader with another seed, and the hook must give the data the interrupted run's seeds back."""
import os
import os.path as osp
import random
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mmfusion.engine.hooks import RNGStateHook
from mmfusion.engine.hooks.rng_state_hook import CHECKPOINT_KEY, get_rng_state, preserved_rng_state, set_rng_state
from tests._tiny_runner import noisy_runner
from tests._tools import sigkill_when_held

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
SCRIPT = 'tests.test_engine.test_hooks.resume_run'
# 6 samples, batch 2: an epoch is 3 iterations, so the resumed run replays across an epoch end (sampler reshuffle).
MAX_ITERS, KILL_AT = 6, 4


def _run(work_dir, *args, hold_at=None):
    """Start the training script; one thread so that every run sums in the same order."""
    cmd = [sys.executable, '-m', SCRIPT, '--work-dir', str(work_dir), '--max-iters', str(MAX_ITERS), *args]
    if hold_at is not None:
        cmd += ['--hold-at', str(hold_at)]
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONPATH=ROOT)
    os.makedirs(work_dir, exist_ok=True)
    log = open(osp.join(work_dir, f'stdout_{len(os.listdir(work_dir))}.txt'), 'w')
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log


def _finish(proc, log, work_dir):
    rc = proc.wait(timeout=300)
    log.close()
    assert rc == 0, open(log.name).read()[-3000:]
    return torch.load(osp.join(work_dir, f'iter_{MAX_ITERS}.pth'), map_location='cpu')


def _run_until_killed(work_dir, *args):
    """Run until the checkpoint of KILL_AT is on disk and SIGKILL the process there."""
    sigkill_when_held(*_run(work_dir, *args, hold_at=KILL_AT), work_dir, timeout=300)
    assert osp.isfile(osp.join(work_dir, f'iter_{KILL_AT}.pth'))
    assert not osp.exists(osp.join(work_dir, f'iter_{MAX_ITERS}.pth'))


def _killed_and_resumed(work_dir, *args):
    """Run until the checkpoint of KILL_AT is on disk, SIGKILL the process there, then resume it to MAX_ITERS."""
    _run_until_killed(work_dir, *args)
    return _finish(*_run(work_dir, *args, '--resume'), work_dir)


def _compare(a, b, path=''):
    """Max |a - b| over every tensor of two nested states; non-tensor leaves must be equal."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype, path
        return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
    if isinstance(a, dict):
        assert set(a) == set(b), path
        return max([_compare(a[k], b[k], f'{path}.{k}') for k in a], default=0.0)
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        return max([_compare(x, y, f'{path}[{i}]') for i, (x, y) in enumerate(zip(a, b))], default=0.0)
    if isinstance(a, float) and a != b:
        return abs(a - b)
    assert a == b, path
    return 0.0


TRAINING_STATE = ('state_dict', 'optimizer', 'param_schedulers')


@pytest.fixture(scope='module')
def interrupted(tmp_path_factory):
    """A run without a fixed seed, killed right after its checkpoint of KILL_AT; its work dir and the seed it drew."""
    work = tmp_path_factory.mktemp('interrupted')
    _run_until_killed(work, '--rng-hook', '--seed', 'none')
    return work, torch.load(work / f'iter_{KILL_AT}.pth', map_location='cpu')['meta']['seed']


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory, interrupted):
    work = tmp_path_factory.mktemp('uninterrupted')
    return _finish(*_run(work, '--rng-hook', '--seed', str(interrupted[1])), work)


def test_killed_and_resumed_run_is_bit_identical_with_the_hook(interrupted, uninterrupted):
    work, _ = interrupted
    resumed = _finish(*_run(work, '--rng-hook', '--seed', 'none', '--resume'), work)
    assert resumed['meta']['iter'] == uninterrupted['meta']['iter'] == MAX_ITERS
    for key in TRAINING_STATE:
        assert _compare(uninterrupted[key], resumed[key], key) == 0.0, key
    # torch.equal, tensor by tensor: weights, AdamW moments and steps.
    for name, value in uninterrupted['state_dict'].items():
        assert torch.equal(value, resumed['state_dict'][name]), name
    for idx, state in uninterrupted['optimizer']['state'].items():
        assert all(torch.equal(v, resumed['optimizer']['state'][idx][k]) for k, v in state.items()), idx


def test_killed_and_resumed_run_differs_without_the_hook(interrupted, uninterrupted, tmp_path):
    resumed = _killed_and_resumed(tmp_path / 'c', '--seed', str(interrupted[1]))
    diff = _compare(uninterrupted['state_dict'], resumed['state_dict'], 'state_dict')
    print(f'max |weight difference| after resume without RNGStateHook: {diff:.3g}')
    assert diff > 0


def test_checkpoint_rng_states_pass_weights_only_loading(uninterrupted, tmp_path):
    saved = uninterrupted[CHECKPOINT_KEY]
    seed = uninterrupted['meta']['seed']
    assert saved['world_size'] == 1 and len(saved['states']) == 1
    assert saved['data_seeds'] == dict(sampler=seed, worker=seed)
    path = tmp_path / 'ckpt.pth'
    torch.save({CHECKPOINT_KEY: saved}, path)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) == []
    assert torch.load(path, weights_only=True)[CHECKPOINT_KEY]['states'][0]['torch'].dtype == torch.uint8


def _draws():
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)], \
        np.random.randn(1).tolist(), random.gauss(0, 1)


def test_set_rng_state_replays_every_generator():
    np.random.randn()  # leave a cached Gaussian in numpy's state
    random.gauss(0, 1)  # and in python's
    state = get_rng_state()
    first = _draws()
    set_rng_state(state)
    assert _draws() == first


def test_preserved_rng_state_leaves_the_generators_as_found():
    state = get_rng_state()
    with preserved_rng_state():
        _draws()
    after = _draws()
    set_rng_state(state)
    assert _draws() == after


def test_loading_weights_without_resuming_restores_nothing():
    hook = RNGStateHook()
    runner = SimpleNamespace(_resume=False, logger=None)
    hook.after_load_checkpoint(runner, {CHECKPOINT_KEY: dict(world_size=1, states=[get_rng_state()])})
    assert hook._pending is None


def test_resume_gives_the_training_data_the_interrupted_runs_seeds(tmp_path):
    """The resumed Runner builds its dataloader with its own seed (a random one when the config fixes none)."""
    runner = noisy_runner(tmp_path, max_iters=2)
    loader = runner.train_loop.dataloader
    assert loader.sampler.seed == 0 and loader.worker_init_fn.keywords['seed'] == 0
    hook = RNGStateHook()
    runner._resume = True
    hook.after_load_checkpoint(runner, {CHECKPOINT_KEY: dict(world_size=1, states=[get_rng_state()],
                                                             data_seeds=dict(sampler=5, worker=7))})
    hook.before_train(runner)
    assert loader.sampler.seed == 5 and loader.worker_init_fn.keywords['seed'] == 7
    # The first epoch is drawn in the order of the saved seed.
    order = torch.randperm(6, generator=torch.Generator().manual_seed(5)).tolist()
    first = next(runner.train_loop.dataloader_iterator)
    assert first['x'].shape == (2, 4) and list(iter(loader.sampler)) == order
