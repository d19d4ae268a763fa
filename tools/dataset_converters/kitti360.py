"""KITTI-360 2D instance labels -> COCO instance jsons with the 8 Cityscapes thing classes.

    python tools/dataset_converters/kitti360.py data/KITTI-360 [--splits train val] [-o OUT_DIR] [--overwrite]

Writes ``kitti360_instances_{split}.json`` (default into ``<root>/annotations``; an existing one is replaced only
with ``--overwrite``); read it with mmdet's ``CityscapesDataset`` and ``data_prefix=dict(img='')``.
"""
import argparse
import os.path as osp

from mmfusion.apis.runner_utils import add_debug_arg, run_tool
from mmfusion.datasets.converters.kitti360 import convert_kitti360_instances, kitti360_json_name
from mmfusion.utils.errors import UserError
from mmfusion.utils.fileio import refuse_existing


def _main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('root', help='KITTI-360 root (holds data_2d_raw/ and data_2d_semantics/)')
    parser.add_argument('-o', '--out-dir', help='folder for the jsons (default: <root>/annotations)')
    parser.add_argument('--splits', nargs='+', default=['train', 'val'])
    parser.add_argument('--mask-format', choices=('rle', 'polygon'), default='rle')
    parser.add_argument('--overwrite', action='store_true', help='replace outputs that exist already')
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    if not args.overwrite:
        out_dir = args.out_dir or osp.join(args.root, 'annotations')
        refuse_existing([osp.join(out_dir, kitti360_json_name(s)) for s in args.splits],
                        'pass --overwrite to replace it, or -o another folder')
    try:
        written = convert_kitti360_instances(args.root, args.out_dir, args.splits, args.mask_format)
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
