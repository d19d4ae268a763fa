"""Inference for users: mmdet's ``DetInferencer`` or mmseg's ``MMSegInferencer`` on an mmfusion config, chosen by
the config's scope, plus a video loop (neither inferencer reads videos).

Example:
    >>> from mmfusion.apis import FusionInferencer
    >>> infer = FusionInferencer('configs/mask2former_d3s2_cityscapes.py', 'work_dirs/x/iter_90000.pth')
    >>> result = infer('demo.png', out_dir='outputs/')  # overlays in outputs/vis/
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Optional, Sequence, Union

import numpy as np
from mmengine.config import Config

from mmfusion.utils.images import list_images

VIDEO_EXTS = ('.mp4', '.avi', '.mov', '.mkv', '.webm')


class FusionInferencer:
    """Predict and draw overlays with an mmfusion model of either scope.

    Args:
        config (str | Config): mmfusion config (mmdet- or mmseg-scoped).
        checkpoint (str, optional): Trained weights. Default: None (random head; only for smoke tests).
        device (str): Torch device. Default: 'cpu'.
        cfg_options (dict, optional): Overrides merged into the config. Default: None.
    """

    def __init__(self, config: Union[str, Config], checkpoint: Optional[str] = None, device: str = 'cpu',
                 cfg_options: Optional[dict] = None) -> None:
        import mmfusion  # noqa: F401
        cfg = Config.fromfile(config) if isinstance(config, str) else config.copy()
        if cfg_options:
            cfg.merge_from_dict(cfg_options)
        if checkpoint is not None and not osp.isfile(checkpoint):
            raise FileNotFoundError(f'checkpoint not found: {checkpoint} (train one with tools/train.py)')
        self.scope = cfg.get('default_scope')
        if self.scope == 'mmdet':
            from mmdet.apis import DetInferencer
            self._inferencer = DetInferencer(model=cfg, weights=checkpoint, device=device, scope='mmdet',
                                             show_progress=False)
        elif self.scope == 'mmseg':
            from mmseg.apis import MMSegInferencer
            self._inferencer = MMSegInferencer(model=cfg, weights=checkpoint, device=device, scope='mmseg')
        else:
            raise ValueError(f"config scope {self.scope!r} is neither 'mmdet' nor 'mmseg'")

    def __call__(self, inputs: Union[str, np.ndarray, Sequence], out_dir: str = '', **kwargs) -> dict:
        """Run on an image path, a folder, an array (RGB... as the stock inferencers: BGR arrays) or a list.

        Overlays are written to ``{out_dir}/vis/`` when ``out_dir`` is set.
        """
        if isinstance(inputs, str) and osp.isdir(inputs):
            inputs = list_images(inputs)
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
            raise ValueError(f'no frame could be read from {path}')
        return n
