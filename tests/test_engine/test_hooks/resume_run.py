"""One training run, started as a subprocess by the exact-resume tests: ``tests._tiny_runner.noisy_runner``, or
the config ``--config`` (e.g. a tiny fused Mask2Former) through MMEngine's Runner.

    python -m tests.test_engine.test_hooks.resume_run --work-dir DIR --max-iters N [--interval K] [--rng-hook]
        [--resume] [--hold-at K] [--config CFG]

``--hold-at K`` writes ``DIR/HELD`` right after the checkpoint of iteration K is on disk and then waits, so the
test can kill the process at that point.
"""
import argparse
import os.path as osp
import time

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

import mmfusion.engine  # noqa: F401  (compat fixes, registers mmfusion.RNGStateHook)
from tests._tiny_runner import noisy_runner


@HOOKS.register_module(name='HoldAfterCheckpoint', force=True)
class _HoldAfterCheckpoint(Hook):
    priority = 'LOWEST'  # after the CheckpointHook (VERY_LOW) has written the file and last_checkpoint

    def __init__(self, at: int) -> None:
        self.at = at

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == self.at:
            with open(osp.join(runner.work_dir, 'HELD'), 'w') as f:
                f.write(str(self.at))
            time.sleep(600)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--work-dir', required=True)
    parser.add_argument('--max-iters', type=int, required=True)
    parser.add_argument('--interval', type=int, default=2)
    parser.add_argument('--rng-hook', action='store_true')
    parser.add_argument('--resume', action='store_true')
    parser.add_argument('--hold-at', type=int)
    parser.add_argument('--config', help='train this config (its own hooks; --rng-hook adds RNGStateHook)')
    parser.add_argument('--seed', default='0', help="randomness.seed; 'none' lets MMEngine draw one")
    args = parser.parse_args()
    seed = None if args.seed == 'none' else int(args.seed)
    hooks = [dict(type='mmfusion.RNGStateHook')] if args.rng_hook else []
    if args.hold_at:
        hooks.append(dict(type='HoldAfterCheckpoint', at=args.hold_at))
    if args.config:
        from mmengine.config import Config
        from mmengine.runner import Runner
        cfg = Config.fromfile(args.config)
        cfg.work_dir, cfg.resume = args.work_dir, args.resume
        cfg.randomness = dict(seed=seed)  # the same seed in every run compared (a config without one draws it)
        cfg.train_cfg.max_iters = args.max_iters
        cfg.default_hooks.checkpoint.interval = args.interval
        cfg.custom_hooks = [h for h in cfg.get('custom_hooks', []) if h['type'] != 'mmfusion.RNGStateHook'] + hooks
        runner = Runner.from_cfg(cfg)
    else:
        runner = noisy_runner(args.work_dir, args.max_iters, args.interval, custom_hooks=hooks, resume=args.resume,
                              randomness=dict(seed=seed))
    runner.train()
    print('trained to iter', runner.iter, flush=True)


if __name__ == '__main__':
    main()
