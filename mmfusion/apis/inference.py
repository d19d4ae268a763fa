"""Inference for users: mmdet's ``DetInferencer`` or mmseg's ``MMSegInferencer`` on an mmfusion config, chosen by
the config's scope, plus a video loop (neither inferencer reads videos).

On top of the stock inferencers: a checkpoint that does not fit the config's model is refused (MMEngine would only
log it and predict with random weights); every image is read once before the model runs, so a file that cannot be
read is named (and skipped, with a warning, when it is one of several); an image whose longer side exceeds
``max_side`` is read directly at the size the test pipeline resizes it to (or at ``max_side`` when the pipeline keeps
the size), so a huge photo never enters the pipeline at full size.

Example:
    >>> from mmfusion.apis.inference import FusionInferencer
    >>> infer = FusionInferencer('configs/mask2former_d3s2_cityscapes.py',  # doctest: +SKIP
    ...                          'work_dirs/x/iter_180000.pth')
    >>> result = infer('demo.png', out_dir='outputs/')  # doctest: +SKIP
"""
from __future__ import annotations

import os
import os.path as osp
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import Optional, Union

import numpy as np
from mmengine.config import Config

from mmfusion.apis.checkpoint_fit import refuse_mismatch
from mmfusion.apis.runner_utils import check_cfg_options, read_config
from mmfusion.utils.errors import UnreadableImageError, UserError, one_line
from mmfusion.utils.images import check_image, fit_size, image_size, list_images, read_image
from mmfusion.utils.normalisation import check_input_normalisation

VIDEO_EXTS = ('.mp4', '.avi', '.mov', '.mkv', '.webm')
DEFAULT_MAX_SIDE = 4096


class _FitCheck:
    """Mixin for a stock inferencer: check the checkpoint against the model before the stock code loads it."""

    _source: Optional[str] = None
    _config_name: str = 'the config'

    def _load_weights_to_model(self, model, checkpoint, cfg) -> None:
        if checkpoint is not None:
            refuse_mismatch(model, checkpoint, self._source, self._config_name, model_cfg=cfg.get('model'))
        super()._load_weights_to_model(model, checkpoint, cfg)


def test_resize(cfg: Config) -> Optional[tuple[tuple[int, int], bool]]:
    """``((w, h), keep_ratio)`` of the ``Resize`` step with a fixed ``scale`` in the test pipeline, or None."""
    pipeline = cfg.get('test_dataloader', {}).get('dataset', {}).get('pipeline') or []
    for step in pipeline:
        if isinstance(step, Mapping) and str(step.get('type', '')).split('.')[-1] == 'Resize' \
                and step.get('scale') is not None:
            scale = step['scale']
            scale = (scale, scale) if isinstance(scale, int) else tuple(int(v) for v in scale)
            return scale, bool(step.get('keep_ratio', False))
    return None


def resized_size(width: int, height: int, scale: Sequence[int], keep_ratio: bool) -> tuple[int, int]:
    """The ``(w, h)`` mmcv's ``Resize`` gives an image of ``width`` x ``height`` for ``scale`` (same rounding)."""
    if not keep_ratio:
        return int(scale[0]), int(scale[1])
    factor = min(max(scale) / max(width, height), min(scale) / min(width, height))
    return int(width * factor + 0.5), int(height * factor + 0.5)


