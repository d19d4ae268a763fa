"""Exact resume of the demo's own config family, with data loader workers, through tools/train.py: a run killed with
SIGKILL right after ``iter_4.pth`` is written and resumed with ``--resume`` ends bit-identical (weights, optimizer,
schedulers) to an uninterrupted run.

The config is ``tools/demo.py --smoke``'s (``run_config``: the semantic demo config at toy sizes, DINOv3 master +
SAM2 auxiliary, SCEFHook and RNGStateHook), trained the way the flagship's mmseg base loads data: 2 persistent
workers with random augmentations (resize, crop, flip, photometric distortion) drawn inside them.
"""
import os
import os.path as osp
import subprocess
import sys
import time

import pytest
import torch
from mmengine.config import Config

from tests._tools import ROOT, load_tool, sigkill_when_held
from tests.test_engine.test_hooks.test_rng_state_hook import TRAINING_STATE, _compare

ITERS, KILL_AT = 8, 4


@pytest.fixture(scope='module')
def demo_config(tmp_path_factory):
    from mmfusion.datasets.synthetic_cityscapes import generate_synthetic_cityscapes
    base = tmp_path_factory.mktemp('exact resume démo')  # a space and a non-ASCII letter, as users' folders have
    data = str(base / 'data')
    generate_synthetic_cityscapes(data, num_train=6, num_val=1, height=64, width=128, seed=0, overwrite=True,
                                  panoptic=False)
    demo = load_tool('demo.py')
    cfg = Config.fromfile(demo.DEMO_CONFIG)
    encoders = demo.encoder_configs(dict(dinov3=None, sam2=None), True, cfg)
    cfg = demo.run_config(cfg, data, ITERS, smoke=True, encoders=encoders)
    cfg.train_dataloader.update(num_workers=2, persistent_workers=True)
    cfg.randomness = dict(seed=0, deterministic=True)
    cfg.default_hooks.checkpoint.interval = 2
    cfg.train_cfg.val_interval = ITERS + 1  # no validation: the weights are compared
    cfg.custom_imports.imports = list(cfg.custom_imports.imports) + ['tests.test_engine.test_hooks.resume_run']
    path = str(base / 'demo_smoke.py')
    cfg.dump(path)
    # The same, waiting right after the checkpoint of KILL_AT is on disk (writes HELD) to be killed there.
    cfg.custom_hooks.append(dict(type='HoldAfterCheckpoint', at=KILL_AT))
    cfg.dump(str(base / 'demo_smoke_hold.py'))
    return path


def _train(cfg, work_dir, *args, hold=False):
    """tools/train.py in a subprocess, one thread so that every run sums in the same order."""
    cfg = cfg.replace('demo_smoke.py', 'demo_smoke_hold.py') if hold else cfg
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONPATH=ROOT, MMFUSION_DEBUG='0')
    log = open(f'{work_dir}.{len(args)}{int(hold)}.log', 'w')
    return subprocess.Popen([sys.executable, 'tools/train.py', cfg, '--work-dir', work_dir, *args], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT), log


def _wait(proc, log):
    rc = proc.wait(timeout=600)
    log.close()
    assert rc == 0, open(log.name).read()[-3000:]


def test_killed_and_resumed_demo_run_is_bit_identical(demo_config, tmp_path):
    start = time.monotonic()
    full, cut = str(tmp_path / 'full'), str(tmp_path / 'cut run')
    # The uninterrupted run and the run to be killed, side by side (2 cores).
    uninterrupted = _train(demo_config, full)
    sigkill_when_held(*_train(demo_config, cut, hold=True), cut, timeout=600)
    assert sorted(f for f in os.listdir(cut) if f.endswith('.pth')) == [f'iter_{KILL_AT}.pth']
    _wait(*_train(demo_config, cut, '--resume'))
    _wait(*uninterrupted)

    a = torch.load(osp.join(full, f'iter_{ITERS}.pth'), map_location='cpu')
    b = torch.load(osp.join(cut, f'iter_{ITERS}.pth'), map_location='cpu')
    diffs = {key: _compare(a[key], b[key], key) for key in TRAINING_STATE}
    print(f'max |difference| resumed vs uninterrupted: {diffs} ({time.monotonic() - start:.0f} s)')
    assert diffs == {key: 0.0 for key in TRAINING_STATE}
    for name, value in a['state_dict'].items():
        assert torch.equal(value, b['state_dict'][name]), name
    # the killed run's lock was taken over by the resumed one, with a note
    with open(f'{cut}.10.log') as f:
        assert f'note: --work-dir {cut}: taking over the lock of a run that is no longer running' in f.read()
