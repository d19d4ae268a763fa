"""Tracks Structural Coherence and Edge Fidelity of the master, auxiliary and fused pyramids during training."""
from __future__ import annotations

import os
import os.path as osp
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.dist import is_main_process
from mmengine.hooks import Hook, LoggerHook
from mmengine.model import is_model_wrapper
from torch import Tensor

from mmfusion.metrics import ProfileAccumulator, save_profile
from mmfusion.registry import HOOKS
from mmfusion.utils.images import list_images, read_rgb

# ImageNet statistics in RGB order, used when the model's data preprocessor states none (SPEC §5).
_IMAGENET_MEAN = (123.675, 116.28, 103.53)
_IMAGENET_STD = (58.395, 57.12, 57.375)

Pyramid = Tuple[Sequence[Tensor], Sequence[int]]


def _fit(image: Tensor, size: Tuple[int, int]) -> Tensor:
    """Resize a uint8 (3, H, W) image to cover ``size`` keeping its aspect ratio, then centre-crop to ``size``."""
    h, w = image.shape[-2:]
    scale = max(size[0] / h, size[1] / w)
    nh, nw = max(size[0], round(h * scale)), max(size[1], round(w * scale))
    x = F.interpolate(image[None].float(), size=(nh, nw), mode='bilinear', align_corners=False, antialias=True)
    top, left = (nh - size[0]) // 2, (nw - size[1]) // 2
    x = x[..., top:top + size[0], left:left + size[1]]
    return x.round().clamp_(0, 255).to(torch.uint8)[0]


