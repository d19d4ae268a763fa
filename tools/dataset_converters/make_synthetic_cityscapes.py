"""Write mmfusion's synthetic street scenes in the Cityscapes layout, with the files the stock configs read.

    python tools/dataset_converters/make_synthetic_cityscapes.py data/synthetic_cityscapes --num-train 16 --num-val 4

Then use ``data_root='data/synthetic_cityscapes/'`` in a Cityscapes config (mmseg ``CityscapesDataset``, mmdet
``CityscapesDataset`` + ``CocoMetric``/``CityScapesMetric``, ``mmfusion.CityscapesPanopticDataset``). The folder gets a
``.mmfusion-synthetic-cityscapes`` marker; ``--overwrite`` replaces a dataset only where that marker is (never a real
Cityscapes copy).
"""
import argparse

from mmfusion.apis.runner_utils import add_debug_arg, run_tool
from mmfusion.datasets.synthetic_cityscapes import generate_synthetic_cityscapes
from mmfusion.utils.errors import UserError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out_dir', help='dataset root to write (leftImg8bit/, gtFine/, annotations/)')
    parser.add_argument('--num-train', type=int, default=16, help='train images (default 16)')
    parser.add_argument('--num-val', type=int, default=4, help='val images (default 4)')
    parser.add_argument('--height', type=int, default=256, help='image height (default 256)')
    parser.add_argument('--width', type=int, default=512, help='image width (default 512)')
    parser.add_argument('--seed', type=int, default=0, help='base seed (default 0)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace a dataset this tool wrote earlier in out_dir')
    parser.add_argument('--no-panoptic', action='store_true', help='skip the COCO-panoptic files')
    add_debug_arg(parser)
    return parser.parse_args(argv)


def _main(argv):
    args = parse_args(argv)
    try:
        result = generate_synthetic_cityscapes(args.out_dir, args.num_train, args.num_val, args.height, args.width,
                                               args.seed, args.overwrite, not args.no_panoptic)
    except FileExistsError as err:
        raise UserError(str(err).replace('pass overwrite=True (CLI: --overwrite)', 'pass --overwrite')) from err
    except ValueError as err:
        raise UserError(str(err)) from err
    for split, images in result['images'].items():
        print(f'{split}: {len(images)} images; {result["instance_ann_files"][split]}')
    for split, path in result['panoptic_ann_files'].items():
        print(f'{split} panoptic: {path}')
    return result


def main(argv=None):
    """Generate; expected failures print one ``error:`` line and exit with status 2."""
    return run_tool(_main, argv)


if __name__ == '__main__':
    main()
