"""Run an mmfusion model on an image, a folder of images or a video and write overlays.

    python tools/infer.py CONFIG CHECKPOINT INPUT --out-dir outputs/ [--device cuda] [--cfg-options ...]

INPUT: an image file, a folder of images, or a video file (.mp4/.avi/...). Images: overlays in OUT_DIR/vis/ and
predictions in OUT_DIR/preds/ (instance/panoptic) ; video: OUT_DIR/<name>_overlay.mp4.
"""
import argparse
import os.path as osp
import sys

from mmengine.config import DictAction

from mmfusion.apis.inference import VIDEO_EXTS, FusionInferencer


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('input', help='image, folder of images, or video')
    parser.add_argument('--out-dir', default='outputs')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--max-frames', type=int, default=None, help='video: stop after this many frames')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(argv)
    if not osp.exists(args.input):
        sys.exit(f'error: input not found: {args.input}')
    infer = FusionInferencer(args.config, args.checkpoint, device=args.device, cfg_options=args.cfg_options)
    if args.input.lower().endswith(VIDEO_EXTS):
        out = osp.join(args.out_dir, osp.splitext(osp.basename(args.input))[0] + '_overlay.mp4')
        n = infer.video(args.input, out, max_frames=args.max_frames)
        print(f'wrote {out} ({n} frames)')
    else:
        infer(args.input, out_dir=args.out_dir)
        print(f'wrote overlays to {osp.join(args.out_dir, "vis")}')


if __name__ == '__main__':
    main()