@HOOKS.register_module()
class SCEFHook(Hook):
    """Label-free SC/EF profile of the encoders, logged during training.

    Every ``interval`` training iterations (and once before training) the hook runs the backbone on a fixed set of
    probe images and computes Structural Coherence and Edge Fidelity (``mmfusion.metrics``) per stride for the master,
    the auxiliary and the fused pyramid (the output of :class:`~mmfusion.models.necks.MetricGuidedNeck`). A model
    whose backbone is not a :class:`~mmfusion.models.backbones.MasterAuxBackbone` is profiled as one ``backbone``.

    Results go to:

    - the visualizer (``vis_data/scalars.json``, the run's ``{timestamp}.json`` and any backend such as TensorBoard)
      as ``scef/{master|auxiliary|fused}/{SC|EF}_os{s}`` at step ``iter``, plus ``scef/seconds``;
    - the message hub under the same keys, and one line of the text log;
    - ``{work_dir}/scef/iter_{N}.json``, a profile in the schema of ``mmfusion.metrics.save_profile``.

    The probe runs on the main process only, with the model in eval mode and under ``torch.no_grad()``; the train
    modes of all modules are restored afterwards. Its cost is bounded by ``num_probes``, ``probe_size`` and
    ``interval``, and logged (seconds) each time.

    Args:
        interval (int): Probe every ``interval`` training iterations. Default: 1000.
        probe_images (str, optional): Folder of images; the first ``num_probes`` files by name are used. Default:
            None, i.e. the first ``num_probes`` samples of the training dataset (taken once and cached).
        num_probes (int): Number of probe images. Default: 4.
        probe_size (tuple[int, int]): (H, W) the probes are resized (to cover) and centre-cropped to. Default:
            (256, 512).
        before_train (bool): Also probe once before the first iteration. Default: True.
        strides (Sequence[int]): Strides to score (those a pyramid does not have are skipped).
            Default: (4, 8, 16, 32).
        preset (str): EF configuration of ``mmfusion.metrics.edge_fidelity``. Default: 'profiling'.
        batch_size (int): Probe images per forward pass (bounds the probe's memory). Default: 2.
        log_keys (Sequence[str]): Metrics written as scalars (the JSON profile keeps all). Default: ('SC', 'EF').
    """

    priority = 'LOW'

    def __init__(self,
                 interval: int = 1000,
                 probe_images: Optional[str] = None,
                 num_probes: int = 4,
                 probe_size: Tuple[int, int] = (256, 512),
                 before_train: bool = True,
                 strides: Sequence[int] = (4, 8, 16, 32),
                 preset: str = 'profiling',
                 batch_size: int = 2,
                 log_keys: Sequence[str] = ('SC', 'EF')) -> None:
        if interval < 1 or num_probes < 1 or batch_size < 1:
            raise ValueError('interval, num_probes and batch_size must be positive')
        if probe_images is not None and not osp.isdir(probe_images):
            raise FileNotFoundError(f'probe_images={probe_images!r} is not a folder; give a folder of images or None '
                                    'to take the first training images')
        self.interval = interval
        self.probe_images = probe_images
        self.num_probes = num_probes
        self.probe_size = (int(probe_size[0]), int(probe_size[1]))
        self.run_before_train = before_train
        self.strides = tuple(int(s) for s in strides)
        self.preset = preset
        self.batch_size = batch_size
        self.log_keys = tuple(log_keys)
        self._probes: Optional[Tensor] = None  # uint8 RGB (N, 3, H, W), cached on first use

    # ------------------------------------------------------------------ hook points
    def before_train(self, runner) -> None:
        if self.run_before_train:
            self.probe(runner, step=runner.iter)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.every_n_train_iters(runner, self.interval):
            self.probe(runner, step=runner.iter + 1)

    # ------------------------------------------------------------------ probing
    def probe(self, runner, step: int) -> Optional[Dict[str, Dict[int, Dict[str, float]]]]:
        """Score the pyramids on the probe images and log the result; returns ``{name: {stride: {metric: v}}}``."""
        if not is_main_process():
            return None
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        images = self._get_probes(runner, model)
        modes = {m: m.training for m in model.modules()}
        start = time.perf_counter()
        model.eval()
        try:
            with torch.no_grad():
                profiles = self._profile(model, images)
        finally:
            # Restore each module's own flag: calling model.train() would undo eval modes set on purpose.
            for m, training in modes.items():
                m.training = training
        seconds = time.perf_counter() - start
        self._write(runner, step, profiles, seconds, model)
        return profiles

    def _profile(self, model: nn.Module, images: Tensor) -> Dict[str, Dict[int, Dict[str, float]]]:
        device = next(model.parameters()).device
        accumulators: Dict[str, ProfileAccumulator] = {}
        for chunk in images.split(self.batch_size):
            x = self._normalise(chunk, model).to(device)
            rgb = chunk.to(device)
            for name, (feats, strides) in self._pyramids(model, x).items():
                keep = [i for i, s in enumerate(strides) if s in self.strides]
                if not keep:
                    continue
                if name not in accumulators:
                    accumulators[name] = ProfileAccumulator(tuple(strides[i] for i in keep), self.preset)
                accumulators[name].update([feats[i] for i in keep], rgb)
        return {name: acc.compute() for name, acc in accumulators.items()}

    def _pyramids(self, model: nn.Module, x: Tensor) -> Dict[str, Pyramid]:
        from mmfusion.models.backbones.master_aux import MasterAuxBackbone
        from mmfusion.models.necks.metric_guided_neck import MetricGuidedNeck
        backbone = getattr(model, 'backbone', None)
        if backbone is None:
            backbone = next((m for m in model.modules() if isinstance(m, MasterAuxBackbone)), None)
        if backbone is None:
            raise RuntimeError('SCEFHook needs a model with a `backbone` (ideally an mmfusion.MasterAuxBackbone)')
        if not isinstance(backbone, MasterAuxBackbone):
            feats = tuple(backbone(x))
            return dict(backbone=(feats, _strides_of(backbone, len(feats), self.strides)))
        out = backbone(x)
        pyramids = dict(master=(out.master, _strides_of(backbone.master, len(out.master), self.strides)),
                        auxiliary=(out.auxiliary, _strides_of(backbone.auxiliary, len(out.auxiliary),
                                                              self.strides)))
        neck = getattr(model, 'neck', None)
        if isinstance(neck, MetricGuidedNeck):
            pyramids['fused'] = (neck(out), neck.strides)
        return pyramids

    @staticmethod
    def _normalise(images: Tensor, model: nn.Module) -> Tensor:
        """uint8 RGB to what the backbone gets from the model's data preprocessor (ImageNet mean/std if unstated)."""
        x = images.float()
        pre = getattr(model, 'data_preprocessor', None)
        enabled = getattr(pre, '_enable_normalize', None)
        if enabled is None:
            mean = x.new_tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
            std = x.new_tensor(_IMAGENET_STD).view(1, 3, 1, 1)
            return (x - mean) / std
        if enabled:
            mean, std = pre.mean.to(x).view(1, -1, 1, 1), pre.std.to(x).view(1, -1, 1, 1)
            return (x - mean) / std
        return x

    # ------------------------------------------------------------------ probe images
    def _get_probes(self, runner, model: nn.Module) -> Tensor:
        if self._probes is None:
            if self.probe_images is not None:
                images = self._load_folder()
            else:
                images = self._from_dataset(runner, model)
            self._probes = torch.stack([_fit(im, self.probe_size) for im in images])
        return self._probes

    def _load_folder(self) -> List[Tensor]:
        try:
            paths = list_images(self.probe_images, self.num_probes)
        except FileNotFoundError as e:
            raise FileNotFoundError(f'SCEFHook probe_images: {e}') from None
        return [read_rgb(p) for p in paths]

    def _from_dataset(self, runner, model: nn.Module) -> List[Tensor]:
        dataset = runner.train_dataloader.dataset
        pre = getattr(model, 'data_preprocessor', None)
        # Datasets hand images in the order the data preprocessor expects; bring them to RGB as the backbone sees.
        flip = bool(getattr(pre, '_channel_conversion', getattr(pre, 'channel_conversion', False)))
        images = []
        for i in range(min(self.num_probes, len(dataset))):
            sample = dataset[i]
            image = sample.get('inputs') if isinstance(sample, dict) else None
            if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
                raise TypeError('SCEFHook could not take a (3, H, W) image from train_dataloader.dataset[i]["inputs"]; '
                                'set probe_images to a folder of images')
            images.append(image.flip(0) if flip else image)
        return images

    # ------------------------------------------------------------------ output
    def _write(self, runner, step: int, profiles: Dict[str, Dict[int, Dict[str, float]]], seconds: float,
               model: nn.Module) -> None:
        scalars = {}
        for name, per_stride in profiles.items():
            for s, metrics in per_stride.items():
                for key in self.log_keys:
                    if key in metrics:
                        scalars[f'scef/{name}/{key}_os{s}'] = metrics[key]
        scalars['scef/seconds'] = seconds
        for key, value in scalars.items():
            runner.message_hub.update_scalar(key, value)
        logger_hook = next((h for h in runner.hooks if isinstance(h, LoggerHook)), None)
        json_log = getattr(logger_hook, 'json_log_path', None)
        runner.visualizer.add_scalars(scalars, step=step, file_path=json_log)

        path = osp.join(runner.work_dir, 'scef', f'iter_{step}.json')
        os.makedirs(osp.dirname(path), exist_ok=True)
        selection = None
        neck = getattr(model, 'neck', None)
        if 'auxiliary' in profiles and hasattr(neck, 'inject_strides'):
            inject = list(neck.inject_strides)
            selection = dict(master='master', auxiliary='auxiliary', inject_stride=inject[0] if len(inject) == 1
                             else inject)
        meta = dict(iter=step, num_probes=int(self._probes.shape[0]), probe_size=list(self.probe_size),
                    preset=self.preset, seconds=seconds,
                    probe_source=self.probe_images or 'train_dataloader.dataset')
        save_profile(path, {name: {int(s): m for s, m in p.items()} for name, p in profiles.items()},
                     selection=selection, meta=meta)
        summary = ', '.join(f'{k[5:]}={v:.3f}' for k, v in scalars.items() if k != 'scef/seconds')
        runner.logger.info(f'SCEF at iter {step} on {self._probes.shape[0]} probes ({seconds:.1f}s): {summary}')


def _strides_of(module: nn.Module, n: int, default: Sequence[int]) -> Tuple[int, ...]:
    strides = getattr(module, 'out_strides', None)
    if strides is None:
        if n != len(default):
            raise RuntimeError(f'{type(module).__name__} returns {n} maps and states no out_strides; expose '
                               'out_strides on the backbone')
        strides = default
    return tuple(int(s) for s in strides)
