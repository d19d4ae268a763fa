"""Train a model from an mmfusion config (mmdet- or mmseg-scoped).

    python tools/train.py configs/mask2former_d3s2_cityscapes.py [--work-dir DIR] [--amp] [--resume [CKPT]]
        [--cfg-options model.neck.inject_stride=8 ...] [--launcher pytorch]
"""
import argparse

from mmfusion.apis.runner_utils import add_common_args, build_runner, enable_amp, load_config, set_resume


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model (mmdet or mmseg config)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--amp', action='store_true', help='enable automatic mixed precision training')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from CKPT, or from the latest checkpoint in the work dir when no path is given')
    parser.add_argument('--auto-scale-lr', action='store_true', help='scale the lr by the actual batch size')
    add_common_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    if args.amp:
        enable_amp(cfg)
    set_resume(cfg, args.resume)
    if args.auto_scale_lr:
        if not cfg.get('auto_scale_lr', {}).get('base_batch_size'):
            raise ValueError('--auto-scale-lr needs auto_scale_lr.base_batch_size in the config')
        cfg.auto_scale_lr.enable = True
    runner = build_runner(cfg)
    runner.train()
    return runner


if __name__ == '__main__':
    main()
