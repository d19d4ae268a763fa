"""A tiny MMEngine Runner setup that does not import mmfusion (so it can show the stock behaviour)."""
import itertools
import random

import numpy as np
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

# MMEngine keys its logger and visualizer instances by experiment name, by default the start second: two runners
# started in the same second of one process would share them (and write into the first one's log).
_RUN_IDS = itertools.count()


class _TinyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 1)

    def forward(self, x, y=None, mode='loss'):
        out = self.fc(torch.stack(x) if isinstance(x, list) else x)
        return dict(loss=out.pow(2).mean()) if mode == 'loss' else [out]


class _TinySet(Dataset):
    metainfo = dict(classes=('a', 'b'), palette=[(1, 2, 3), (4, 5, 6)])

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return dict(x=torch.full((2, ), float(i)), y=torch.zeros(1))


def tiny_runner(work_dir, max_iters, runner_cls=Runner, **kwargs):
    kwargs.setdefault('experiment_name', f'tiny_{next(_RUN_IDS)}')
    kwargs.setdefault('default_hooks', dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False)))
    return runner_cls(
        model=_TinyModel(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=_TinySet(), batch_size=2, sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-2)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=4)],
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        randomness=dict(seed=0),
        **kwargs)


class _NoisyModel(BaseModel):
    """Draws from every global generator a training run uses: dropout and ``torch.rand`` in the loss (as
    Mask2Former's point sampling does)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(4, 1)

    def forward(self, x, y=None, mode='loss'):
        x = torch.stack(x) if isinstance(x, list) else x
        out = self.out(self.drop(torch.relu(self.fc(x))))
        if mode != 'loss':
            return [out]
        weights = torch.rand(out.shape, device=out.device)  # random point weights
        return dict(loss=(weights * out.pow(2)).mean())


class _AugmentedSet(Dataset):
    """Samples with a numpy- and a python-random augmentation, as a data pipeline has (run in the main process with
    num_workers=0)."""
    metainfo = dict(classes=('a', 'b'), palette=[(1, 2, 3), (4, 5, 6)])

    def __len__(self):
        return 6

    def __getitem__(self, i):
        x = torch.full((4, ), float(i)) + torch.from_numpy(np.random.uniform(-1, 1, 4).astype(np.float32))
        if random.random() < 0.5:
            x = x.flip(0)
        return dict(x=x, y=torch.zeros(1))


def noisy_runner(work_dir, max_iters, checkpoint_interval=2, custom_hooks=(), **kwargs):
    """A Runner whose training draws from torch, numpy and python ``random`` (model and data), with a shuffling
    sampler whose epochs end mid-run (6 samples, batch 2), AdamW and a warm-up scheduler."""
    torch.manual_seed(0)  # the model is built before the Runner seeds (torch's own start-up seed is random)
    kwargs.setdefault('randomness', dict(seed=0))
    kwargs.setdefault('experiment_name', f'noisy_{next(_RUN_IDS)}')
    return Runner(
        model=_NoisyModel(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=_AugmentedSet(), batch_size=2, num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=True), collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-2)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=4)],
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=checkpoint_interval, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=list(custom_hooks),
        **kwargs)