class FusionInferencer:
    """Predict and draw overlays with an mmfusion model of either scope.

    Args:
        config (str | Config): mmfusion config (mmdet- or mmseg-scoped).
        checkpoint (str, optional): Trained weights. Default: None (random head; only for smoke tests).
        device (str): Torch device. Default: 'cpu'.
        cfg_options (dict, optional): Overrides merged into the config. Default: None.
        max_side (int): Longest image side read as is; a larger image is read at the size the test pipeline
            resizes it to (or at ``max_side`` when the pipeline keeps the size), which bounds memory.
            Default: 4096.

    Raises:
        FileNotFoundError: the config or checkpoint does not exist.
        UserError: a bad config, ``cfg_options`` key or device, or a checkpoint that does not fit the model.
    """

    # Mixed into the stock inferencer class ahead of it: how its model gets its weights. ONNX Runtime inference
    # (mmfusion.deployment.runtime) puts one there that runs an exported graph instead.
    _mixin: type = _FitCheck

    def __init__(self, config: Union[str, Config], checkpoint: Optional[str] = None, device: str = 'cpu',
                 cfg_options: Optional[dict] = None, max_side: int = DEFAULT_MAX_SIDE) -> None:
        import torch

        import mmfusion.registry  # noqa: F401  (compat fixes and registries, before anything builds)
        cfg = read_config(config) if isinstance(config, str) else config.copy()
        if cfg_options:
            check_cfg_options(cfg, cfg_options)
            cfg.merge_from_dict(cfg_options)
        if checkpoint is not None and not osp.isfile(checkpoint):
            raise FileNotFoundError(f'checkpoint not found: {checkpoint} (train one with tools/train.py)')
        if str(device).startswith('cuda') and not torch.cuda.is_available():
            raise UserError(f'device {device} asked for, but CUDA is not available; use the CPU (--device cpu)')
        if max_side < 1:
            raise UserError(f'max_side must be a positive number of pixels, got {max_side}')
        self.max_side = int(max_side)
        self.resize = test_resize(cfg)
        self.scope = cfg.get('default_scope')
        if self.scope == 'mmdet':
            from mmdet.apis import DetInferencer
            cls = type('CheckedDetInferencer', (self._mixin, DetInferencer), {})
            kwargs = dict(show_progress=False)
        elif self.scope == 'mmseg':
            from mmseg.apis import MMSegInferencer
            cls = type('CheckedSegInferencer', (self._mixin, MMSegInferencer), {})
            kwargs = {}
        else:
            raise UserError(f"config scope {self.scope!r} is neither 'mmdet' nor 'mmseg'; use an mmfusion config")
        cls._source = checkpoint
        cls._config_name = config if isinstance(config, str) else (config.filename or 'the config')
        self._inferencer = cls(model=cfg, weights=checkpoint, device=device, scope=self.scope, **kwargs)
        check_input_normalisation(self._inferencer.model)  # the data preprocessor gives the encoders their input

    def read_size(self, width: int, height: int) -> Optional[tuple[tuple[int, int], str]]:
        """``((w, h), why)`` to read an image of ``width`` x ``height`` at, or None to read it as it is."""
        if max(width, height) <= self.max_side:
            return None
        if self.resize is not None:
            scale, keep_ratio = self.resize
            size = resized_size(width, height, scale, keep_ratio)
            if size[0] * size[1] >= width * height:
                return None  # the pipeline enlarges it anyway; reading it smaller would only lose detail
            return size, f'the size the test pipeline resizes it to (Resize scale={scale}, keep_ratio={keep_ratio})'
        return fit_size(width, height, self.max_side), 'the limit, as the test pipeline does not resize'

    def prepare(self, paths: Sequence[str], tmp_dir: str, skip_bad: bool) -> tuple[list[str], list[tuple]]:
        """Read every image once: the paths to predict (a huge image is written downscaled into ``tmp_dir`` under
        its own name) and the ``(path, reason)`` of the skipped ones.

        Raises:
            UnreadableImageError: an image cannot be read and ``skip_bad`` is False.
        """
        ready, skipped = [], []
        for path in paths:
            try:
                width, height = image_size(path)
                plan = self.read_size(width, height)
                if plan is None:
                    check_image(path)
                    ready.append(path)
                    continue
                size, why = plan
                small = osp.join(tmp_dir, osp.basename(path))
                from PIL import Image
                Image.fromarray(read_image(path, size, bounded=True)).save(small, quality=95, compress_level=1)
                print(f'note: {path} is {width}x{height} px, over the {self.max_side} px limit (max_side): read at '
                      f'{size[0]}x{size[1]}, {why}', file=sys.stderr)
                ready.append(small)
            except (UnreadableImageError, FileNotFoundError) as e:
                if not skip_bad:
                    raise
                print(f'warning: skipped {path}: {one_line(e)}', file=sys.stderr)
                skipped.append((path, one_line(e)))
        return ready, skipped

    def __call__(self, inputs: Union[str, np.ndarray, Sequence], out_dir: str = '', **kwargs) -> dict:
        """Run on an image path, a folder, a list of paths, or arrays (BGR, as the stock inferencers take them).

        Overlays are written to ``{out_dir}/vis/`` when ``out_dir`` is set. A folder or list skips the images that
        cannot be read (listed, with the reason, under the result's ``'skipped'``); a single file that cannot be
        read raises :class:`UnreadableImageError` naming it.
        """
        single = isinstance(inputs, str) and not osp.isdir(inputs)
        if isinstance(inputs, str):
            if not osp.exists(inputs):
                raise FileNotFoundError(f'input not found: {inputs}')
            paths = list_images(inputs) if osp.isdir(inputs) else [inputs]
        elif isinstance(inputs, (list, tuple)) and all(isinstance(p, str) for p in inputs):
            paths = list(inputs)
        else:
            return self._predict(inputs, out_dir, **kwargs)
        with tempfile.TemporaryDirectory(prefix='mmfusion_infer_') as tmp:
            ready, skipped = self.prepare(paths, tmp, skip_bad=not single)
            if not ready:
                raise UserError(f'none of the {len(paths)} images of {inputs} can be read (first: {skipped[0][1]}); '
                                'replace or remove them')
            result = self._predict(ready, out_dir, **kwargs)
        result['skipped'] = skipped
        return result

    def _predict(self, inputs, out_dir: str, **kwargs) -> dict:
        if self.scope == 'mmdet':
            return self._inferencer(inputs, out_dir=out_dir, no_save_pred=not out_dir, **kwargs)
        return self._inferencer(inputs, out_dir=out_dir, **kwargs)

    def video(self, path: str, out_path: str, max_frames: Optional[int] = None) -> int:
        """Predict every frame of a video and write an overlay video (mp4v). Returns the frame count."""
        import cv2
        cap = cv2.VideoCapture(path)
        if not cap.isOpened():
            raise FileNotFoundError(f'cannot open video {path} (is it a readable {"/".join(VIDEO_EXTS)} file?)')
        fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
        writer, n = None, 0
        try:
            while max_frames is None or n < max_frames:
                ok, frame = cap.read()
                if not ok:
                    break
                vis = self._inferencer(frame, return_vis=True, **({'no_save_pred': True}
                                                                   if self.scope == 'mmdet' else {}))
                painted = vis['visualization'][0]  # RGB
                if writer is None:
                    os.makedirs(osp.dirname(osp.abspath(out_path)), exist_ok=True)
                    h, w = painted.shape[:2]
                    writer = cv2.VideoWriter(out_path, cv2.VideoWriter_fourcc(*'mp4v'), fps, (w, h))
                writer.write(cv2.cvtColor(painted, cv2.COLOR_RGB2BGR))
                n += 1
        finally:
            cap.release()
            if writer is not None:
                writer.release()
        if n == 0:
            raise UserError(f'no frame could be read from {path}; check that the video plays')
        return n


