"""ONNX Runtime inference with the same outputs as ``tools/infer.py``, without building the PyTorch model or reading a
checkpoint.

:class:`OnnxInferencer` is :class:`~mmfusion.apis.inference.FusionInferencer` (image reading, skip-and-report of
unreadable images, huge images read small, videos) around the same stock mmdet ``DetInferencer`` / mmseg
``MMSegInferencer`` (test pipeline, overlays in ``vis/``, predictions in ``pred/`` / ``preds/``, file names), whose
model is an :class:`OrtModel`: the config's data preprocessor (no weights), an ONNX Runtime session on the exported
graph, and :mod:`mmfusion.deployment.postprocess` (the stock post-processing, shared with PyTorch). Class names and
palette come from the export record in the ``.onnx`` (the checkpoint's, as ``tools/infer.py`` shows them).
"""
from __future__ import annotations

import os.path as osp
from typing import Optional, Sequence, Union

import numpy as np
import torch
from mmengine.config import Config
from mmengine.model import BaseModel

from mmfusion.apis.inference import DEFAULT_MAX_SIDE, FusionInferencer
from mmfusion.apis.runner_utils import check_cfg_options, read_config
from mmfusion.utils.errors import UserError, one_line

from .export import INPUT_NAME, model_task, preprocess_record, read_spec
from .postprocess import SEMANTIC, build_fusion_head, det_postprocess, seg_postprocess

__all__ = ['OrtSession', 'OrtModel', 'OnnxInferencer', 'providers_for', 'check_onnx_file']


def check_onnx_file(path: str) -> None:
    """Refuse a ``.onnx`` path that is not a file."""
    if not osp.isfile(path):
        raise UserError(f'ONNX file not found: {path}; export one with tools/deployment/pytorch2onnx.py')


def providers_for(device: str) -> list:
    """ONNX Runtime execution providers for ``device`` (``'cpu'`` or ``'cuda'`` / ``'cuda:N'``).

    Raises:
        UserError: CUDA asked for and this onnxruntime has no CUDA execution provider.
    """
    import onnxruntime as ort
    if device == 'cpu':
        return ['CPUExecutionProvider']
    if device.startswith('cuda'):
        if 'CUDAExecutionProvider' not in ort.get_available_providers():
            raise UserError(f'--device {device}: this onnxruntime has no CUDA execution provider (available: '
                            f'{", ".join(ort.get_available_providers())}); install onnxruntime-gpu for a GPU, or '
                            'use --device cpu')
        index = int(device.split(':')[1]) if ':' in device else 0
        return [('CUDAExecutionProvider', dict(device_id=index)), 'CPUExecutionProvider']
    raise UserError(f"--device {device}: use 'cpu' or 'cuda' (or 'cuda:N')")


