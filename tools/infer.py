"""Run an mmfusion model on an image, a folder of images or a video and write overlays.

    python tools/infer.py CONFIG CHECKPOINT INPUT --out-dir outputs/ [--device cuda] [--max-side 4096]
        [--cfg-options ...] [--debug]

INPUT: an image file, a folder of images, or a video file (.mp4/.avi/...). Images: overlays in OUT_DIR/vis/ and
predictions in OUT_DIR/preds/ (instance/panoptic) ; video: OUT_DIR/<name>_overlay.mp4. OUT_DIR must be new, empty,
or an earlier OUT_DIR of this tool. In a folder, an image that cannot be read is skipped with a warning; an image
larger than --max-side is read at the size the test pipeline resizes it to (a note says so).
"""
import argparse
import os.path as osp

from mmfusion.apis.inference import FusionInferencer, add_infer_args, check_infer_input, predict_and_write
from mmfusion.apis.runner_utils import run_tool
from mmfusion.utils.errors import UserError
from mmfusion.utils.fileio import claim_dir


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    add_infer_args(parser)
    parser.add_argument('--device', default='cpu')
    return parser.parse_args(argv)


def _main(argv):
    args = parse_args(argv)
    check_infer_input(args.input)
    if not osp.isfile(args.checkpoint):
        raise UserError(f'checkpoint not found: {args.checkpoint}; pass the .pth written by tools/train.py')
    from mmfusion.compat import checkpoint_problem
    problem = checkpoint_problem(args.checkpoint)  # before the model is built
    if problem is not None:
        raise UserError(f'checkpoint {args.checkpoint} {problem}; pass an intact checkpoint written by tools/train.py')
    claim_dir(args.out_dir, 'infer', '--out-dir', create=False)  # refuse a user's folder before building
    infer = FusionInferencer(args.config, args.checkpoint, device=args.device, cfg_options=args.cfg_options,
                             max_side=args.max_side)
    claim_dir(args.out_dir, 'infer', '--out-dir')
    result, line = predict_and_write(infer, args.input, args.out_dir, args.max_frames)
    print(line)
    return result


def main(argv=None):
    """Predict; returns the inferencer's result. Expected failures print one ``error:`` line and exit with 2."""
    return run_tool(_main, argv)


if __name__ == '__main__':
    main()
