"""A 2-process (torchrun, gloo, CPU) training run with SCEFHook and RNGStateHook, for test_scef_hook.py.

    python -m torch.distributed.run --nproc_per_node 2 tests/test_engine/test_hooks/ddp_scef_run.py WORK_DIR

Each rank writes ``WORK_DIR/rank{r}.json``: the iteration it reached and whether its SCEFHook probed.
"""
import json
import os.path as osp
import sys

import torch.distributed as dist
from mmengine.runner import Runner

import mmfusion.engine  # noqa: F401  (compat fixes, registers the hooks)
from mmfusion.engine.hooks import SCEFHook
from tests.test_engine.test_hooks._scef_models import FusionModel, Scenes


def main(work_dir: str) -> None:
    runner = Runner(
        model=FusionModel(),
        work_dir=work_dir,
        train_dataloader=dict(dataset=Scenes(augment=True), batch_size=1,
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              collate_fn=dict(type='pseudo_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=1e-3)),
        train_cfg=dict(by_epoch=False, max_iters=2),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1),
                           checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False)),
        custom_hooks=[dict(type='mmfusion.SCEFHook', interval=1, num_probes=2, probe_size=(64, 128)),
                      dict(type='mmfusion.RNGStateHook')],
        launcher='pytorch',
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        randomness=dict(seed=0))
    runner.train()
    hook = next(h for h in runner.hooks if isinstance(h, SCEFHook))
    with open(osp.join(work_dir, f'rank{runner.rank}.json'), 'w') as f:
        json.dump(dict(iter=runner.iter, world_size=runner.world_size, probed=hook._probes is not None), f)
    dist.barrier()  # leave together and close gloo before the interpreter's teardown
    dist.destroy_process_group()


if __name__ == '__main__':
    main(sys.argv[1])