class OrtSession:
    """An ONNX Runtime session on a file written by ``tools/deployment/pytorch2onnx.py``, with its export record.

    Args:
        path (str): The ``.onnx`` file.
        device (str): ``'cpu'`` or ``'cuda[:N]'``. Default: ``'cpu'``.
        threads (int, optional): Intra-op threads (None: onnxruntime's default, one per core).

    Raises:
        FileNotFoundError / UserError: missing, unreadable or foreign file; CUDA asked for but not available.
    """

    def __init__(self, path: str, device: str = 'cpu', threads: Optional[int] = None) -> None:
        import onnx
        import onnxruntime as ort
        check_onnx_file(path)
        try:
            proto = onnx.load(path, load_external_data=False)
        except Exception as e:  # noqa: BLE001 (protobuf's DecodeError and others: a file that is not an ONNX model)
            raise UserError(f'cannot read {path} as an ONNX model ({type(e).__name__}: {one_line(e)[:160]}); '
                            'export it again with tools/deployment/pytorch2onnx.py') from e
        self.spec = read_spec(proto, path)
        del proto
        data = self.spec.get('external_data')
        if data and not osp.isfile(osp.join(osp.dirname(path), data)):
            raise UserError(f'{path} keeps its weights in {data}, which is not beside it; copy {data} into '
                            f'{osp.dirname(path) or "."} with it (the two files move together)')
        self.path = path
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(path, opts, providers=providers_for(device))
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 (onnxruntime's Fail / InvalidGraph / ...)
            raise UserError(f'onnxruntime cannot load {path} ({type(e).__name__}: {one_line(e)[:200]}); export it '
                            'again with tools/deployment/pytorch2onnx.py') from e
        self.output_names = list(self.spec['outputs'])
        self.input_hw = tuple(self.spec['input'][3:5])

    @property
    def providers(self) -> list:
        return self.session.get_providers()

    def check_input(self, shape: Sequence[int], name: str = 'the image') -> None:
        """Refuse an input the graph was not exported for: a static graph runs only its export's height and width,
        and a static batch only one image."""
        dyn = self.spec['dynamic']
        b, _, h, w = shape
        eh, ew = self.input_hw
        if not dyn['spatial'] and (h, w) != (eh, ew):
            raise UserError(f'{name} reaches the model as {h}x{w} px, but {self.path} was exported with a static '
                            f'input size of {eh}x{ew} px; export it again with --shape {h} {w} for this size')
        if not dyn['batch'] and b != 1:
            raise UserError(f'a batch of {b} images, but {self.path} was exported with a static batch of 1; export '
                            'it again with --dynamic batch, or pass one image at a time')

    def run(self, inputs: Union[torch.Tensor, np.ndarray]) -> list:
        """The graph's outputs (numpy, in :attr:`output_names` order) for a preprocessed (B, 3, H, W) batch."""
        x = inputs.detach().cpu().numpy() if isinstance(inputs, torch.Tensor) else np.asarray(inputs)
        self.check_input(x.shape)
        return self.session.run(self.output_names, {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})


class OrtModel(BaseModel):
    """Stands in for the PyTorch model inside the stock inferencers: ``test_step`` preprocesses with the config's
    data preprocessor, runs the graph in ONNX Runtime and post-processes with the stock code.

    Args:
        cfg (Config): The model's config (data preprocessor, post-processing settings).
        session (OrtSession): The exported graph.
    """

    def __init__(self, cfg: Config, session: OrtSession) -> None:
        super().__init__(data_preprocessor=cfg.model.get('data_preprocessor'))
        self.session = session
        spec = session.spec
        self.task = spec['task']
        meta = spec.get('dataset_meta') or {}
        palette = meta.get('palette')
        if isinstance(palette, list):
            meta['palette'] = [tuple(c) for c in palette]  # JSON turned the tuples into lists
        self.dataset_meta = meta
        self.cfg = cfg
        self.fusion_head = None if self.task == SEMANTIC else build_fusion_head(cfg.model)

    def forward(self, inputs, data_samples=None, mode: str = 'predict'):
        if mode != 'predict':
            raise RuntimeError('an ONNX Runtime model only predicts')
        return self.predict(inputs, data_samples)

    def predict(self, inputs: torch.Tensor, data_samples: Sequence) -> list:
        paths = [s.metainfo.get('img_path') for s in data_samples]
        self.session.check_input(tuple(inputs.shape), ', '.join(p for p in paths if p) or 'the image')
        outs = [torch.from_numpy(o) for o in self.session.run(inputs)]
        if self.task == SEMANTIC:
            spec = self.session.spec
            return seg_postprocess(outs[0], data_samples, spec['align_corners'], spec.get('threshold'))
        return det_postprocess(outs[0], outs[1], data_samples, self.fusion_head)


class _OrtModelLoader:
    """Mixin for a stock inferencer: its model is an :class:`OrtModel` (the session comes with the class)."""

    _session: Optional[OrtSession] = None

    def _init_model(self, cfg, weights, device='cpu'):
        return OrtModel(cfg, self._session).eval()


class OnnxInferencer(FusionInferencer):
    """:class:`~mmfusion.apis.inference.FusionInferencer` with an exported ``.onnx`` instead of the PyTorch model.

    Args:
        config (str | Config): The config the model was exported from (test pipeline, data preprocessor,
            post-processing settings; nothing is built from its backbone or head).
        onnx_file (str): Written by ``tools/deployment/pytorch2onnx.py``.
        device (str): ONNX Runtime device, ``'cpu'`` or ``'cuda[:N]'`` (CUDA execution provider). Pre- and
            post-processing run on the CPU. Default: ``'cpu'``.
        cfg_options (dict, optional): Overrides merged into the config.
        max_side (int): As in :class:`FusionInferencer`.
        threads (int, optional): ONNX Runtime intra-op threads.

    Raises:
        UserError: a missing or foreign ``.onnx``, one exported for another task than the config's, CUDA without a
            CUDA execution provider.
    """

    def __init__(self, config: Union[str, Config], onnx_file: str, device: str = 'cpu',
                 cfg_options: Optional[dict] = None, max_side: int = DEFAULT_MAX_SIDE,
                 threads: Optional[int] = None) -> None:
        cfg = read_config(config) if isinstance(config, str) else config.copy()
        if cfg_options:
            check_cfg_options(cfg, cfg_options)
            cfg.merge_from_dict(cfg_options)
        name = config if isinstance(config, str) else (cfg.filename or 'the config')
        task = model_task(cfg, name)
        session = OrtSession(onnx_file, device=device, threads=threads)
        if session.spec['task'] != task:
            raise UserError(f'{onnx_file} was exported for {session.spec["task"]} segmentation, but {name} is a '
                            f'config for {task} segmentation; pass the config it was exported from '
                            f'({session.spec.get("config")})')
        recorded = session.spec.get('preprocess')
        if recorded is not None and recorded != preprocess_record(cfg):
            diff = sorted(k for k in recorded if recorded[k] != preprocess_record(cfg).get(k))
            raise UserError(f'{name} prepares images otherwise than the model {onnx_file} was exported from '
                            f'(model.data_preprocessor {", ".join(diff)}: '
                            f'{", ".join(f"{recorded[k]} at export" for k in diff)}); pass the config it was '
                            f'exported from ({session.spec.get("config")})')
        self.session = session
        self._mixin = type('OrtModelLoader', (_OrtModelLoader, ), {'_session': session})
        super().__init__(cfg, None, device='cpu', max_side=max_side)
