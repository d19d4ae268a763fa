"""Test (evaluate) a checkpoint with an mmfusion config (mmdet- or mmseg-scoped).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR] [--out results.pkl]
        [--cfg-options ...] [--launcher pytorch] [--debug]

A checkpoint that does not fit the config's model exactly (any weight missing or of another shape) is refused, naming
the keys and the likely cause, before the Runner is built; weights the model does not have get a one-line warning.
A relative ``--show-dir`` lives in the work dir. Expected failures end with one line ``error: <problem>; <fix>``.
"""
import argparse
import os.path as osp

from mmfusion.apis.runner_utils import (
    add_common_args,
    build_runner,
    config_errors,
    enable_visualization,
    load_config,
    run_tool,
)
from mmfusion.utils.errors import UserError
from mmfusion.utils.fileio import refuse_existing


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model (mmdet or mmseg config)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='dump predictions to a new pickle file (.pkl) for offline evaluation')
    parser.add_argument('--show', action='store_true', help='show prediction results in a window')
    parser.add_argument('--show-dir', help='directory where painted images are saved')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of show (s)')
    add_common_args(parser)
    return parser.parse_args(argv)


def _main(argv):
    args = parse_args(argv)
    if not osp.isfile(args.checkpoint):
        raise UserError(f'checkpoint not found: {args.checkpoint}; pass the .pth written by tools/train.py')
    if args.out:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise UserError(f'--out {args.out} must end with .pkl or .pickle')
        refuse_existing([args.out], 'pass --out a new file name')
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        enable_visualization(cfg, args.show, args.show_dir, args.wait_time)
    runner = build_runner(cfg, mode='test')
    if args.out:
        if cfg.default_scope == 'mmdet':
            from mmdet.evaluation import DumpDetResults
            runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
        else:
            from mmengine.evaluator import DumpResults
            runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
    with config_errors(args.config):
        metrics = runner.test()
    return metrics


def main(argv=None):
    """Evaluate; returns the metrics. Expected failures print one ``error:`` line and exit with status 2."""
    return run_tool(_main, argv)


if __name__ == '__main__':
    main()
