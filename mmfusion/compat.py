"""Fixes for what the pinned OpenMMLab stack (mmengine 0.10.7, mmcv 2.1.0) gets wrong on torch >= 2.6.

Applied once by ``import mmfusion``; every fix is idempotent and narrow, and has a test that fails without it
(``tests/test_compat.py``).

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
"""
from __future__ import annotations

import functools
import os
import pickle
import warnings

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
    _APPLIED = True
