"""Exact resume: the random number generators' states travel with every checkpoint and come back on resume.

MMEngine's checkpoints hold the weights, the optimizer, the schedulers and the message hub, but no generator state:
a resumed run re-seeds from ``randomness.seed`` and from its first iteration on draws different dropout masks,
Mask2Former point samples (``torch.rand``) and augmentations than the uninterrupted run would have. With
:class:`RNGStateHook` in ``custom_hooks`` the resumed run continues with exactly the generator states of the moment
the checkpoint was written, and (single process, CPU or a deterministic GPU setup) reaches bit-identical weights,
optimizer and scheduler states.
"""
from __future__ import annotations

import contextlib
import functools
import random
from typing import Callable, Dict, Iterator, List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import CheckpointHook, Hook

from mmfusion.registry import HOOKS

#: Top-level checkpoint key of the saved states: ``{'world_size': int, 'states': [state of rank 0, rank 1, ...],
#: 'data_seeds': {'sampler': int | None, 'worker': int | None}}``.
CHECKPOINT_KEY = 'rng_states'

RNGState = Dict[str, object]


def get_rng_state() -> RNGState:
    """The states of this process's global generators: torch (CPU, and every CUDA device when available), numpy's
    legacy ``np.random`` and Python's ``random``.

    Everything is a tensor, an int, a float, None, or a dict/list of those, so the state passes torch's
    weights-only loading (``mmfusion.compat``) without widening its allow-list.

    Returns:
        dict: the states, for :func:`set_rng_state`.
    """
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: RNGState = dict(
        torch=torch.get_rng_state(),
        numpy=dict(keys=torch.from_numpy(keys.astype(np.int64)), pos=int(pos), has_gauss=int(has_gauss),
                   cached_gaussian=float(cached_gaussian)),
        python=dict(version=int(version), internal=torch.tensor(internal, dtype=torch.int64),
                    gauss_next=None if gauss_next is None else float(gauss_next)))
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: RNGState) -> None:
    """Put the generators back in a state returned by :func:`get_rng_state` (tensors may sit on any device).

    Args:
        state (dict): the saved states.
    """
    torch.set_rng_state(state['torch'].cpu())
    npy = state['numpy']
    np.random.set_state(('MT19937', npy['keys'].cpu().numpy().astype(np.uint32), int(npy['pos']),
                         int(npy['has_gauss']), float(npy['cached_gaussian'])))
    py = state['python']
    random.setstate((int(py['version']), tuple(int(v) for v in py['internal'].tolist()), py['gauss_next']))
    cuda = state.get('cuda')
    if cuda is not None and torch.cuda.is_available():
        if len(cuda) != torch.cuda.device_count():
            raise RuntimeError(f'the checkpoint holds CUDA generator states of {len(cuda)} devices but this process '
                               f'sees {torch.cuda.device_count()}; resume with the same visible devices')
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


@contextlib.contextmanager
def preserved_rng_state() -> Iterator[None]:
    """Whatever runs inside leaves the global generators as it found them.

    Used around work that must not shift the training run's random stream (e.g. the SC/EF probes).
    """
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def _train_sampler(loader):
    """The sampler that orders the training data (given directly or inside a batch sampler), if it has a seed."""
    for sampler in (getattr(loader, 'sampler', None), getattr(getattr(loader, 'batch_sampler', None), 'sampler', None)):
        if isinstance(getattr(sampler, 'seed', None), int):
            return sampler
    return None


def data_seeds(loader) -> Dict[str, Optional[int]]:
    """The seeds that order and augment a dataloader's data: its sampler's, and the one MMEngine's
    ``worker_init_fn`` seeds the workers with.

    Args:
        loader (DataLoader): a training dataloader built by MMEngine.

    Returns:
        dict: ``sampler`` and ``worker`` (None where the loader has none).
    """
    sampler = _train_sampler(loader)
    init_fn = getattr(loader, 'worker_init_fn', None)
    worker = init_fn.keywords.get('seed') if isinstance(init_fn, functools.partial) else None
    return dict(sampler=None if sampler is None else int(sampler.seed),
                worker=worker if isinstance(worker, int) else None)


