"""MMEngine's CheckpointHook, reordered so that a kill never leaves a work dir without a checkpoint.

With ``max_keep_ckpts=k`` the stock hook deletes the checkpoint that rotation drops *before* it writes the new one:
with ``k=1`` there is no checkpoint on disk while the new one is written (seconds for a large model), and a kill in
that window loses the whole run. It also writes ``last_checkpoint`` in place (a kill mid-write leaves it empty).
"""
from __future__ import annotations

import errno
import os.path as osp
from typing import Optional

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook

from mmfusion.registry import HOOKS
from mmfusion.utils.errors import UserError
from mmfusion.utils.fileio import atomic_write

__all__ = ['SafeCheckpointHook']


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """:class:`~mmengine.hooks.CheckpointHook` that writes first and rotates last.

    Order of each save: the new checkpoint (atomically, see :mod:`mmfusion.compat`), then ``last_checkpoint``
    (atomically), then the checkpoint that ``max_keep_ckpts`` drops. At every instant at least one complete
    checkpoint is on disk and ``last_checkpoint`` names a complete file. A full disk while writing stops the run
    with one line; the previous checkpoint and ``last_checkpoint`` are left as they were.

    Takes the same arguments as :class:`~mmengine.hooks.CheckpointHook`; the tools use it in place of the stock
    hook (``default_hooks.checkpoint.type='CheckpointHook'`` is switched by
    :func:`mmfusion.apis.runner_utils.build_runner`).

    Example:
        >>> default_hooks = dict(checkpoint=dict(type='mmfusion.SafeCheckpointHook', interval=2000,
        ...                                      max_keep_ckpts=1))
    """

    def _save_checkpoint_with_step(self, runner, step, meta):
        dropped: Optional[int] = None
        if self.max_keep_ckpts > 0 and not (len(self.keep_ckpt_ids) > 0 and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                dropped = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            # Recorded before saving, as the stock hook does: the new checkpoint lists itself among the kept ones.
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        try:
            runner.save_checkpoint(
                self.out_dir, ckpt_filename, self.file_client_args, save_optimizer=self.save_optimizer,
                save_param_scheduler=self.save_param_scheduler, meta=meta, by_epoch=self.by_epoch,
                backend_args=self.backend_args, **self.args)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            kept = f'; {self._previous(runner)} and last_checkpoint are intact' if self._previous(runner) else ''
            raise UserError(f'no space left on the disk while writing {self.last_ckpt} ({e.strerror}){kept}; free '
                            'space (or set max_keep_ckpts lower) and continue with tools/train.py CONFIG --resume') \
                from e

        if not is_main_process():  # sharded strategies: every rank saves its part, rank 0 keeps the books
            return
        atomic_write(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
        if dropped is not None and dropped != step:
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(dropped))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # checkpoints saved by deepspeed are directories
                self.file_backend.rmtree(path)

    @staticmethod
    def _previous(runner) -> Optional[str]:
        save_file = osp.join(runner.work_dir, 'last_checkpoint')
        if osp.isfile(save_file):
            with open(save_file) as f:
                return f.read().strip() or None
        return None
