"""Fixes for what the pinned OpenMMLab stack (mmengine 0.10.7, mmcv 2.1.0) gets wrong on torch >= 2.6.

Applied once by ``import mmfusion.registry`` (which every OpenMMLab part of mmfusion imports); every fix is
idempotent and narrow, and has a test that fails without it (``tests/test_compat.py``).

torch >= 2.6 loads checkpoints with ``weights_only=True`` by default, and mmengine 0.10.7 calls ``torch.load``
without the argument. Its checkpoints hold more than tensors: the ``message_hub`` state pickles
:class:`~mmengine.logging.HistoryBuffer` objects (numpy arrays inside), so resume fails. We do **not** turn
weight-only loading off; we allow-list exactly the types mmengine writes. One of them cannot be allow-listed
safely: ``HistoryBuffer.__getstate__`` pickles its class-level statistic methods, which pickle as
``getattr(HistoryBuffer, 'min')``, and allowing ``builtins.getattr`` would let a checkpoint reach any attribute of
any allowed object (i.e. run code). Those four methods are re-registered by ``HistoryBuffer.__init__`` and
``__setstate__`` anyway, so we stop writing them. Checkpoints written by an unpatched mmengine still contain them;
loading one raises an error that says so and how to proceed.

mmengine 0.10.7 also cannot start a distributed run with a CPU-only torch (``torchrun`` + ``--launcher pytorch``,
e.g. a 2-process gloo smoke test): ``_init_dist_pytorch`` calls ``torch.cuda.set_device`` unconditionally, and the
Runner wraps CPU models in DDP with ``device_ids=[local_rank]``, which DDP rejects for CPU modules. Without CUDA we
skip ``set_device``, use gloo (nccl needs CUDA; a warning says so) and pass ``device_ids=None``.

A run killed while writing a checkpoint must not leave a file that ``--resume`` picks: mmengine writes checkpoints
in place (``LocalBackend.put`` opens the final path and writes), so a kill mid-write leaves a truncated
``iter_N.pth``, and auto-resume follows ``last_checkpoint`` blindly. Local writes go to a temporary file in the same
folder, are flushed to disk and renamed over the target (atomic on POSIX). On resume the checkpoint is checked
first (its zip directory and CRCs, no unpickling): with auto-resume a bad latest checkpoint falls back, with a
warning, to the newest intact checkpoint of the work dir (``resume_checkpoint``); an explicit ``--resume PATH``
that is corrupt stops with a one-line :class:`CorruptCheckpointError` naming the file.
"""
from __future__ import annotations

import functools
import os
import os.path as osp
import pickle
import re
import warnings
import zipfile
from typing import Optional

import numpy as np
import torch

_APPLIED = False

# Built-in statistics re-registered by ``HistoryBuffer._set_default_statistics``; no need to pickle them.
_DEFAULT_STATISTICS = ('min', 'max', 'current', 'mean')


def _numpy_safe_globals() -> list:
    """The numpy objects needed to unpickle arrays and scalars (numpy 1.x and 2.x layouts)."""
    import importlib
    numpy2 = int(np.__version__.split('.')[0]) >= 2
    multiarray = importlib.import_module('numpy._core.multiarray' if numpy2 else 'numpy.core.multiarray')
    names = [multiarray._reconstruct, np.ndarray, np.dtype, multiarray.scalar]
    dtypes = getattr(np, 'dtypes', None)  # numpy >= 1.25 pickles dtypes by class on some paths
    if dtypes is not None:
        names += [type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32,
                                              np.int64, np.uint8, np.bool_)]
    return names


def mmengine_safe_globals() -> list:
    """Exactly the non-tensor types MMEngine writes into its checkpoints."""
    from mmengine.logging.history_buffer import HistoryBuffer
    return [HistoryBuffer, *_numpy_safe_globals()]


