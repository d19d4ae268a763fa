"""Cityscapes gtFine -> COCO-panoptic json + png folder (mmdet ``CocoPanopticDataset``,
``mmfusion.CityscapesPanopticDataset``, ``CocoPanopticMetric``).

    python tools/dataset_converters/cityscapes_panoptic.py data/cityscapes [--splits train val]

Writes ``annotations/cityscapes_panoptic_{split}.json`` and ``annotations/cityscapes_panoptic_{split}/``.
"""
import argparse
import sys

from mmfusion.datasets.converters.cityscapes_panoptic import convert_cityscapes_panoptic


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('root', help='Cityscapes root (holds leftImg8bit/ and gtFine/)')
    parser.add_argument('-o', '--out-dir', help='output folder (default: <root>/annotations)')
    parser.add_argument('--splits', nargs='+', default=['train', 'val'])
    args = parser.parse_args(argv)
    try:
        written = convert_cityscapes_panoptic(args.root, args.out_dir, args.splits)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f'error: {err}')
    for split, path in written.items():
        print(f'{split}: {path}')


if __name__ == '__main__':
    main()
