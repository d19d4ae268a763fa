"""Parameters and FLOPs of a Mask2Former config, whole and per component, optionally beside a second config.

Components: master and auxiliary encoder of a fused model (or the encoder), neck, pixel decoder, transformer
decoder, rest of the head. Works for mmdet- and mmseg-scoped Mask2Former configs. The model is built with random
weights (no weight file is read, ``init_weights`` is never called) and run once in eval mode under no_grad on one
random image of --shape (default: the config's test size), through the backbone, neck and head; data preprocessing
and post-processing are not counted. FLOPs are multiply-adds (fvcore/MMEngine/detectron2 convention), counted with
torch's FlopCounterMode; the operations it has no formula for are listed under the table, and the sampling of
deformable attention is counted analytically (see mmfusion/apis/complexity.py).

Examples:
  python tools/analysis/get_flops.py configs/mask2former_d3s2_cityscapes.py --shape 512 1024
  python tools/analysis/get_flops.py configs/mask2former_d3s2_cityscapes.py \\
      --compare configs/baselines/mask2former_d3_cityscapes.py --json work_dirs/flops_d3s2_vs_d3.json
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import sys
from typing import Optional, Sequence

# Run as a script from anywhere: make the repository importable.
_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

PROG = 'get_flops.py'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction

    from mmfusion.apis.runner_utils import add_debug_arg

    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split('\n\n')[0], epilog=__doc__.split('\n\n', 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='Mask2Former config (mmdet- or mmseg-scoped)')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size (default: the test size of the config, e.g. 1024 2048 for Cityscapes)')
    parser.add_argument('--compare', metavar='CONFIG2', help='second config, printed side by side with ratios A/B')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default=None, metavar='KEY=VALUE',
                        help='overrides of CONFIG, e.g. model.backbone.master.checkpoint=None')
    parser.add_argument('--compare-cfg-options', nargs='+', action=DictAction, default=None, metavar='KEY=VALUE',
                        help='overrides of CONFIG2')
    parser.add_argument('--device', default='cpu', help='device to run the model on (default: cpu)')
    parser.add_argument('--json', metavar='OUT', help='also write the numbers to this JSON file')
    add_debug_arg(parser)
    return parser.parse_args(argv)


def analyse(config: str, shape: Optional[Sequence[int]], cfg_options: Optional[dict], device: str = 'cpu'):
    """Load ``config``, build its model (random weights) and measure it.

    Returns:
        ModelCost: See :func:`mmfusion.apis.complexity.model_complexity`.
    """
    from mmengine.registry import MODELS, DefaultScope

    from mmfusion.apis.complexity import config_input_shape, model_complexity
    from mmfusion.apis.runner_utils import config_errors, load_config

    cfg = load_config(config, cfg_options, work_dir=None, launcher='none')
    if shape is None:
        shape, source = config_input_shape(cfg)
    else:
        source = '--shape'
    with config_errors(config), DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)  # no init_weights: random weights count the same
    model.to(device)
    return model_complexity(model, shape, name=config, shape_source=source)


def _main(argv: Optional[Sequence[str]]) -> dict:
    from mmfusion.apis.complexity import check_shape, compare, format_comparison, format_cost

    args = parse_args(argv)
    if args.shape is not None:
        check_shape(args.shape)  # before building anything
    cost = analyse(args.config, args.shape, args.cfg_options, args.device)
    if args.compare:
        other = analyse(args.compare, args.shape, args.compare_cfg_options, args.device)
        print(format_comparison(cost, other))
        result = dict(a=cost.to_dict(), b=other.to_dict(), comparison=compare(cost, other))
    else:
        print(format_cost(cost))
        result = cost.to_dict()
    if args.json:
        os.makedirs(osp.dirname(osp.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2)
        print(f'wrote {args.json}')
    return result


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Measure and print; returns what --json writes. Expected failures print one ``error:`` line and exit with 2."""
    from mmfusion.apis.runner_utils import run_tool
    return run_tool(_main, argv, prog=PROG)


if __name__ == '__main__':
    main()
