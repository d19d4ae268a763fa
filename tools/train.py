"""Train a model from an mmfusion config (mmdet- or mmseg-scoped).

    python tools/train.py configs/mask2former_d3s2_cityscapes.py [--work-dir DIR] [--amp] [--resume [CKPT]]
        [--cfg-options train_cfg.max_iters=1000 ...] [--launcher pytorch] [--debug]

Expected failures (a missing config, data folder, annotation file, weights or checkpoint, a bad --cfg-options key)
end with one line ``error: <problem>; <fix>``; ``--debug`` shows the traceback.
"""
import argparse

from mmfusion.apis.runner_utils import (
    add_common_args,
    build_runner,
    config_errors,
    enable_amp,
    load_config,
    run_tool,
    set_resume,
)
from mmfusion.utils.errors import UserError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model (mmdet or mmseg config)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--amp', action='store_true', help='enable automatic mixed precision training (needs a GPU)')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from CKPT, or from the latest checkpoint in the work dir when no path is given')
    parser.add_argument('--auto-scale-lr', action='store_true', help='scale the lr by the actual batch size')
    add_common_args(parser)
    return parser.parse_args(argv)


def _main(argv):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    if args.amp:
        enable_amp(cfg)
    set_resume(cfg, args.resume)
    if args.auto_scale_lr:
        if not cfg.get('auto_scale_lr', {}).get('base_batch_size'):
            raise UserError('--auto-scale-lr needs auto_scale_lr.base_batch_size in the config; set it with '
                            '--cfg-options auto_scale_lr.base_batch_size=16 or drop the flag')
        cfg.auto_scale_lr.enable = True
    runner = build_runner(cfg, mode='train')
    with config_errors(args.config):
        runner.train()
    return runner


def main(argv=None):
    """Train; returns the Runner. Expected failures print one ``error:`` line and exit with status 2."""
    return run_tool(_main, argv)


if __name__ == '__main__':
    main()
