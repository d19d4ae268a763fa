"""Synscapes or UrbanSyn -> a COCO instance json with the 8 Cityscapes thing classes (synthetic -> real training).

    python tools/dataset_converters/synthetic_sources.py synscapes data/Synscapes [-o OUT_DIR] [--overwrite]
    python tools/dataset_converters/synthetic_sources.py urbansyn data/UrbanSyn [--semantic-encoding trainIds]

Writes ``synscapes_instances.json`` / ``urbansyn_instances.json`` (default into ``<root>/annotations``; an existing
one is replaced only with ``--overwrite``); read it with mmdet's ``CityscapesDataset`` and ``data_prefix=dict(img='')``.
"""
import argparse
import os.path as osp

from mmfusion.apis.runner_utils import add_debug_arg, run_tool
from mmfusion.datasets.converters.synthetic_sources import convert_synscapes_instances, convert_urbansyn_instances
from mmfusion.utils.errors import UserError
from mmfusion.utils.fileio import refuse_existing


def _main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('dataset', choices=('synscapes', 'urbansyn'))
    parser.add_argument('root', help='dataset root')
    parser.add_argument('-o', '--out-dir', help='folder for the json (default: <root>/annotations)')
    parser.add_argument('--mask-format', choices=('rle', 'polygon'), default='rle')
    parser.add_argument('--semantic-encoding', choices=('ids', 'trainIds'), default='ids',
                        help='UrbanSyn only: what the ss/ pngs hold (default: Cityscapes label ids)')
    parser.add_argument('--overwrite', action='store_true', help='replace an output that exists already')
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    if not args.overwrite:
        out_dir = args.out_dir or osp.join(args.root, 'annotations')
        refuse_existing([osp.join(out_dir, f'{args.dataset}_instances.json')],
                        'pass --overwrite to replace it, or -o another folder')
    try:
        if args.dataset == 'synscapes':
            path = convert_synscapes_instances(args.root, args.out_dir, args.mask_format)
        else:
            path = convert_urbansyn_instances(args.root, args.out_dir, args.mask_format, args.semantic_encoding)
    except ValueError as err:
        raise UserError(str(err)) from err
    print(path)
    return path


def main(argv=None):
    """Convert; expected failures print one ``error:`` line and exit with status 2."""
    return run_tool(_main, argv)


if __name__ == '__main__':
    main()
