"""Cityscapes gtFine -> COCO-panoptic json + png folder (mmdet ``CocoPanopticDataset``,
``mmfusion.CityscapesPanopticDataset``, ``CocoPanopticMetric``).

    python tools/dataset_converters/cityscapes_panoptic.py data/cityscapes [--splits train val] [--overwrite]

Writes ``annotations/cityscapes_panoptic_{split}.json`` and ``annotations/cityscapes_panoptic_{split}/``; existing
ones are replaced only with ``--overwrite``.
"""
import argparse
import os.path as osp

from mmfusion.apis.runner_utils import add_debug_arg, run_tool
from mmfusion.datasets.converters.cityscapes_panoptic import convert_cityscapes_panoptic, panoptic_json_name
from mmfusion.utils.errors import UserError
from mmfusion.utils.fileio import refuse_existing


def _main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('root', help='Cityscapes root (holds leftImg8bit/ and gtFine/)')
    parser.add_argument('-o', '--out-dir', help='output folder (default: <root>/annotations)')
    parser.add_argument('--splits', nargs='+', default=['train', 'val'])
    parser.add_argument('--overwrite', action='store_true', help='replace outputs that exist already')
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    if not args.overwrite:
        out_dir = args.out_dir or osp.join(args.root, 'annotations')
        names = [panoptic_json_name(s) for s in args.splits]
        refuse_existing([osp.join(out_dir, n) for n in names] + [osp.join(out_dir, n[:-len('.json')]) for n in names],
                        'pass --overwrite to replace it, or -o another folder')
    try:
        written = convert_cityscapes_panoptic(args.root, args.out_dir, args.splits)
    except ValueError as err:
        raise UserError(str(err)) from err
    for split, path in written.items():
        print(f'{split}: {path}')
    return written


def main(argv=None):
    """Convert; expected failures print one ``error:`` line and exit with status 2."""
    return run_tool(_main, argv)


if __name__ == '__main__':
    main()
