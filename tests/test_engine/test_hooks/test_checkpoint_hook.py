"""SafeCheckpointHook: a complete checkpoint is on disk at every instant (write, then last_checkpoint, then rotate),
and a full disk leaves the previous checkpoint and last_checkpoint as they were."""
import errno
import os
import os.path as osp

import pytest
from mmengine.fileio.backends.local_backend import LocalBackend

import mmfusion.engine  # noqa: F401  (registers mmfusion.SafeCheckpointHook, applies the compat fixes)
from mmfusion.utils.errors import UserError
from tests._tiny_runner import tiny_runner


def _checkpoints(folder):
    return sorted(f for f in os.listdir(folder) if f.startswith('iter_') and f.endswith('.pth'))


def _watch_saves(monkeypatch, work_dir):
    """Record, as each checkpoint starts being written, the checkpoints already on disk and last_checkpoint."""
    seen = []
    stock_put = LocalBackend.put

    def put(self, obj, filepath):
        if str(filepath).endswith('.pth'):
            last = osp.join(work_dir, 'last_checkpoint')
            seen.append((osp.basename(str(filepath)), _checkpoints(work_dir),
                         open(last).read() if osp.exists(last) else None))
        return stock_put(self, obj, filepath)

    monkeypatch.setattr(LocalBackend, 'put', put)
    return seen


@pytest.mark.parametrize('hook_type,gap', [('CheckpointHook', True), ('mmfusion.SafeCheckpointHook', False)])
def test_never_zero_checkpoints_on_disk(tmp_path, monkeypatch, hook_type, gap):
    """With max_keep_ckpts=1 (the demo configs) the stock hook deletes iter_2.pth before it writes iter_4.pth."""
    seen = _watch_saves(monkeypatch, str(tmp_path))
    runner = tiny_runner(tmp_path, max_iters=6, default_hooks=dict(
        checkpoint=dict(type=hook_type, interval=2, by_epoch=False, max_keep_ckpts=1)))
    runner.train()
    assert [name for name, _, _ in seen] == ['iter_2.pth', 'iter_4.pth', 'iter_6.pth']
    on_disk = [ckpts for _, ckpts, _ in seen[1:]]
    if gap:
        assert on_disk == [[], []]  # nothing to resume from while the new checkpoint is written
        return
    assert on_disk == [['iter_2.pth'], ['iter_4.pth']]
    # last_checkpoint named the complete previous checkpoint while the next one was written, and now the last one
    assert [last for _, _, last in seen[1:]] == [str(tmp_path / 'iter_2.pth'), str(tmp_path / 'iter_4.pth')]
    assert _checkpoints(tmp_path) == ['iter_6.pth']
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_6.pth')
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]


def test_tools_use_the_safe_hook():
    from mmengine.config import Config

    from mmfusion.apis.runner_utils import use_safe_checkpoint_hook
    cfg = Config(dict(default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=5))))
    use_safe_checkpoint_hook(cfg)
    assert cfg.default_hooks.checkpoint.type == 'mmfusion.SafeCheckpointHook'


def test_disk_full_leaves_the_previous_checkpoint_and_last_checkpoint(tmp_path, monkeypatch):
    stock_put = LocalBackend.put

    def put(self, obj, filepath):
        if str(filepath).endswith('iter_4.pth'):  # the disk fills up while iter_4.pth is written
            raise OSError(errno.ENOSPC, 'No space left on device', str(filepath))
        return stock_put(self, obj, filepath)

    monkeypatch.setattr(LocalBackend, 'put', put)
    runner = tiny_runner(tmp_path, max_iters=6, default_hooks=dict(
        checkpoint=dict(type='mmfusion.SafeCheckpointHook', interval=2, by_epoch=False, max_keep_ckpts=1)))
    before = (tmp_path / 'iter_2.pth')
    with pytest.raises(UserError) as info:
        runner.train()
    assert str(info.value) == (
        f'no space left on the disk while writing {tmp_path}/iter_4.pth (No space left on device); '
        f'{tmp_path}/iter_2.pth and last_checkpoint are intact; free space (or set max_keep_ckpts lower) and continue '
        'with tools/train.py CONFIG --resume')
    assert _checkpoints(tmp_path) == ['iter_2.pth'] and before.stat().st_size > 0
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_2.pth')
    from mmfusion.compat import checkpoint_problem
    assert checkpoint_problem(str(before)) is None