def _history_buffer_getstate(self) -> dict:
    """Like mmengine's, but without the built-in statistic methods (see module docstring) and without mutating
    ``self.__dict__`` (the stock version adds ``statistics_methods`` to the instance on every save)."""
    state = {k: v for k, v in self.__dict__.items() if k != 'statistics_methods'}
    custom = {k: v for k, v in self._statistics_methods.items() if k not in _DEFAULT_STATISTICS}
    if custom:
        state['statistics_methods'] = custom
    return state


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds objects that weight-only loading refuses."""


def _explain_unpickling_error(filename: str, err: Exception) -> Exception:
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(filename)
    except Exception:  # not a zip checkpoint: keep torch's own message
        return err
    hint = ''
    if 'builtins.getattr' in unsafe:
        hint = (' `builtins.getattr` comes from HistoryBuffer statistics pickled by an unpatched mmengine: if you '
                'trust this file, re-save it without them with `python tools/misc/resave_checkpoint.py '
                f'{filename}` (it asks before loading with weights_only=False).')
    return UnsafeCheckpointError(
        f'Refusing to load {filename!r} with weights_only=True: it pickles {unsafe}, which are not allow-listed. '
        f'mmfusion allow-lists only what MMEngine itself writes.{hint} If these objects are yours and safe, '
        'register them with torch.serialization.add_safe_globals([...]).')


def _wrap_local_loader() -> None:
    from mmengine.runner.checkpoint import CheckpointLoader
    stock = CheckpointLoader._schemes['']
    if getattr(stock, '_mmfusion_wrapped', False):
        return

    def load_from_local(filename, map_location):
        try:
            return stock(filename, map_location)
        except pickle.UnpicklingError as err:
            raise _explain_unpickling_error(filename, err) from err

    load_from_local._mmfusion_wrapped = True
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local, force=True)


def _patch_cpu_distributed() -> None:
    import mmengine.dist.utils as dist_utils
    from mmengine.model.wrappers.distributed import MMDistributedDataParallel
    stock_init = dist_utils._init_dist_pytorch
    if getattr(stock_init, '_mmfusion_wrapped', False):
        return

    @functools.wraps(stock_init)
    def _init_dist_pytorch(backend, init_backend='torch', **kwargs):
        if torch.cuda.is_available() or init_backend != 'torch' or not hasattr(torch.cuda, 'set_device'):
            return stock_init(backend, init_backend=init_backend, **kwargs)
        if dist_utils.is_mlu_available() or dist_utils.is_npu_available() or dist_utils.is_musa_available():
            return stock_init(backend, init_backend=init_backend, **kwargs)
        if backend == 'nccl':
            warnings.warn('No CUDA device: using the gloo backend instead of nccl for this distributed run')
            backend = 'gloo'
        torch.distributed.init_process_group(
            backend=backend, rank=int(os.environ['RANK']), world_size=int(os.environ['WORLD_SIZE']), **kwargs)

    _init_dist_pytorch._mmfusion_wrapped = True
    dist_utils._init_dist_pytorch = _init_dist_pytorch

    stock_ddp_init = MMDistributedDataParallel.__init__

    @functools.wraps(stock_ddp_init)
    def ddp_init(self, module, detect_anomalous_params=False, **kwargs):
        if kwargs.get('device_ids') is not None and all(p.device.type == 'cpu' for p in module.parameters()):
            kwargs['device_ids'] = None  # DDP takes device_ids only for modules on accelerators
        stock_ddp_init(self, module, detect_anomalous_params=detect_anomalous_params, **kwargs)

    MMDistributedDataParallel.__init__ = ddp_init


class CorruptCheckpointError(RuntimeError):
    """A checkpoint (or the ``last_checkpoint`` file naming it) cannot be resumed from; the message names the file."""


def _atomic_put(self, obj: bytes, filepath) -> None:
    """``LocalBackend.put`` that never leaves a partly written ``filepath``: temporary file, fsync, rename."""
    from mmfusion.utils.fileio import atomic_write
    filepath = str(filepath)
    os.makedirs(osp.dirname(osp.abspath(filepath)), exist_ok=True)
    atomic_write(filepath, obj)


def checkpoint_problem(path: str) -> Optional[str]:
    """What makes the local checkpoint ``path`` unloadable, or None when it looks intact.

    torch writes zip archives: a truncated one has lost its central directory (at the end), a corrupted one fails a
    member's CRC. Both are found by reading the file, without unpickling anything. Files in torch's legacy
    (non-zip) format are not checked.

    Args:
        path (str): the checkpoint file.

    Returns:
        str | None: e.g. ``'is truncated or not a checkpoint (File is not a zip file)'``.
    """
    if osp.isdir(path):
        return None  # a sharded checkpoint (a folder per checkpoint): its strategy checks it
    if not osp.isfile(path):
        return 'does not exist'
    if osp.getsize(path) == 0:
        return 'is empty'
    with open(path, 'rb') as f:
        magic = f.read(2)
    if magic != b'PK':
        return None if magic[:1] == b'\x80' else 'is not a PyTorch checkpoint'  # b'\x80': legacy pickle format
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        return f'is truncated or corrupt ({e})'
    return None if bad is None else f'is corrupt (its member {bad} fails the CRC check)'


def _is_local(path: str) -> bool:
    return '://' not in str(path)


_CKPT_NAME = re.compile(r'(iter|epoch)_(\d+)\.pth')


def _numbered_checkpoints(folders) -> list:
    """``iter_N.pth`` / ``epoch_N.pth`` files in ``folders``, newest (largest N) first; iteration checkpoints before
    epoch ones when a folder holds both (an iteration count exceeds an epoch count)."""
    found = {}
    for folder in folders:
        if not folder or not osp.isdir(folder):
            continue
        for name in os.listdir(folder):
            m = _CKPT_NAME.fullmatch(name)
            if m:
                found[osp.join(folder, name)] = (m.group(1) == 'iter', int(m.group(2)))
    return sorted(found, key=lambda p: found[p], reverse=True)


def resume_checkpoint(work_dir: str, logger=None) -> Optional[str]:
    """The checkpoint auto-resume should load: the newest intact ``iter_N.pth`` (or ``epoch_N.pth``) in the work dir
    (and in the folder ``last_checkpoint`` points to, for a CheckpointHook ``out_dir``); None when there is none (a
    fresh run).

    ``last_checkpoint`` alone is not trusted: a kill between writing ``iter_N.pth`` and updating it (or a stock
    CheckpointHook that rotated the file it names away) leaves it behind the newest checkpoint, and a kill while
    writing it (or the checkpoint) leaves it empty or naming a truncated file. When the choice differs from what
    ``last_checkpoint`` names, a warning says why.

    Args:
        work_dir (str): the run's work dir.
        logger (logging.Logger, optional): where the warning goes; ``warnings.warn`` when None.

    Returns:
        str | None: the checkpoint path.

    Raises:
        CorruptCheckpointError: checkpoints exist, but none is intact.
    """
    save_file = osp.join(work_dir, 'last_checkpoint')
    named, empty = None, False
    if osp.isfile(save_file):
        with open(save_file) as f:
            named = f.read().strip() or None
        empty = named is None
    if named is not None and not _is_local(named):
        return named  # remote storage: MMEngine's file backend decides
    candidates = _numbered_checkpoints([work_dir, osp.dirname(named) if named else None])
    if named is not None and named not in candidates and osp.exists(named):
        candidates.append(named)  # a custom filename_tmpl
    bad = []
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is not None:
            bad.append(f'{path} {problem}')
            continue
        if named is not None and osp.abspath(path) != osp.abspath(named):
            named_problem = checkpoint_problem(named)
            why = ('that file does not exist' if not osp.exists(named) else
                   f'it {named_problem}' if named_problem else 'a newer one is beside it')
            msg = (f'{save_file} names {named}, but {why} (the run was stopped while saving); resuming from {path}, '
                   f'the newest intact checkpoint in {osp.dirname(path)}')
            if logger is not None:
                logger.warning(msg)
            else:
                warnings.warn(msg)
        elif bad or empty:
            why = f'skipped {"; ".join(bad)}' if bad else f'{save_file} is empty (the run was stopped while writing it)'
            msg = f'{why}; resuming from {path}, the newest intact checkpoint in {osp.dirname(path)}'
            if logger is not None:
                logger.warning(msg)
            else:
                warnings.warn(msg)
        return path
    if bad:
        raise CorruptCheckpointError(f'no intact checkpoint in {work_dir}: {"; ".join(bad)}; start a new run (another '
                                     '--work-dir) or pass a good checkpoint with --resume PATH')
    if named is not None:
        raise CorruptCheckpointError(f'{save_file} names {named}, which does not exist, and {work_dir} holds no other '
                                     'checkpoint; start a new run or pass a checkpoint with --resume PATH')
    return None


def _checked_load_or_resume(stock):
    """``load_or_resume`` of a Runner (or FlexibleRunner) that checks the checkpoint it resumes from first."""

    @functools.wraps(stock)
    def load_or_resume(self) -> None:
        if not self._has_loaded and self._resume:
            # FlexibleRunner also takes the path as ``resume=PATH``.
            explicit = self._resume if isinstance(self._resume, str) else self._load_from
            if explicit is None:
                latest = resume_checkpoint(self.work_dir, self.logger)
                if latest is not None:
                    self.logger.info(f'Auto resumed from the latest intact checkpoint {latest}.')
                    self._load_from = latest
            elif _is_local(explicit):
                problem = checkpoint_problem(explicit)
                if problem is not None:
                    raise CorruptCheckpointError(f'cannot resume from {explicit}: it {problem}; pass an intact '
                                                 'checkpoint (e.g. an earlier one) to --resume')
        return stock(self)

    load_or_resume._mmfusion_wrapped = True
    return load_or_resume


def _patch_checkpoint_safety() -> None:
    from mmengine.fileio.backends.local_backend import LocalBackend
    from mmengine.runner import FlexibleRunner, Runner
    if getattr(LocalBackend.put, '_mmfusion_wrapped', False):
        return
    _atomic_put._mmfusion_wrapped = True
    LocalBackend.put = _atomic_put
    for runner_cls in (Runner, FlexibleRunner):
        runner_cls.load_or_resume = _checked_load_or_resume(runner_cls.load_or_resume)


# --- FSDP (MMEngine's FlexibleRunner + FSDPStrategy) -------------------------------------------------------------


def _fsdp_clip_grad_norm(model, params, max_norm: float, norm_type: float = 2.0, **kwargs):
    """``clip_grad_norm_`` for a model wrapped in FSDP: the norm of the whole gradient, all ranks' shards together.

    ``params`` (this rank's shards, as the optimizer holds them) and other ``clip_grad_norm_`` options are not used:
    the root FSDP module finds every gradient itself.
    """
    return model.clip_grad_norm_(max_norm, norm_type)


def _patch_fsdp() -> None:
    """MMEngine 0.10.7's FSDPStrategy on torch >= 2.1 and without a GPU.

    - ``FSDPStrategy`` passes ``device_id=LOCAL_RANK``, which FSDP reads as an accelerator index: on a CPU-only torch
      the wrapper cannot be built. Without an accelerator the device is the CPU, named explicitly.
    - ``load_optim_state_dict`` calls ``FSDP.optim_state_dict_to_load`` with torch 2.0's argument order
      ``(state_dict, model, optim)``; torch >= 2.1 takes ``(model, optim, state_dict)``, so resuming fails.
    - ``OptimWrapper`` clips gradients with ``torch.nn.utils.clip_grad_norm_`` over the optimizer's parameters, which
      under FSDP are this rank's shards: each rank clips by the norm of its own shard and the ranks' updates differ
      from an unsharded run (and from each other). The wrapper clips by the global norm (``FSDP.clip_grad_norm_``).
    - The optimizer state FSDP returns keeps only ``state`` and ``param_groups``: the wrapper's
      ``base_param_settings`` (the scheduled base lr, logged as ``base_lr``) is lost, and after a resume it restarts
      from the config's lr. It is saved beside them and restored.
    - ``state_dict_cfg='full'`` gathers with ``offload_to_cpu=True``. When the parameters already live on the CPU,
      FSDP's offload moves nothing and then frees the gathered tensor the state dict still points to: saving a
      checkpoint crashes (segmentation fault). Without an accelerator nothing is offloaded.
    """
    from mmengine._strategy.fsdp import FSDP, FSDPStrategy
    from mmengine.device import get_device
    from mmengine.model.wrappers.fully_sharded_distributed import MMFullyShardedDataParallel
    from mmengine.optim import OptimWrapperDict
    if getattr(FSDPStrategy.build_optim_wrapper, '_mmfusion_wrapped', False):
        return

    stock_fsdp_init = MMFullyShardedDataParallel.__init__

    @functools.wraps(stock_fsdp_init)
    def fsdp_init(self, module, *args, **kwargs):
        if isinstance(kwargs.get('device_id'), int) and get_device() == 'cpu':
            kwargs['device_id'] = torch.device('cpu')  # an int names an accelerator; FSDP runs on CPU when told so
        stock_fsdp_init(self, module, *args, **kwargs)

    MMFullyShardedDataParallel.__init__ = fsdp_init

    def load_optim_state_dict(self, state_dict: dict) -> None:
        base = state_dict.pop('base_param_settings', None)
        loaded = FSDP.optim_state_dict_to_load(self.model, self.optim_wrapper.optimizer, state_dict)
        if base is not None:
            loaded['base_param_settings'] = base  # read back by OptimWrapper.load_state_dict
        self.optim_wrapper.load_state_dict(loaded)

    FSDPStrategy.load_optim_state_dict = functools.wraps(FSDPStrategy.load_optim_state_dict)(load_optim_state_dict)

    stock_optim_state_dict = FSDPStrategy.optim_state_dict

    @functools.wraps(stock_optim_state_dict)
    def optim_state_dict(self) -> dict:
        state = stock_optim_state_dict(self)
        base = getattr(self.optim_wrapper, 'base_param_settings', None)
        if state and base is not None:  # empty on the ranks that do not save a full state dict
            state['base_param_settings'] = base
        return state

    FSDPStrategy.optim_state_dict = optim_state_dict

    stock_build = FSDPStrategy.build_optim_wrapper

    @functools.wraps(stock_build)
    def build_optim_wrapper(self, optim_wrapper, model=None):
        built = stock_build(self, optim_wrapper, model)
        model = self.model if model is None else model
        wrappers = built.optim_wrappers.values() if isinstance(built, OptimWrapperDict) else [built]
        for wrapper in wrappers:
            if getattr(wrapper, 'clip_func', None) is torch.nn.utils.clip_grad_norm_ and isinstance(model, FSDP):
                wrapper.clip_func = functools.partial(_fsdp_clip_grad_norm, model)
        return built

    build_optim_wrapper._mmfusion_wrapped = True
    FSDPStrategy.build_optim_wrapper = build_optim_wrapper

    stock_state_dict_cfg = FSDPStrategy._init_state_dict_cfg

    @functools.wraps(stock_state_dict_cfg)
    def init_state_dict_cfg(self, state_dict_cfg) -> None:
        stock_state_dict_cfg(self, state_dict_cfg)
        if get_device() == 'cpu':  # nothing to offload to; FSDP would free the gathered tensors (see above)
            for config in (self.state_dict_config, self.optim_state_dict_config):
                if getattr(config, 'offload_to_cpu', False):
                    config.offload_to_cpu = False

    FSDPStrategy._init_state_dict_cfg = init_state_dict_cfg


def _patch_meta_init_info() -> None:
    """``BaseModule.init_weights`` on a model with parameters on the meta device (built without weights, e.g.
    ``DINOv3ViT(init_device='meta')``, which its own ``init_weights`` materialises from the checkpoint).

    The top-level call records every parameter's mean first (``param.data.mean()``, for the "initialized by" log), which
    a meta tensor cannot give, so training could not start. Meta parameters are recorded as not yet initialised (NaN
    mean) and the rest of the bookkeeping runs unchanged: after the children's ``init_weights`` their (now real)
    values are compared and logged as usual.
    """
    from collections import defaultdict

    from mmengine.model import BaseModule
    stock = BaseModule.init_weights
    if getattr(stock, '_mmfusion_wrapped', False):
        return

    @functools.wraps(stock)
    def init_weights(self) -> None:
        if hasattr(self, '_params_init_info') or not any(p.is_meta for p in self.parameters()):
            return stock(self)
        info = defaultdict(dict)
        for param in self.parameters():
            info[param]['init_info'] = ('The value is the same before and after calling `init_weights` of '
                                        f'{type(self).__name__} ')
            info[param]['tmp_mean_value'] = torch.tensor(float('nan')) if param.is_meta else param.data.mean().cpu()
        for module in self.modules():
            module._params_init_info = info
        try:
            stock(self)  # a recorded _params_init_info: the stock call runs as for a submodule
            self._dump_init_info()
        finally:
            for module in self.modules():
                if hasattr(module, '_params_init_info'):
                    del module._params_init_info

    init_weights._mmfusion_wrapped = True
    BaseModule.init_weights = init_weights


def apply() -> None:
    """Apply every fix once."""
    global _APPLIED
    if _APPLIED:
        return
    try:
        from mmengine.logging.history_buffer import HistoryBuffer
    except ImportError:  # mmfusion.metrics is usable without the OpenMMLab stack
        return
    torch.serialization.add_safe_globals(mmengine_safe_globals())
    HistoryBuffer.__getstate__ = _history_buffer_getstate
    _wrap_local_loader()
    _patch_cpu_distributed()
    _patch_checkpoint_safety()
    _patch_fsdp()
    _patch_meta_init_info()
    _APPLIED = True
