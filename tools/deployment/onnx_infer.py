"""Run an exported mmfusion model (tools/deployment/pytorch2onnx.py) with ONNX Runtime on an image, a folder of
images or a video: the same outputs as tools/infer.py, without PyTorch weights.

    python tools/deployment/onnx_infer.py CONFIG FILE.onnx INPUT --out-dir outputs/ [--device cpu|cuda]
        [--threads N] [--max-side 4096] [--max-frames N] [--cfg-options ...] [--debug]

CONFIG is the config the file was exported from: its test pipeline, data preprocessor and post-processing settings
are used, nothing is built from its backbone or head and no checkpoint is read (class names and palette come from
the file). Outputs as tools/infer.py writes them: OUT_DIR/vis/ overlays, OUT_DIR/pred/ label maps (semantic) or
OUT_DIR/preds/ (instance/panoptic), OUT_DIR/<name>_overlay.mp4 for a video; OUT_DIR must be new, empty, or an
earlier OUT_DIR of tools/infer.py or of this tool. Unreadable images in a folder are skipped with a warning.
--device cuda uses ONNX Runtime's CUDA execution provider (onnxruntime-gpu).
"""
import argparse

from mmfusion.apis.inference import add_infer_args, check_infer_input, predict_and_write
from mmfusion.apis.runner_utils import run_tool
from mmfusion.utils.fileio import claim_dir


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('onnx', help='the .onnx written by tools/deployment/pytorch2onnx.py')
    add_infer_args(parser)
    parser.add_argument('--device', default='cpu', help='cpu, or cuda[:N] (ONNX Runtime CUDA execution provider)')
    parser.add_argument('--threads', type=int, default=None, help='ONNX Runtime intra-op threads (default: all)')
    return parser.parse_args(argv)


def _main(argv):
    args = parse_args(argv)
    check_infer_input(args.input)
    from mmfusion.deployment.runtime import OnnxInferencer, check_onnx_file
    check_onnx_file(args.onnx)
    claim_dir(args.out_dir, 'infer', '--out-dir', create=False)  # refuse a user's folder before loading
    infer = OnnxInferencer(args.config, args.onnx, device=args.device, cfg_options=args.cfg_options,
                           max_side=args.max_side, threads=args.threads)
    claim_dir(args.out_dir, 'infer', '--out-dir')
    result, line = predict_and_write(infer, args.input, args.out_dir, args.max_frames)
    providers = ', '.join(p if isinstance(p, str) else p[0] for p in infer.session.providers)
    print(f'{line} (ONNX Runtime: {providers})')
    return result


def main(argv=None):
    """Predict with ONNX Runtime; returns the inferencer's result. Expected failures print one ``error:`` line and
    exit with 2."""
    return run_tool(_main, argv)


if __name__ == '__main__':
    main()
