"""The compat layer: mmengine checkpoints resume under torch's weights-only loading, nothing else is let through."""
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch
from mmengine.logging import HistoryBuffer

import mmfusion  # noqa: F401  (applies the fixes)
from mmfusion.compat import UnsafeCheckpointError

from ._tiny_runner import tiny_runner


def test_runner_checkpoint_resumes_with_weights_only(tmp_path):
    first = tiny_runner(tmp_path / 'a', max_iters=2)
    first.train()
    ckpt = tmp_path / 'a' / 'iter_2.pth'
    assert ckpt.is_file()
    # Nothing outside the allow-list is in the file, and getattr in particular is gone.
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(ckpt)) == []
    saved_weight = first.model.fc.weight.detach().clone()

    resumed = tiny_runner(tmp_path / 'b', max_iters=3, resume=True, load_from=str(ckpt))
    resumed.train()
    assert resumed.iter == 3
    # The message hub (HistoryBuffers holding numpy arrays) came back: the loss history has 2 + 1 entries.
    assert len(resumed.message_hub.get_scalar('train/loss').data[0]) == 3
    assert set(HistoryBuffer._statistics_methods) >= {'min', 'max', 'mean', 'current'}
    # Resumed from the saved weights, then took one more step: close to, but not equal to, the saved ones.
    delta = (resumed.model.fc.weight - saved_weight).abs().max().item()
    assert 0 < delta < 0.1


class _Evil:

    def __reduce__(self):
        return (os.system, ('echo pwned',))


def test_arbitrary_pickled_object_is_refused(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'meta': _Evil()}, path)
    from mmengine.runner.checkpoint import _load_checkpoint
    with pytest.raises(UnsafeCheckpointError, match='posix.system|os.system|nt.system'):
        _load_checkpoint(str(path), map_location='cpu')
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)


def test_stock_history_buffer_pickle_is_refused_with_explanation(tmp_path):
    buf = HistoryBuffer([1.0, 2.0], [1, 1])
    state = dict(buf.__dict__, statistics_methods={'min': HistoryBuffer.min})  # what stock mmengine writes
    buf2 = HistoryBuffer.__new__(HistoryBuffer)
    buf2.__dict__.update(state)
    path = tmp_path / 'stock.pth'
    # Pickle the instance with the stock layout by bypassing our __getstate__.
    with open(path, 'wb') as f:
        torch.save({'message_hub': {'log_scalars': {'loss': _StockPickled(buf2)}}}, f)
    from mmengine.runner.checkpoint import _load_checkpoint
    with pytest.raises(UnsafeCheckpointError, match='resave_checkpoint'):
        _load_checkpoint(str(path), map_location='cpu')


class _StockPickled:
    """Pickles a HistoryBuffer the way mmengine 0.10.7 does (its methods via getattr)."""

    def __init__(self, buf):
        self.buf = buf

    def __reduce__(self):
        return (_rebuild, (self.buf.__dict__, ))


def _rebuild(state):  # pragma: no cover - only unpickled with weights_only=False
    buf = HistoryBuffer.__new__(HistoryBuffer)
    buf.__setstate__(state)
    return buf


def test_stock_mmengine_cannot_resume_without_mmfusion(tmp_path):
    """The bug the compat layer fixes exists in the pinned stack (if this fails, the fix may be dropped)."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import torch
        from _tiny_runner import tiny_runner
        assert 'mmfusion' not in sys.modules
        tiny_runner({str(tmp_path / 'a')!r}, max_iters=2).train()
        try:
            tiny_runner({str(tmp_path / 'b')!r}, max_iters=3, resume=True,
                    load_from={str(tmp_path / 'a' / 'iter_2.pth')!r}).train()
        except Exception as e:
            print('REFUSED', type(e).__name__)
            sys.exit(0)
        sys.exit(1)
    """)
    env = dict(os.environ, PYTHONPATH='')
    res = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert 'REFUSED UnpicklingError' in res.stdout
