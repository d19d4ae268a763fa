"""One training run per work dir.

Two runs in one work dir overwrite and delete each other's checkpoints, ``last_checkpoint`` and SC/EF files without a
word. ``tools/train.py`` takes a lock file in the work dir (``.mmfusion-train.lock``: the owner's PID, host, process
start time and, under ``torchrun``, the run's rendezvous) before the Runner is built and gives it back when the run
ends:

- a second run into the same work dir is refused with one line naming the running one;
- a lock left by a process that no longer runs (killed, e.g. by ``SIGKILL``, or its machine rebooted) on this host is
  taken over with a note; on another host liveness cannot be checked, so the message says which file to delete;
- the ranks of one distributed run share the lock: they carry the same rendezvous (``MASTER_ADDR``, ``MASTER_PORT``,
  ``TORCHELASTIC_RUN_ID``), whichever rank takes it first.
"""
from __future__ import annotations

import atexit
import json
import os
import os.path as osp
import socket
import sys
import time
from typing import Optional

from mmfusion.utils.errors import UserError

__all__ = ['LOCK_NAME', 'lock_work_dir', 'release_work_dir', 'read_lock']

LOCK_NAME = '.mmfusion-train.lock'
_HELD: dict = {}  # lock path -> the content this process wrote


def _start_time(pid: int) -> Optional[str]:
    """The process's start time in clock ticks since boot (Linux ``/proc``), which tells a reused PID apart."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: Optional[str]) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's live process
    now = _start_time(pid)
    return start is None or now is None or now == start


def _run_key() -> Optional[str]:
    """What the processes of one ``torchrun`` launch share (None outside a distributed launch)."""
    env = os.environ
    if int(env.get('WORLD_SIZE', '1') or 1) <= 1 or 'MASTER_PORT' not in env:
        return None
    return f'{env.get("MASTER_ADDR", "")}:{env["MASTER_PORT"]}/{env.get("TORCHELASTIC_RUN_ID", "")}'


def read_lock(path: str) -> Optional[dict]:
    """The owner recorded in a lock file; None if it is unreadable (being written, or damaged)."""
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) and isinstance(data.get('pid'), int) else None
    except (OSError, ValueError):
        return None


def _describe(owner: dict) -> str:
    return f'pid {owner.get("pid")} on host {owner.get("host")}, started {owner.get("started", "?")}'


def lock_work_dir(work_dir: str) -> str:
    """Take the work dir's lock for this training run (released at exit, or by :func:`release_work_dir`).

    Args:
        work_dir (str): The run's work dir (it exists).

    Returns:
        str: The lock file.

    Raises:
        UserError: another live run holds it.
    """
    path = osp.join(work_dir, LOCK_NAME)
    pid, host = os.getpid(), socket.gethostname()
    me = dict(pid=pid, host=host, start=_start_time(pid), run=_run_key(),
              started=time.strftime('%Y-%m-%d %H:%M:%S'), argv=' '.join(sys.argv))
    for _ in range(50):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = read_lock(path)
            if owner is None:  # being written by its owner this instant, or damaged
                if time.time() - _mtime(path) > 5:
                    _take_over(path, work_dir, 'an unreadable lock')
                else:
                    time.sleep(0.1)
                continue
            if owner['pid'] == pid and owner.get('host') == host:
                return path  # this process holds it already (a second run in one Python session)
            if me['run'] is not None and owner.get('run') == me['run']:
                return path  # another rank of this distributed run took it
            if owner.get('host') == host and not _alive(owner['pid'], owner.get('start')):
                _take_over(path, work_dir, f'the lock of a run that is no longer running ({_describe(owner)})')
                continue
            where = '' if owner.get('host') == host else (
                f'; if that run is gone (its host cannot be checked from here), delete {path}')
            raise UserError(f'--work-dir {work_dir} is in use by another training run ({_describe(owner)}, lock '
                            f'{LOCK_NAME}); wait for it to finish or pass another --work-dir{where}') from None
        with os.fdopen(fd, 'w') as f:
            json.dump(me, f)
        _HELD[path] = me
        return path
    raise UserError(f'could not take the lock {path} of --work-dir {work_dir}; delete it if no run uses that work dir')


def _mtime(path: str) -> float:
    try:
        return osp.getmtime(path)
    except OSError:
        return time.time()


def _take_over(path: str, work_dir: str, what: str) -> None:
    print(f'note: --work-dir {work_dir}: taking over {what}', file=sys.stderr, flush=True)
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def release_work_dir(path: Optional[str] = None) -> None:
    """Give back the lock(s) this process took (only if the file still names this process)."""
    for held in ([path] if path else list(_HELD)):
        mine = _HELD.pop(held, None)
        if mine is None:
            continue
        owner = read_lock(held)
        if owner is not None and owner.get('pid') == mine['pid'] and owner.get('start') == mine['start']:
            try:
                os.remove(held)
            except FileNotFoundError:
                pass


atexit.register(release_work_dir)
