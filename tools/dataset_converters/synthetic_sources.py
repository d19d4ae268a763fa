"""Synscapes or UrbanSyn -> a COCO instance json with the 8 Cityscapes thing classes (synthetic -> real training).

    python tools/dataset_converters/synthetic_sources.py synscapes data/Synscapes [-o OUT_DIR]
    python tools/dataset_converters/synthetic_sources.py urbansyn data/UrbanSyn [--semantic-encoding trainIds]

Writes ``synscapes_instances.json`` / ``urbansyn_instances.json`` (default into ``<root>/annotations``); read it
with mmdet's ``CityscapesDataset`` and ``data_prefix=dict(img='')``.
"""
import argparse
import sys

from mmfusion.datasets.converters.synthetic_sources import convert_synscapes_instances, convert_urbansyn_instances


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('dataset', choices=('synscapes', 'urbansyn'))
    parser.add_argument('root', help='dataset root')
    parser.add_argument('-o', '--out-dir', help='folder for the json (default: <root>/annotations)')
    parser.add_argument('--mask-format', choices=('rle', 'polygon'), default='rle')
    parser.add_argument('--semantic-encoding', choices=('ids', 'trainIds'), default='ids',
                        help='UrbanSyn only: what the ss/ pngs hold (default: Cityscapes label ids)')
    args = parser.parse_args(argv)
    try:
        if args.dataset == 'synscapes':
            path = convert_synscapes_instances(args.root, args.out_dir, args.mask_format)
        else:
            path = convert_urbansyn_instances(args.root, args.out_dir, args.mask_format, args.semantic_encoding)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f'error: {err}')
    print(path)


if __name__ == '__main__':
    main()