def set_data_seeds(loader, seeds: Dict[str, Optional[int]]) -> bool:
    """Give a dataloader's sampler and workers the seeds of :func:`data_seeds`; True when one changed.

    MMEngine builds the training dataloader with the seed of the new run and restores the checkpoint's seed only
    afterwards, so a run without a fixed ``randomness.seed`` (or with ``diff_rank_seed``) would otherwise shuffle
    and augment differently after a resume. Already started workers are stopped, so they restart with the seed.
    """
    changed = False
    sampler = _train_sampler(loader)
    if sampler is not None and seeds.get('sampler') is not None and sampler.seed != seeds['sampler']:
        sampler.seed = int(seeds['sampler'])
        if hasattr(sampler, '_indices_of_rank'):  # InfiniteSampler draws its index stream when built
            sampler.indices = sampler._indices_of_rank()
        changed = True
    init_fn = getattr(loader, 'worker_init_fn', None)
    if (isinstance(init_fn, functools.partial) and seeds.get('worker') is not None
            and init_fn.keywords.get('seed') != seeds['worker']):
        loader.worker_init_fn = functools.partial(init_fn.func, *init_fn.args,
                                                  **dict(init_fn.keywords, seed=int(seeds['worker'])))
        changed = True
    cached = getattr(loader, '_iterator', None)  # persistent workers, started with the old seed
    if changed and cached is not None and hasattr(cached, '_shutdown_workers'):
        cached._shutdown_workers()
        loader._iterator = None
    return changed


