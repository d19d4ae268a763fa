"""2-process (torchrun, gloo, CPU) runs of ``tools/train.py`` for test_fsdp.py: the same tiny fused model trained
with DDP (MMEngine's Runner) and with FSDP (FlexibleRunner + FSDPStrategy), then the FSDP run resumed.

    python -m torch.distributed.run --nproc_per_node 2 tests/test_engine/fsdp_run.py DDP_CFG FSDP_CFG WORK_DIR

The three runs share the processes (and the process group), as three ``tools/train.py`` invocations would, to keep
the test short. The DDP and FSDP runs start from the same weights (``load_from``): the model of the DDP config built
with seed 0. Their work dirs are ``WORK_DIR/{ddp,fsdp,resumed}``; each rank writes ``WORK_DIR/rank{r}.json`` with
what the logs do not show (the wrapper, the FSDP units, the optimizer's parameter groups).
"""
import json
import os
import os.path as osp
import sys

import torch.distributed as dist
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import set_random_seed


@HOOKS.register_module()
class ReseedPerIterHook(Hook):
    """Seeds every generator with ``seed + iteration`` before each iteration, so that the random draws of an
    iteration (RoPE jitter, Mask2Former's point sampling) depend on its index only: the same in a DDP and an FSDP run,
    and in a resumed run."""

    priority = 'VERY_HIGH'

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        set_random_seed(self.seed + runner.iter)


def _facts(runner) -> dict:
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    from mmfusion.engine.hooks import SCEFHook
    from mmfusion.utils.normalisation import encoder_normalisations
    model = runner.model
    scef = next((h for h in runner.hooks if isinstance(h, SCEFHook)), None)
    groups = runner.optim_wrapper.optimizer.param_groups
    in_optimizer = {id(p) for g in groups for p in g['params']}
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)].replace('_fsdp_wrapped_module.', ''): g['weight_decay'] for g in groups for p in g['params']}
    units = [type(m.module).__name__ for m in model.modules() if isinstance(m, FSDP)]
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    return dict(
        iter=runner.iter,
        wrapper=type(model).__name__,
        units=units,
        frozen_in_optimizer=[n for n, p in model.named_parameters() if not p.requires_grad and id(p) in in_optimizer],
        num_frozen=len(frozen),
        trainable_not_in_optimizer=[n for n, p in model.named_parameters() if p.requires_grad and
                                    id(p) not in in_optimizer],
        weight_decay=decay,
        meta_tensors=sum(t.is_meta for t in [*model.parameters(), *model.buffers()]),
        checkpointed_blocks=sum(type(m).__name__ == 'DINOv3ViTLayer' and m.gradient_checkpointing
                                for m in model.modules()),
        encoders=[name for name, _, _ in encoder_normalisations(model.module)],
        scef_probes=None if scef is None or scef._probes is None else list(scef._probes.shape))


def _initial_weights(config: str, path: str) -> str:
    """The config's model built with seed 0 (the same on every rank), saved as a checkpoint."""
    import torch
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    register_all_modules()
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(config).model)
    model.init_weights()
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
    return path


def main(ddp_cfg: str, fsdp_cfg: str, work_dir: str) -> None:
    from tools.train import main as train
    init = _initial_weights(ddp_cfg, osp.join(work_dir, f'init_rank{os.environ["RANK"]}.pth'))
    facts = {}
    for name, argv in (('ddp', [ddp_cfg, '--cfg-options', f'load_from={init}']),
                       ('fsdp', [fsdp_cfg, '--cfg-options', f'load_from={init}']),
                       ('resumed', [fsdp_cfg, '--resume', osp.join(work_dir, 'fsdp', 'iter_2.pth')])):
        runner = train(argv + ['--launcher', 'pytorch', '--work-dir', osp.join(work_dir, name)])
        facts[name] = _facts(runner)
    with open(osp.join(work_dir, f'rank{runner.rank}.json'), 'w') as f:
        json.dump(facts, f)
    dist.barrier()  # leave together and close gloo before the interpreter's teardown
    dist.destroy_process_group()


if __name__ == '__main__':
    main(*sys.argv[1:4])
