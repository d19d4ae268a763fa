"""Tracks Structural Coherence and Edge Fidelity of the master, auxiliary and fused pyramids during training."""
from __future__ import annotations

import os
import os.path as osp
import random
import time
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.dist import is_main_process
from mmengine.hooks import Hook, LoggerHook
from mmengine.model import is_model_wrapper
from torch import Tensor

from mmfusion.metrics import DEFAULT_STRIDES, METRIC_KEYS, PRESETS, ProfileAccumulator, save_profile
from mmfusion.registry import HOOKS
from mmfusion.utils.fileio import atomic_path
from mmfusion.utils.images import list_images, normalize, read_rgb
from mmfusion.utils.normalisation import IMAGENET, preprocessor_normalisation

from .rng_state_hook import preserved_rng_state

Pyramid = Tuple[Sequence[Tensor], Sequence[int]]
# Seed of the draws a dataset's pipeline makes while the probes are taken from it (see ``_from_dataset``).
_PROBE_SEED = 0


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
    Maps a pyramid does not compute (None, e.g. the master's at the injected strides) are not profiled.

    The probes are the same images, cropped the same way, at every probe and in every run of an experiment (a
    resumed one included), so the logged drift is the features' and not augmentation noise:

    - ``probe_images`` given: the first ``num_probes`` files of that folder;
    - else the image files of the validation dataset (of the training dataset when no ``val_dataloader`` is set),
      read from disk, i.e. without any pipeline;
    - else (a dataset without ``img_path`` infos) its samples' ``inputs``, taken with every global generator
      seeded and put back afterwards, so even random transforms give the same probes each time.

    Each is resized to cover ``probe_size`` (keeping its aspect ratio) and centre-cropped to it.

    Results go to:

    - the visualizer (``vis_data/scalars.json``, the run's ``{timestamp}.json`` and any backend such as TensorBoard)
      as ``scef/{master|auxiliary|fused}/{SC|EF}_os{s}`` at step ``iter``, plus ``scef/seconds``;
    - the message hub under the same keys, and one line of the text log;
    - ``{work_dir}/scef/iter_{N}.json``, a profile in the schema of ``mmfusion.metrics.save_profile``.

    In one process and under DDP the probe runs on the main process only, on the unwrapped model (it calls no
    collective; the other ranks go on training and wait for it at their next gradient all-reduce). Under FSDP the
    weights are shards and every unit gathers its weights from all ranks in its forward, so every rank runs the
    probe's forward on the same probe images, through the FSDP root's forward (which gathers the root unit's own
    parameters); only the main process scores the maps and writes. The model is in eval mode and under
    ``torch.no_grad()``; the train modes of all modules are restored afterwards, and so are the global random
    generators (a probe never shifts the training run's random stream). The probes are normalised as the model's
    ``data_preprocessor`` normalises the training images. A resumed run does not repeat the ``before_train``
    baseline: the work dir holds it (``scef/iter_0.json``). Its cost is bounded by ``num_probes``, ``probe_size`` and
    ``interval``, and logged (seconds) each time.

    Args:
        interval (int): Probe every ``interval`` training iterations. Default: 1000.
        probe_images (str, optional): Folder of images; the first ``num_probes`` files by name are used. Default:
            None, i.e. the first ``num_probes`` images of the validation (else training) dataset, taken once and
            cached.
        num_probes (int): Number of probe images. Default: 4.
        probe_size (tuple[int, int]): (H, W) the probes are resized (to cover) and centre-cropped to. Default:
            (256, 512).
        before_train (bool): Also probe once before the first iteration (not when resuming). Default: True.
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
                 strides: Sequence[int] = DEFAULT_STRIDES,
                 preset: str = 'profiling',
                 batch_size: int = 2,
                 log_keys: Sequence[str] = ('SC', 'EF')) -> None:
        if interval < 1 or num_probes < 1 or batch_size < 1:
            raise ValueError('interval, num_probes and batch_size must be positive')
        # Keys or a preset the profile does not have would silently log nothing (or fail at the first probe).
        unknown = [k for k in log_keys if k not in METRIC_KEYS]
        if unknown:
            raise ValueError(f'SCEFHook log_keys {unknown} are not profile metrics; choose among {list(METRIC_KEYS)}')
        if preset not in PRESETS:
            raise ValueError(f'SCEFHook preset={preset!r} is not an EF preset; choose one of {sorted(PRESETS)}')
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
        self._source = ''  # where the probes came from (written to the profiles' meta)

    # ------------------------------------------------------------------ hook points
    def before_train(self, runner) -> None:
        if not self.run_before_train:
            return
        if runner.iter > 0:
            # A resumed run: the baseline was probed (and written) by the run that started at iteration 0.
            runner.logger.info(f'SCEFHook: resuming at iter {runner.iter}; the before-training baseline is '
                               f'{osp.join(runner.work_dir, "scef", "iter_0.json")}')
            return
        self.probe(runner, step=runner.iter)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.every_n_train_iters(runner, self.interval):
            self.probe(runner, step=runner.iter + 1)

    # ------------------------------------------------------------------ probing
    def probe(self, runner, step: int) -> Optional[Dict[str, Dict[int, Dict[str, float]]]]:
        """Score the pyramids on the probe images and log the result; returns ``{name: {stride: {metric: v}}}``
        on the main process, None on the others."""
        root = _fsdp_root(runner.model)
        if root is None and not is_main_process():
            return None
        # The unwrapped module: a DDP forward would broadcast buffers to ranks that are not probing. Under FSDP its
        # parameters are shards: the forward goes through the root (see _through_root).
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        modes = {m: m.training for m in model.modules()}
        start = time.perf_counter()
        try:
            with preserved_rng_state():
                images = self._get_probes(runner, model)
                model.eval()
                with torch.no_grad():
                    profiles = self._profile(model, images, root)
        finally:
            # Restore each module's own flag: calling model.train() would undo eval modes set on purpose.
            for m, training in modes.items():
                m.training = training
        if not is_main_process():
            return None
        seconds = time.perf_counter() - start
        self._write(runner, step, profiles, seconds, model)
        return profiles

    def _profile(self, model: nn.Module, images: Tensor,
                 root: Optional[nn.Module] = None) -> Dict[str, Dict[int, Dict[str, float]]]:
        """SC/EF of the pyramids; with an FSDP ``root`` every rank must call it (only the main one scores)."""
        device = next(model.parameters()).device
        run = partial(self._pyramids, model)
        if root is not None:
            run = partial(_through_root, root, run)
        scores = root is None or is_main_process()
        accumulators: Dict[str, ProfileAccumulator] = {}
        for chunk in images.split(self.batch_size):
            x = self._normalise(chunk, model).to(device)
            pyramids = run(x)
            if not scores:
                continue  # another FSDP rank: it only lends its shards to the forward
            rgb = chunk.to(device)
            for name, (feats, strides) in pyramids.items():
                keep = [i for i, s in enumerate(strides) if s in self.strides]
                if not keep:
                    continue
                if name not in accumulators:
                    accumulators[name] = ProfileAccumulator(tuple(strides[i] for i in keep), self.preset)
                # float32 metrics whatever the forward's precision (FSDP mixed precision computes in bf16)
                accumulators[name].update([feats[i].float() for i in keep], rgb)
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
            return dict(backbone=_existing(feats, _out_strides(backbone, len(feats))))
        out = backbone(x)
        # MasterAuxOutputs names its strides: the master's maps are at ``strides`` (None where the auxiliary replaces
        # the master), the auxiliary's at ``inject_strides`` (whichever auxiliary encoder gives each).
        pyramids = dict(master=_existing(out.master, out.strides),
                        auxiliary=_existing(out.auxiliary, out.inject_strides))
        neck = getattr(model, 'neck', None)
        if isinstance(neck, MetricGuidedNeck):
            pyramids['fused'] = _existing(neck(out), out.strides)
        return pyramids

    @staticmethod
    def _normalise(images: Tensor, model: nn.Module) -> Tensor:
        """uint8 RGB to what the backbone gets from the model's data preprocessor: ``(x - mean) / std`` with its
        values, the pixels as they are when it does not normalise. Only a model without a data preprocessor (not an
        MMEngine model) gets ImageNet's, the input mmfusion's encoders expect."""
        mean, std = preprocessor_normalisation(model) or IMAGENET
        return normalize(images, mean, std)

    # ------------------------------------------------------------------ probe images
    def _get_probes(self, runner, model: nn.Module) -> Tensor:
        if self._probes is None:
            if self.probe_images is not None:
                images = self._load_folder()
                self._source = self.probe_images
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
        """The first ``num_probes`` images of the validation dataset (the training one without validation)."""
        val_loop = getattr(runner, 'val_loop', None)
        name, dataset = (('val_dataloader', val_loop.dataloader.dataset) if val_loop is not None else
                         ('train_dataloader', runner.train_dataloader.dataset))
        count = min(self.num_probes, len(dataset))
        paths = _image_paths(dataset, count)
        if paths is not None:
            self._source = f'{name}.dataset image files'
            return [read_rgb(p) for p in paths]
        pre = getattr(model, 'data_preprocessor', None)
        # Datasets hand images in the order the data preprocessor expects; bring them to RGB as the backbone sees.
        flip = bool(getattr(pre, '_channel_conversion', getattr(pre, 'channel_conversion', False)))
        images = []
        for i in range(count):
            # Random transforms draw from the global generators: seeded, the same draws every time (the caller
            # puts the training run's states back).
            torch.manual_seed(_PROBE_SEED)
            np.random.seed(_PROBE_SEED)
            random.seed(_PROBE_SEED)
            sample = dataset[i]
            image = sample.get('inputs') if isinstance(sample, dict) else None
            if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
                raise TypeError(f'SCEFHook could not take a (3, H, W) image from {name}.dataset[i]["inputs"]; '
                                'set probe_images to a folder of images')
            images.append(image.flip(0) if flip else image)
        self._source = f'{name}.dataset[i]["inputs"] (pipeline seeded with {_PROBE_SEED})'
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
        owner = next((m for m in (getattr(model, 'backbone', None), getattr(model, 'neck', None))
                      if getattr(m, 'inject_strides', None) is not None), None)
        if 'auxiliary' in profiles and owner is not None:
            inject = list(owner.inject_strides)
            selection = dict(master='master', auxiliary='auxiliary', inject_stride=inject[0] if len(inject) == 1
                             else inject)
        meta = dict(iter=step, num_probes=int(self._probes.shape[0]), probe_size=list(self.probe_size),
                    preset=self.preset, seconds=seconds, probe_source=self._source)
        # Written aside and renamed: a kill or a full disk never leaves a partial (or 0-byte) iter_N.json.
        with atomic_path(path) as tmp:
            save_profile(tmp, {name: {int(s): m for s, m in p.items()} for name, p in profiles.items()},
                         selection=selection, meta=meta)
        summary = ', '.join(f'{k[5:]}={v:.3f}' for k, v in scalars.items() if k != 'scef/seconds')
        runner.logger.info(f'SCEF at iter {step} on {self._probes.shape[0]} probes ({seconds:.1f}s): {summary}')


def _existing(feats: Sequence[Optional[Tensor]], strides: Sequence[int]) -> Pyramid:
    """The maps that exist (not None) and their strides."""
    if len(feats) != len(strides):
        raise RuntimeError(f'got {len(feats)} maps for strides {tuple(strides)}; a pyramid returns one map (or None) '
                           'per stride')
    kept = [(f, int(s)) for f, s in zip(feats, strides) if f is not None]
    return tuple(f for f, _ in kept), tuple(s for _, s in kept)


def _image_paths(dataset, count: int) -> Optional[List[str]]:
    """``img_path`` of the first ``count`` data infos of an MMEngine dataset; None when it has none."""
    if not hasattr(dataset, 'get_data_info'):
        return None
    if hasattr(dataset, 'full_init') and not getattr(dataset, '_fully_initialized', True):
        dataset.full_init()
    paths = []
    for i in range(count):
        info = dataset.get_data_info(i)
        path = info.get('img_path') if isinstance(info, dict) else None
        if not isinstance(path, str) or not osp.isfile(path):
            return None
        paths.append(path)
    return paths


def _out_strides(backbone: nn.Module, n: int) -> Tuple[int, ...]:
    """The strides of a plain backbone's maps, from its ``out_strides`` (never guessed from their number)."""
    strides = getattr(backbone, 'out_strides', None)
    if strides is None:
        raise RuntimeError(f'SCEFHook: {type(backbone).__name__} returns {n} maps but has no out_strides attribute '
                           'to say their strides; set out_strides on the backbone (one stride per map, increasing)')
    return tuple(int(s) for s in strides)


def _fsdp_root(model: nn.Module) -> Optional[nn.Module]:
    """``model`` when it is an FSDP root (its weights sharded over the ranks), else None."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    return model if isinstance(model, FSDP) else None


def _through_root(root: nn.Module, fn: Callable[[Tensor], Dict[str, Pyramid]], x: Tensor) -> Dict[str, Pyramid]:
    """``fn(x)`` run as the forward of the module an FSDP ``root`` wraps; every rank must call it alike.

    Outside the root's forward the root unit's own parameters (the master's embeddings and pyramid, the neck...) are
    shards, so calling ``model.backbone`` directly would compute with them; the root's forward gathers them first,
    and inside it each inner unit (a block, the frozen auxiliary) gathers its own in its forward. ``fn`` temporarily
    takes the wrapped module's place as its forward (``summon_full_params`` would gather everything at once, and
    forbids forward passes inside it).
    """
    inner = root.module
    own = inner.__dict__.get('forward')
    inner.forward = fn
    try:
        return root(x)
    finally:
        if own is None:
            del inner.forward
        else:
            inner.forward = own
