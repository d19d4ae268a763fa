"""MMEngine's FSDPStrategy on 2 CPU processes (torchrun, gloo), for the FSDP fixes of mmfusion.compat.

    python -m torch.distributed.run --nproc_per_node 2 tests/_fsdp_compat_run.py OUT_DIR

A two-layer model, fully sharded (one FSDP unit, its flat parameter split over the 2 ranks), takes one SGD step with
gradient clipping, saves a 'full' checkpoint, is rebuilt, and resumes from it. Rank 0 writes ``OUT_DIR/result.pt``:
the gathered weights after the step, the reference weights of the same step without FSDP, the logged gradient norm,
and the optimizer state and base lr before saving and after resuming.
"""
import os.path as osp
import sys

import torch
import torch.nn as nn
from mmengine.model import BaseModel

import mmfusion.registry  # noqa: F401  (the compat fixes)

MAX_NORM = 0.1
LR = 0.5
START_FACTOR = 0.5  # LinearLR: the first step runs at LR * START_FACTOR


class TwoLayers(BaseModel):

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.fc2 = nn.Linear(4, 1)

    def forward(self, x, mode='loss'):
        return dict(loss=self.fc2(torch.tanh(self.fc1(x))).pow(2).mean())


def _strategy(work_dir):
    from mmengine._strategy import FSDPStrategy
    return FSDPStrategy(state_dict_cfg='full', work_dir=work_dir,
                        env_kwargs=dict(launcher='pytorch', dist_cfg=dict(backend='gloo'), randomness=dict(seed=0)))


def _prepare(strategy, model):
    # A custom key gives one parameter group per parameter, hence the wrapper's base_param_settings (base lr).
    optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=LR, momentum=0.9),
                         paramwise_cfg=dict(custom_keys={'fc2': dict(lr_mult=1.0)}), clip_grad=dict(max_norm=MAX_NORM))
    schedule = dict(type='LinearLR', start_factor=START_FACTOR, by_epoch=False, begin=0, end=4)
    strategy.prepare(model, optim_wrapper=optim_wrapper, param_scheduler=schedule,
                     dispatch_kwargs=dict(max_iters=4, max_epochs=1))
    return strategy


def _reference_step(model, x):
    """The same SGD step without FSDP: clipped by the norm of the whole gradient."""
    model(x)['loss'].backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
    with torch.no_grad():
        for p in model.parameters():
            p -= LR * START_FACTOR * p.grad
    return {k: v.clone() for k, v in model.state_dict().items()}, float(norm)


def main(out_dir: str) -> None:
    from mmengine.dist import get_rank
    from mmengine.logging import MessageHub
    torch.manual_seed(0)
    model = TwoLayers()
    x = torch.randn(8, 3)  # the same batch on both ranks: the averaged gradient is this batch's gradient
    reference_model = TwoLayers()
    reference_model.load_state_dict(model.state_dict())
    reference, reference_norm = _reference_step(reference_model, x)

    strategy = _prepare(_strategy(osp.join(out_dir, 'a')), model)
    strategy.optim_wrapper.update_params(strategy.model(x)['loss'])
    for scheduler in strategy.param_schedulers:
        scheduler.step()
    grad_norm = float(MessageHub.get_current_instance().get_scalar('train/grad_norm').current())
    saved_optim = strategy.optim_state_dict()
    base_lr = strategy.optim_wrapper.base_param_settings['lr']
    path = osp.join(out_dir, 'step1.pth')
    strategy.save_checkpoint(path, extra_ckpt=dict(meta=dict(iter=1, epoch=0)))
    stepped = strategy.model_state_dict()

    torch.manual_seed(1)  # other initial weights, so that resuming has something to restore
    resumed = _prepare(_strategy(osp.join(out_dir, 'b')), TwoLayers())
    resumed.resume(path)
    resumed_optim = resumed.optim_state_dict()  # collective calls: on every rank
    resumed_weights = resumed.model_state_dict()
    if get_rank() == 0:
        torch.save(dict(reference=reference, reference_norm=reference_norm, stepped=stepped, grad_norm=grad_norm,
                        base_lr=base_lr,
                        resumed_base_lr=resumed.optim_wrapper.base_param_settings['lr'],
                        saved_optim=saved_optim, resumed_optim=resumed_optim,
                        resumed_weights=resumed_weights), osp.join(out_dir, 'result.pt'))
    # Leave together and close the process group: gloo left to the interpreter's teardown can abort a rank
    # ('terminate called without an active exception') after its work is done.
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == '__main__':
    main(sys.argv[1])
