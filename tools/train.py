"""Train a model from an mmfusion config (mmdet- or mmseg-scoped).

    python tools/train.py configs/mask2former_d3s2_cityscapes.py [--work-dir DIR] [--amp] [--resume [CKPT]]
        [--load-from CKPT [--partial-load]] [--cfg-options train_cfg.max_iters=1000 ...] [--launcher pytorch]
        [--debug]

Expected failures (a missing config, data folder, annotation file, weights or checkpoint, a checkpoint that does not
fit the model, a bad --cfg-options key, a work dir another run is using) end with one line
``error: <problem>; <fix>`` before the Runner's start-up log; ``--debug`` shows the traceback.
"""
import argparse

from mmfusion.apis.runner_utils import (
    add_common_args,
    build_runner,
    config_errors,
    enable_amp,
    load_config,
    run_tool,
    set_load_from,
    set_resume,
)
from mmfusion.engine.work_dir_lock import release_work_dir
from mmfusion.utils.errors import UserError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model (mmdet or mmseg config)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--amp', action='store_true', help='enable automatic mixed precision training (needs a GPU)')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from CKPT, or from the newest intact checkpoint in the work dir when no path is given')
    parser.add_argument('--load-from', metavar='CKPT',
                        help='initialise the model from CKPT (fine-tuning; the path is taken as is, spaces included)')
    parser.add_argument('--partial-load', action='store_true',
                        help='with --load-from (or load_from in the config): allow weights missing from the '
                        'checkpoint or of another shape (e.g. a new head); they keep their initial values and a note '
                        'lists them. Without it every model weight must be in the checkpoint')
    parser.add_argument('--auto-scale-lr', action='store_true', help='scale the lr by the actual batch size')
    add_common_args(parser)
    return parser.parse_args(argv)


def _main(argv):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    if args.amp:
        enable_amp(cfg)
    set_resume(cfg, args.resume)
    set_load_from(cfg, args.load_from, args.partial_load)
    if args.auto_scale_lr:
        if not cfg.get('auto_scale_lr', {}).get('base_batch_size'):
            raise UserError('--auto-scale-lr needs auto_scale_lr.base_batch_size in the config; set it with '
                            '--cfg-options auto_scale_lr.base_batch_size=16 or drop the flag')
        cfg.auto_scale_lr.enable = True
    try:
        runner = build_runner(cfg, mode='train')  # takes the work dir's lock
        with config_errors(args.config):
            runner.train()
    finally:
        release_work_dir()
    return runner


def main(argv=None):
    """Train; returns the Runner. Expected failures print one ``error:`` line and exit with status 2."""
    return run_tool(_main, argv)


if __name__ == '__main__':
    main()
