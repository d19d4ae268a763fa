"""KITTI-360 2D instance labels -> COCO instance jsons with the 8 Cityscapes thing classes.

    python tools/dataset_converters/kitti360.py data/KITTI-360 [--splits train val] [-o OUT_DIR]

Writes ``kitti360_instances_{split}.json`` (default into ``<root>/annotations``); read it with mmdet's
``CityscapesDataset`` and ``data_prefix=dict(img='')``.
"""
import argparse
import sys

from mmfusion.datasets.converters.kitti360 import convert_kitti360_instances


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('root', help='KITTI-360 root (holds data_2d_raw/ and data_2d_semantics/)')
    parser.add_argument('-o', '--out-dir', help='folder for the jsons (default: <root>/annotations)')
    parser.add_argument('--splits', nargs='+', default=['train', 'val'])
    parser.add_argument('--mask-format', choices=('rle', 'polygon'), default='rle')
    args = parser.parse_args(argv)
    try:
        written = convert_kitti360_instances(args.root, args.out_dir, args.splits, args.mask_format)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f'error: {err}')
    for split, path in written.items():
        print(f'{split}: {path}')


if __name__ == '__main__':
    main()
