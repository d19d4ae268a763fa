"""Cityscapes gtFine -> COCO instance jsons (mmdet) and *_gtFine_labelTrainIds.png (mmseg).

    python tools/dataset_converters/cityscapes.py data/cityscapes [--splits train val] [--mask-format rle]

Writes ``annotations/instancesonly_filtered_gtFine_{split}.json`` and a ``_gtFine_labelTrainIds.png`` beside each
``_gtFine_labelIds.png``. For the panoptic files use ``cityscapes_panoptic.py``.
"""
import argparse
import sys

from mmfusion.datasets.converters.cityscapes import convert_cityscapes_instances, convert_cityscapes_train_ids


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('root', help='Cityscapes root (holds leftImg8bit/ and gtFine/)')
    parser.add_argument('-o', '--out-dir', help='folder for the jsons (default: <root>/annotations)')
    parser.add_argument('--splits', nargs='+', default=['train', 'val'])
    parser.add_argument('--mask-format', choices=('rle', 'polygon'), default='rle')
    parser.add_argument('--no-train-ids', action='store_true', help='skip the labelTrainIds pngs')
    args = parser.parse_args(argv)
    try:
        written = convert_cityscapes_instances(args.root, args.out_dir, args.splits, args.mask_format)
        count = 0 if args.no_train_ids else convert_cityscapes_train_ids(args.root, args.splits)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f'error: {err}')
    for split, path in written.items():
        print(f'{split}: {path}')
    print(f'{count} labelTrainIds pngs written')


if __name__ == '__main__':
    main()
