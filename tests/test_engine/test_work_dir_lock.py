"""One training run per work dir: a second run is refused naming the first, a dead run's lock is taken over with a
note, and the ranks of one distributed run share the lock."""
import json
import os
import subprocess
import sys
import time

import pytest

from mmfusion.engine.work_dir_lock import LOCK_NAME, lock_work_dir, read_lock, release_work_dir
from mmfusion.utils.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOLD = ('import sys, time\nfrom mmfusion.engine.work_dir_lock import lock_work_dir\nlock_work_dir(sys.argv[1])\n'
        'print("held", flush=True)\ntime.sleep(120)\n')


@pytest.fixture()
def holder(tmp_path):
    """Another process holding the lock of tmp_path/work."""
    work = tmp_path / 'work'
    work.mkdir()
    proc = subprocess.Popen([sys.executable, '-c', HOLD, str(work)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT)
    assert proc.stdout.readline().strip() == 'held'
    yield work, proc
    proc.kill()
    proc.wait()


def test_second_run_is_refused_naming_the_first(holder):
    work, proc = holder
    with pytest.raises(UserError) as info:
        lock_work_dir(str(work))
    host = read_lock(str(work / LOCK_NAME))['host']
    msg = str(info.value)
    assert msg.startswith(f'--work-dir {work} is in use by another training run (pid {proc.pid} on host {host}, '
                          'started ') and msg.endswith('wait for it to finish or pass another --work-dir')


def test_lock_of_a_killed_run_is_taken_over_with_a_note(holder, capsys):
    work, proc = holder
    proc.kill()  # SIGKILL: no clean-up, the lock file stays
    proc.wait()
    assert read_lock(str(work / LOCK_NAME))['pid'] == proc.pid
    path = lock_work_dir(str(work))
    assert read_lock(path)['pid'] == os.getpid()
    assert capsys.readouterr().err.startswith(f'note: --work-dir {work}: taking over the lock of a run that is no '
                                              f'longer running (pid {proc.pid} on host ')
    release_work_dir(path)
    assert not os.path.exists(path)


def test_ranks_of_one_distributed_run_share_the_lock(holder, monkeypatch):
    """The holder stands for rank 0 of a torchrun launch; this process for another rank (same rendezvous) or for a
    rank of another launch."""
    work, proc = holder
    path = str(work / LOCK_NAME)
    owner = read_lock(path)
    owner['run'] = '10.0.0.1:29500/job7'
    with open(path, 'w') as f:
        json.dump(owner, f)
    monkeypatch.setenv('WORLD_SIZE', '2')
    monkeypatch.setenv('MASTER_ADDR', '10.0.0.1')
    monkeypatch.setenv('TORCHELASTIC_RUN_ID', 'job7')
    monkeypatch.setenv('MASTER_PORT', '29500')
    assert lock_work_dir(str(work)) == path and read_lock(path)['pid'] == proc.pid  # shared, not taken
    monkeypatch.setenv('MASTER_PORT', '29501')  # another launch
    with pytest.raises(UserError, match='is in use by another training run'):
        lock_work_dir(str(work))


def test_two_train_tools_at_once_the_second_is_refused_in_one_line_before_the_runner(holder, tmp_path):
    """Through a real interpreter: the line and exit status a shell sees, within seconds."""
    work, proc = holder
    (work / '.mmfusion-work-dir').write_text('')
    cfg = tmp_path / 'cfg.py'
    cfg.write_text("default_scope = 'mmdet'\nmodel = dict(type='Mask2Former')\n")
    start = time.monotonic()
    res = subprocess.run([sys.executable, 'tools/train.py', str(cfg), '--work-dir', str(work)], capture_output=True,
                         text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT, MMFUSION_DEBUG='0'), timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith(f'error: --work-dir {work} is in use by another training run (pid {proc.pid} ')
    assert 'System environment' not in res.stdout + res.stderr and 'Traceback' not in res.stderr
    assert read_lock(str(work / LOCK_NAME))['pid'] == proc.pid  # the running one keeps it
    print(f'refused after {time.monotonic() - start:.1f} s')
