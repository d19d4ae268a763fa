"""Cityscapes gtFine -> COCO instance jsons (mmdet) and *_gtFine_labelTrainIds.png (mmseg).

    python tools/dataset_converters/cityscapes.py data/cityscapes [--splits train val] [--mask-format rle]
        [--overwrite]

Writes ``annotations/instancesonly_filtered_gtFine_{split}.json`` and a ``_gtFine_labelTrainIds.png`` beside each
``_gtFine_labelIds.png``; files of that name that exist already are replaced only with ``--overwrite``. For the
panoptic files use ``cityscapes_panoptic.py``.
"""
import argparse
import glob
import os.path as osp

from mmfusion.apis.runner_utils import add_debug_arg, run_tool
from mmfusion.datasets.converters.cityscapes import (
    convert_cityscapes_instances,
    convert_cityscapes_train_ids,
    instance_json_name,
)
from mmfusion.utils.errors import UserError
from mmfusion.utils.fileio import refuse_existing


def _main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('root', help='Cityscapes root (holds leftImg8bit/ and gtFine/)')
    parser.add_argument('-o', '--out-dir', help='folder for the jsons (default: <root>/annotations)')
    parser.add_argument('--splits', nargs='+', default=['train', 'val'])
    parser.add_argument('--mask-format', choices=('rle', 'polygon'), default='rle')
    parser.add_argument('--no-train-ids', action='store_true', help='skip the labelTrainIds pngs')
    parser.add_argument('--overwrite', action='store_true', help='replace outputs that exist already')
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    if not args.overwrite:
        out_dir = args.out_dir or osp.join(args.root, 'annotations')
        refuse_existing([osp.join(out_dir, instance_json_name(s)) for s in args.splits],
                        'pass --overwrite to replace it, or -o another folder')
        if not args.no_train_ids:
            train_ids = [p for s in args.splits
                         for p in glob.glob(osp.join(args.root, 'gtFine', s, '*', '*_gtFine_labelTrainIds.png'))[:1]]
            refuse_existing(train_ids, 'pass --overwrite to replace the labelTrainIds pngs, or --no-train-ids to keep '
                            'them')
    try:
        written = convert_cityscapes_instances(args.root, args.out_dir, args.splits, args.mask_format)
        count = 0 if args.no_train_ids else convert_cityscapes_train_ids(args.root, args.splits)
    except ValueError as err:
        raise UserError(str(err)) from err
    for split, path in written.items():
        print(f'{split}: {path}')
    print(f'{count} labelTrainIds pngs written')
    return written


def main(argv=None):
    """Convert; expected failures print one ``error:`` line and exit with status 2."""
    return run_tool(_main, argv)


if __name__ == '__main__':
    main()