def add_infer_args(parser) -> None:
    """The arguments ``tools/infer.py`` and ``tools/deployment/onnx_infer.py`` share, after their model argument:
    the input, the output folder and how inputs are read."""
    from mmengine.config import DictAction

    from mmfusion.apis.runner_utils import add_debug_arg
    parser.add_argument('input', help='image, folder of images, or video')
    parser.add_argument('--out-dir', default='outputs', help='output folder (new, empty, or made by an infer tool)')
    parser.add_argument('--max-frames', type=int, default=None, help='video: stop after this many frames')
    parser.add_argument('--max-side', type=int, default=DEFAULT_MAX_SIDE,
                        help=f'images with a longer side are read downscaled (default: {DEFAULT_MAX_SIDE} px)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    add_debug_arg(parser)


def check_infer_input(path: str) -> None:
    """Refuse an input that does not exist, before anything is loaded."""
    if not osp.exists(path):
        raise UserError(f'input not found: {path}; pass an image, a folder of images or a video')


def predict_and_write(infer, inputs: str, out_dir: str, max_frames: Optional[int] = None) -> tuple[dict, str]:
    """What ``tools/infer.py`` and ``tools/deployment/onnx_infer.py`` do with an inferencer: a video's overlay video,
    or the images' ``vis/`` overlays and ``pred/`` maps; returns the result and the line that says what was written.

    Args:
        infer (FusionInferencer): The inferencer (PyTorch, or ONNX Runtime's subclass).
        inputs (str): An image, a folder of images or a video.
        out_dir (str): The output folder (claimed by the caller).
        max_frames (int, optional): Video: stop after this many frames. Defaults to None.
    """
    if inputs.lower().endswith(VIDEO_EXTS):
        out = osp.join(out_dir, osp.splitext(osp.basename(inputs))[0] + '_overlay.mp4')
        n = infer.video(inputs, out, max_frames=max_frames)
        return dict(video=out, frames=n), f'wrote {out} ({n} frames)'
    result = infer(inputs, out_dir=out_dir)
    preds = result['predictions']
    # Per-image lists (mmdet, or several images), but one mmseg image's prediction itself: count what was written.
    done = len(preds) if isinstance(preds, list) else 1
    skipped = f', skipped {len(result["skipped"])} unreadable' if result['skipped'] else ''
    return result, f'wrote overlays of {done} image(s) to {osp.join(out_dir, "vis")}{skipped}'