class _RestoreAfterSkip:
    """Wraps ``IterBasedTrainLoop.dataloader_iterator`` of a resumed run.

    On resume the loop replays ``skip`` batches (so the sampler, its epoch and the workers' generators are where the
    interrupted run left them); the next batch is the first one trained on, and is loaded only after ``restore``
    has put the generators back (its augmentation draws from them when ``num_workers=0``). Then the wrapper takes
    itself out of the loop.
    """

    def __init__(self, loop, skip: int, restore: Callable[[], None]) -> None:
        self._loop = loop
        self._inner = loop.dataloader_iterator
        self._left = skip
        self._restore = restore

    def __iter__(self) -> Iterator:
        return self

    def __next__(self):
        if self._left > 0:
            self._left -= 1
            return next(self._inner)
        self._loop.dataloader_iterator = self._inner
        self._restore()
        return next(self._inner)

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save the generator states into every checkpoint and restore them when a run resumes.

    - ``before_save_checkpoint``: the states of torch (CPU and CUDA), ``np.random`` and ``random`` go to the
      checkpoint's top-level ``rng_states`` key, as tensors and ints. Under DDP each rank's states are gathered just
      before the :class:`~mmengine.hooks.CheckpointHook` saves (no collective runs inside saving, which is rank 0
      only), and rank ``r`` gets its own back on resume.
    - ``after_load_checkpoint`` (only when the Runner resumes; loading weights with ``load_from`` alone, or for
      testing, touches no generator): the states are kept until training restarts.
    - Data order: the sampler's seed and the workers' seed are saved too. MMEngine builds the resumed run's
      dataloader with the new run's seed (it restores the checkpoint's seed only afterwards), which differs when
      ``randomness.seed`` is not fixed or with ``diff_rank_seed``; ``before_train`` gives them back the saved seeds.
    - Restore: ``IterBasedTrainLoop`` replays the already trained batches of the dataloader on resume (that keeps
      the sampler's position and epoch, and the workers' generators, seeded by MMEngine's ``worker_init_fn``, where
      they were); the states are restored after that replay, just before the first new batch is loaded. Other loops
      restore in ``before_train_epoch``.

    What stays out of reach: hooks that draw random numbers after the checkpoint is written (priority below
    ``VERY_LOW``) or in ``before_train``; a resume with another number of processes (the states of rank 0 are used
    and a warning says so); non-deterministic GPU kernels (see ``randomness.deterministic``).

    Example:
        >>> custom_hooks = [dict(type='mmfusion.RNGStateHook')]
    """

    # Before CheckpointHook (VERY_LOW) in after_train_iter/after_train_epoch, where DDP ranks gather their states.
    priority = 'LOW'

    def __init__(self) -> None:
        self._pending: Optional[RNGState] = None
        self._data_seeds: Optional[Dict[str, Optional[int]]] = None
        self._gathered: Optional[List[RNGState]] = None

    # ------------------------------------------------------------------ saving
    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._gather_if(runner, _checkpoint_due(runner, by_epoch=False))

    def after_train_epoch(self, runner) -> None:
        self._gather_if(runner, _checkpoint_due(runner, by_epoch=True))

    def _gather_if(self, runner, due: bool) -> None:
        self._gathered = None
        if due and get_world_size() > 1:
            self._gathered = all_gather_object(get_rng_state())

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        states = self._gathered if self._gathered is not None else [get_rng_state()]
        loader = getattr(getattr(runner, '_train_loop', None), 'dataloader', None)
        seeds = data_seeds(loader) if loader is not None else dict(sampler=None, worker=None)
        checkpoint[CHECKPOINT_KEY] = dict(world_size=len(states), states=states, data_seeds=seeds)
        self._gathered = None

    # ------------------------------------------------------------------ resuming
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not getattr(runner, '_resume', False):
            return
        saved = checkpoint.get(CHECKPOINT_KEY)
        if saved is None:
            runner.logger.warning(
                'RNGStateHook: the checkpoint holds no generator states (it was written without RNGStateHook); '
                'the resumed run draws from freshly seeded generators and will not match an uninterrupted run')
            return
        states, rank, world = saved['states'], get_rank(), get_world_size()
        if len(states) != world:
            runner.logger.warning(
                f'RNGStateHook: the checkpoint holds generator states of {len(states)} process(es) and this run has '
                f'{world}; every rank restores those of rank 0, so the run will not match the interrupted one')
            rank = 0
        self._pending = states[rank]
        self._data_seeds = saved.get('data_seeds')

    def before_train(self, runner) -> None:
        loop = runner.train_loop
        if self._pending is None:
            return
        if self._data_seeds is not None and set_data_seeds(loop.dataloader, self._data_seeds):
            runner.logger.info(f'RNGStateHook: training data reseeded as in the interrupted run ({self._data_seeds})')
            if hasattr(loop, 'dataloader_iterator'):
                # The loop's iterator was made with the new run's seeds (and may have prefetched with them).
                loop.dataloader_iterator = type(loop.dataloader_iterator)(loop.dataloader)
        if runner.iter > 0 and hasattr(loop, 'dataloader_iterator'):
            loop.dataloader_iterator = _RestoreAfterSkip(loop, runner.iter, self._restore)

    def before_train_epoch(self, runner) -> None:
        if self._pending is not None and not isinstance(getattr(runner.train_loop, 'dataloader_iterator', None),
                                                        _RestoreAfterSkip):
            self._restore()

    def _restore(self) -> None:
        if self._pending is not None:
            set_rng_state(self._pending)
            self._pending = None


def _checkpoint_due(runner, by_epoch: bool) -> bool:
    """Whether a :class:`CheckpointHook` of ``runner`` saves at the end of the current iteration (or epoch)."""
    for hook in runner.hooks:
        if not isinstance(hook, CheckpointHook) or bool(hook.by_epoch) != by_epoch:
            continue
        if by_epoch:
            due = hook.every_n_epochs(runner, hook.interval, hook.save_begin) or (
                hook.save_last and hook.is_last_train_epoch(runner))
        else:
            due = hook.every_n_train_iters(runner, hook.interval, hook.save_begin) or (
                hook.save_last and hook.is_last_train_iter(runner))
        if due:
            return True
    return False
