"""Export a trained mmfusion Mask2Former model to ONNX (standard operators only) and check it against PyTorch.

    python tools/deployment/pytorch2onnx.py CONFIG CHECKPOINT --out FILE.onnx [--shape H W] [--dynamic [all|batch]]
        [--opset 17] [--external-data] [--overwrite] [--cfg-options ...] [--debug]

The fused model (master, frozen auxiliary, neck, head) or a single-encoder baseline, for mmseg semantic and mmdet
instance / panoptic configs. The graph takes the preprocessed image (normalised, padded: 1x3xHxW; --shape defaults to
the config's test size) and returns the head's outputs before post-processing; tools/deployment/onnx_infer.py runs
the rest (mmfusion/deployment/postprocess.py, shared with PyTorch inference). Exported with torch's TorchScript
exporter (see mmfusion/deployment/export.py for why not the torch.export one), on the CPU: multi-scale deformable
attention becomes standard GridSample (opset >= 16), no custom domain.

After export the file is checked (onnx checker, no custom operator domain, one ONNX Runtime run against PyTorch on
a random input, and with --dynamic a second run at batch 2 and, for `all`, another size) and the max differences are
printed; the file is written only when every check passes. --out is never overwritten unless --overwrite.

Weights over 1.8 GB (e.g. a DINOv3 ViT-7B master) are kept in one file beside the graph, FILE.onnx.data, which must
stay next to FILE.onnx (--external-data does so for any model).

--dynamic all is refused for the shipped models: DINOv3's and SAM2 Hiera's padding, window and pyramid sizes are
Python arithmetic that the TorchScript exporter records as constants (the refusal names where); --dynamic batch
works.
"""
import argparse
import os.path as osp
import sys

from mmengine.config import DictAction

from mmfusion.apis.runner_utils import add_debug_arg, check_cfg_options, read_config, run_tool
from mmfusion.utils.errors import UserError
from mmfusion.utils.fileio import refuse_existing


def parse_args(argv=None):
    from mmfusion.deployment.export import DEFAULT_OPSET
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'), default=None,
                        help='input size of the graph (default: the config\'s test size)')
    parser.add_argument('--dynamic', nargs='?', const='all', choices=['all', 'batch'], default=None,
                        help='dynamic batch, height and width (all, the default), or the batch only; checked '
                        'against PyTorch at batch 2 (and another size), refused where the model keeps it static')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET, help=f'ONNX opset (>= 16, default {DEFAULT_OPSET})')
    parser.add_argument('--external-data', action='store_true', default=None,
                        help='weights in FILE.onnx.data beside the graph (default: only when they exceed 1.8 GB, '
                        'which one .onnx cannot hold)')
    parser.add_argument('--overwrite', action='store_true', help='replace --out (and FILE.onnx.data) if they exist')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    add_debug_arg(parser)
    return parser.parse_args(argv)


def _main(argv):
    args = parse_args(argv)
    from mmfusion.compat import checkpoint_problem
    from mmfusion.deployment.export import default_shape, export_onnx, external_data_file, model_task, preprocess_record
    if not args.out.endswith('.onnx'):
        raise UserError(f'--out {args.out} must end with .onnx')
    if not args.overwrite:
        refuse_existing([args.out, external_data_file(args.out)],
                        'pass --out a new file name, or --overwrite to replace it')
    cfg = read_config(args.config)
    if args.cfg_options:
        check_cfg_options(cfg, args.cfg_options)
        cfg.merge_from_dict(args.cfg_options)
    task = model_task(cfg, args.config)  # refuse an unsupported model before reading weights
    if not osp.isfile(args.checkpoint):
        raise UserError(f'checkpoint not found: {args.checkpoint}; pass the .pth written by tools/train.py')
    problem = checkpoint_problem(args.checkpoint)
    if problem:
        raise UserError(f'checkpoint {args.checkpoint} {problem}; pass a .pth written by tools/train.py')
    shape = tuple(args.shape) if args.shape else default_shape(cfg)

    # The model as tools/infer.py builds it: checkpoint loaded weights-only and checked against the model, class
    # names and palette as its overlays show them.
    from mmfusion.apis.inference import FusionInferencer
    infer = FusionInferencer(cfg, args.checkpoint, device='cpu')
    model = infer._inferencer.model
    extra = dict(dataset_meta=_jsonable(dict(model.dataset_meta or {})), scope=cfg.default_scope,
                 preprocess=preprocess_record(cfg))
    if task == 'semantic':
        extra.update(align_corners=bool(model.align_corners), threshold=getattr(model.decode_head, 'threshold', None),
                     num_classes=int(model.decode_head.num_classes))
    else:
        extra.update(num_classes=int(model.panoptic_head.num_classes))
    result = export_onnx(model, task, args.out, shape, dynamic=args.dynamic, opset=args.opset, extra_spec=extra,
                         config_name=args.config, log=lambda s: print(s, flush=True),
                         external_data=args.external_data)
    worst = max(result['max_rel_diff'].values())
    data = f' with its weights in {result["external_data"]}' if result['external_data'] else ''
    print(f'wrote {args.out}{data} ({result["size_mb"]:.1f} MiB, exported in {result["export_s"]:.1f} s); ONNX Runtime '
          f'vs PyTorch max |diff| / max |PyTorch| = {worst:.2e}; operator domains: '
          f'{", ".join(d or "ai.onnx (default)" for d in result["domains"])}', flush=True)
    return result


def _jsonable(obj):
    """dataset_meta as JSON can hold it (tuples to lists, numpy scalars to numbers)."""
    import numpy as np
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    print(f'note: dataset_meta value {obj!r} is not stored in the export record', file=sys.stderr)
    return None


def main(argv=None):
    """Export; returns :func:`mmfusion.deployment.export.export_onnx`'s result. Expected failures print one
    ``error:`` line and exit with 2."""
    return run_tool(_main, argv)


if __name__ == '__main__':
    main()
