"""A tiny MMEngine Runner setup that does not import mmfusion (so it can show the stock behaviour)."""
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset


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


def tiny_runner(work_dir, max_iters, **kwargs):
    return Runner(
        model=_TinyModel(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=_TinySet(), batch_size=2, sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-2)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=4)],
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False)),
        randomness=dict(seed=0),
        **kwargs)
