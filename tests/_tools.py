"""Loading a script (of tools/, benchmarks/ or an installed package) as a module, for tests that call it in-process;
a free port for the tests that launch torchrun; killing a training run at a checkpoint."""
import importlib.util
import os.path as osp
import signal
import socket
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def load_script(path: str, name: str = None):
    """The Python file ``path`` (absolute, or relative to the repository root) as a fresh module."""
    path = osp.join(ROOT, str(path))
    spec = importlib.util.spec_from_file_location(name or osp.splitext(osp.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_tool(relpath: str):
    """The script ``tools/<relpath>`` as a fresh module (e.g. ``load_tool('analysis/profile_vfm.py')``)."""
    return load_script(osp.join('tools', relpath))


def free_port() -> int:
    """A TCP port free now, for a torchrun rendezvous: fixed ports collide when pytest-xdist workers launch runs at
    the same time (a module fixture runs once per worker)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def sigkill_when_held(proc, log, work_dir: str, timeout: float) -> None:
    """Wait until the training run ``proc`` (logging to the open file ``log``) writes ``work_dir/HELD`` (it holds
    there after a checkpoint), then SIGKILL it and close ``log``."""
    held = osp.join(work_dir, 'HELD')
    deadline = time.monotonic() + timeout
    while not osp.exists(held):
        assert proc.poll() is None, open(log.name).read()[-3000:]
        assert time.monotonic() < deadline, 'the run never reached its checkpoint'
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    log.close()
