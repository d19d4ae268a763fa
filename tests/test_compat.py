"""The compat layer: mmengine checkpoints resume under torch's weights-only loading, nothing else is let through."""
import builtins
import os
import os.path as osp
import pickle
import struct
import subprocess
import sys
import textwrap

import pytest
import torch
from mmengine.logging import HistoryBuffer

import mmfusion.registry  # noqa: F401  (compat fixes and registries, before anything builds)
from mmfusion.compat import CorruptCheckpointError, UnsafeCheckpointError, checkpoint_problem
from tests._tools import free_port

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


# --- checkpoints a kill cannot break ------------------------------------------------------------------------------


def _truncate(path, keep=0.5):
    data = open(path, 'rb').read()
    with open(path, 'wb') as f:
        f.write(data[:int(len(data) * keep)])


class _DiesHalfway:
    """A file whose first write stores half the bytes, then the process 'is killed'."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(data[:len(data) // 2])
        self.f.flush()
        raise KeyboardInterrupt('killed while writing')

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def __getattr__(self, name):
        return getattr(self.f, name)


def test_interrupted_checkpoint_write_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    from mmengine.runner.checkpoint import save_checkpoint
    path = tmp_path / 'iter_2.pth'
    save_checkpoint({'w': torch.zeros(1000)}, str(path))
    before = path.read_bytes()
    real_open = builtins.open

    def dying_open(file, mode='r', *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return _DiesHalfway(f) if 'w' in mode and 'iter_2.pth' in os.fspath(file) else f

    monkeypatch.setattr(builtins, 'open', dying_open)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({'w': torch.ones(1000)}, str(path))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ['iter_2.pth']  # the temporary file is gone too


def test_checkpoint_problem_finds_truncation_and_corruption(tmp_path):
    path = tmp_path / 'c.pth'
    torch.save({'w': torch.full((1000, ), 1.2345)}, path)
    assert checkpoint_problem(str(path)) is None
    data = bytearray(path.read_bytes())
    at = data.find(struct.pack('<f', 1.2345) * 4)
    data[at + 1] ^= 0xFF  # one flipped bit pattern inside the tensor's bytes
    (tmp_path / 'flipped.pth').write_bytes(bytes(data))
    assert checkpoint_problem(str(tmp_path / 'flipped.pth')).startswith('is corrupt (its member ')
    _truncate(path)
    assert checkpoint_problem(str(path)).startswith('is truncated or corrupt')
    (tmp_path / 'empty.pth').write_bytes(b'')
    assert checkpoint_problem(str(tmp_path / 'empty.pth')) == 'is empty'


def test_auto_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path):
    tiny_runner(tmp_path, max_iters=4).train()  # iter_2.pth, iter_4.pth; last_checkpoint names iter_4.pth
    _truncate(tmp_path / 'iter_4.pth')
    resumed = tiny_runner(tmp_path, max_iters=5, resume=True)
    resumed.train()
    assert resumed.iter == 5
    log = open(osp.join(resumed.log_dir, f'{resumed.timestamp}.log')).read()
    assert f'{tmp_path}/last_checkpoint names {tmp_path}/iter_4.pth, but it is truncated or corrupt' in log
    assert f'resuming from {tmp_path}/iter_2.pth' in log and 'resumed epoch: 0, iter: 2' in log


def test_auto_resume_takes_the_newest_intact_checkpoint_whatever_last_checkpoint_names(tmp_path):
    """A kill after iter_4.pth is written but before last_checkpoint is updated: the stock CheckpointHook has already
    deleted the iter_2.pth that last_checkpoint still names."""
    from mmfusion.compat import resume_checkpoint
    tiny_runner(tmp_path, max_iters=4).train()
    os.remove(tmp_path / 'iter_2.pth')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_2.pth'))
    with pytest.warns(UserWarning, match=f'names {tmp_path}/iter_2.pth, but that file does not exist .*; resuming '
                      f'from {tmp_path}/iter_4.pth, the newest intact checkpoint'):
        assert resume_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_4.pth')
    # Killed between the two writes with the checkpoint kept: last_checkpoint names the older one.
    tiny_runner(tmp_path / 'b', max_iters=4).train()
    (tmp_path / 'b' / 'last_checkpoint').write_text(str(tmp_path / 'b' / 'iter_2.pth'))
    with pytest.warns(UserWarning, match='but a newer one is beside it'):
        assert resume_checkpoint(str(tmp_path / 'b')) == str(tmp_path / 'b' / 'iter_4.pth')
    assert resume_checkpoint(str(tmp_path / 'empty')) is None  # nothing there: a fresh run


def test_explicit_corrupt_checkpoint_is_refused_in_one_line(tmp_path):
    tiny_runner(tmp_path / 'a', max_iters=2).train()
    path = str(tmp_path / 'a' / 'iter_2.pth')
    _truncate(path)
    with pytest.raises(CorruptCheckpointError) as info:
        tiny_runner(tmp_path / 'b', max_iters=3, resume=True, load_from=path).train()
    msg = str(info.value)
    assert msg.startswith(f'cannot resume from {path}: it is truncated or corrupt') and '\n' not in msg


def test_empty_last_checkpoint_resumes_from_the_newest_intact_checkpoint(tmp_path):
    tiny_runner(tmp_path, max_iters=2).train()
    (tmp_path / 'last_checkpoint').write_text('')
    resumed = tiny_runner(tmp_path, max_iters=3, resume=True)
    resumed.train()
    assert resumed.iter == 3
    log = open(osp.join(resumed.log_dir, f'{resumed.timestamp}.log')).read()
    assert f'{tmp_path}/last_checkpoint is empty (the run was stopped while writing it); resuming from ' \
        f'{tmp_path}/iter_2.pth' in log


def test_no_intact_checkpoint_is_refused_in_one_line(tmp_path):
    tiny_runner(tmp_path, max_iters=2).train()
    _truncate(tmp_path / 'iter_2.pth')
    with pytest.raises(CorruptCheckpointError) as info:
        tiny_runner(tmp_path, max_iters=3, resume=True).train()
    msg = str(info.value)
    assert msg.startswith(f'no intact checkpoint in {tmp_path}: {tmp_path}/iter_2.pth is truncated or corrupt') \
        and '\n' not in msg


def test_flexible_runner_resume_is_checked_too(tmp_path):
    from mmengine.runner import FlexibleRunner
    tiny_runner(tmp_path, max_iters=2).train()
    _truncate(tmp_path / 'iter_2.pth')
    with pytest.raises(CorruptCheckpointError, match='no intact checkpoint in'):
        tiny_runner(tmp_path, max_iters=3, runner_cls=FlexibleRunner, resume=True).train()


# --- FSDP (FlexibleRunner + FSDPStrategy) on CPU processes --------------------------------------------------------


@pytest.fixture(scope='module')
def fsdp_run(tmp_path_factory):
    """One 2-process run of tests/_fsdp_compat_run.py: a sharded SGD step with clipping, a 'full' checkpoint, a
    resume."""
    out = tmp_path_factory.mktemp('fsdp_compat')
    root = osp.dirname(osp.dirname(osp.abspath(__file__)))
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=root)
    res = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', str(free_port()),
         osp.join(root, 'tests', '_fsdp_compat_run.py'), str(out)],
        capture_output=True, text=True, env=env, timeout=300, cwd=str(out))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return torch.load(out / 'result.pt', weights_only=True)


@pytest.mark.slow  # a 2-process run (shared by the FSDP tests)
def test_fsdp_strategy_wraps_a_cpu_model(fsdp_run):
    """FSDPStrategy passes device_id=LOCAL_RANK, an accelerator index; without a GPU the model is sharded on CPU."""
    assert {k: tuple(v.shape) for k, v in fsdp_run['stepped'].items()} == {
        'fc1.weight': (4, 3), 'fc1.bias': (4, ), 'fc2.weight': (1, 4), 'fc2.bias': (1, )}


@pytest.mark.slow  # a 2-process run (shared by the FSDP tests)
def test_fsdp_clips_by_the_global_gradient_norm(fsdp_run):
    """The clipped, sharded step is the unsharded one: the norm is the whole gradient's, not a rank's shard's."""
    assert fsdp_run['grad_norm'] == pytest.approx(fsdp_run['reference_norm'], rel=1e-5)
    assert fsdp_run['reference_norm'] > 0.1  # MAX_NORM of the run: clipping changed the step
    for key, value in fsdp_run['reference'].items():
        torch.testing.assert_close(fsdp_run['stepped'][key], value, msg=key)


@pytest.mark.slow  # a 2-process run (shared by the FSDP tests)
def test_fsdp_full_checkpoint_saves_and_loads_on_cpu(fsdp_run):
    """Saving gathers the weights without an 'offload to CPU' (which, on CPU, freed them while still referenced)."""
    for key, value in fsdp_run['stepped'].items():
        torch.testing.assert_close(fsdp_run['resumed_weights'][key], value, msg=key)


@pytest.mark.slow  # a 2-process run (shared by the FSDP tests)
def test_fsdp_resume_restores_the_optimizer_state(fsdp_run):
    """Resuming calls FSDP.optim_state_dict_to_load with torch's argument order (model, optim, state_dict)."""
    saved, resumed = fsdp_run['saved_optim']['state'], fsdp_run['resumed_optim']['state']
    assert sorted(saved) == sorted(resumed) == ['fc1.bias', 'fc1.weight', 'fc2.bias', 'fc2.weight']
    for name in saved:
        assert saved[name]['momentum_buffer'].abs().sum() > 0
        torch.testing.assert_close(resumed[name]['momentum_buffer'], saved[name]['momentum_buffer'], msg=name)


@pytest.mark.slow  # a 2-process run (shared by the FSDP tests)
def test_fsdp_resume_restores_the_scheduled_base_lr(fsdp_run):
    assert fsdp_run['base_lr'] == pytest.approx(0.5 * 2 / 3)  # LinearLR 0.5 -> 1 over 4 steps, after one step
    assert fsdp_run['resumed_base_lr'] == fsdp_run['base_lr']


# --- init_weights of a model built on the meta device ------------------------------------------------------------


def test_init_weights_of_a_model_with_meta_parameters():
    """MMEngine's top-level init_weights reads every parameter's mean first, which meta parameters cannot give."""
    from mmengine.model import BaseModule

    class MetaBuilt(BaseModule):
        """Built without weights; its init_weights gives them values in place (the Parameter objects are kept)."""

        def __init__(self):
            super().__init__()
            with torch.device('meta'):
                self.fc = torch.nn.Linear(2, 3)

        def init_weights(self):
            for param in self.fc.parameters():
                torch.utils.swap_tensors(param, torch.nn.Parameter(torch.full(param.shape, 0.5)))
            self._is_init = True

    model = BaseModule()
    model.meta_built = MetaBuilt()
    model.head = torch.nn.Linear(3, 1)
    model.init_weights()
    assert not any(p.is_meta for p in model.parameters())
    torch.testing.assert_close(model.meta_built.fc.weight, torch.full((3, 2), 0.5))
    assert not any(hasattr(m, '_params_init_info') for m in model.modules())  # the bookkeeping is cleaned up
