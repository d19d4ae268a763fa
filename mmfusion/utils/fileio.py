"""Output folders the tools own: a tool writes, replaces or deletes only inside a folder it created.

A folder a tool creates (or finds empty) gets a marker file ``.mmfusion-<kind>`` (e.g. ``.mmfusion-demo``). A tool
later writes into, or clears, only a folder that holds its marker; a folder with anything else in it is the user's
and is refused with a :class:`~mmfusion.utils.errors.UserError` that names the flag to change. Nothing is deleted
before that check.

Example:
    >>> out = claim_dir('demo_output', kind='demo', flag='--out-dir')  # doctest: +SKIP
    >>> remove_outputs(out, 'demo', ['train', 'summary.json'], flag='--out-dir')  # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import os
import os.path as osp
import shutil
from collections.abc import Iterable, Iterator
from typing import Union

from .errors import UserError

__all__ = [
    'MARKER_PREFIX', 'marker_path', 'is_owned', 'mark_dir', 'claim_dir', 'remove_outputs', 'refuse_existing'
]

MARKER_PREFIX = '.mmfusion-'
# Folders claim_dir created in this process, in order (a tool that then fails removes those it left empty).
CREATED_DIRS: list = []


def marker_path(folder: str, kind: str) -> str:
    """Where the marker of ``kind`` lives in ``folder``."""
    return osp.join(folder, MARKER_PREFIX + kind)


def is_owned(folder: str, kind: str) -> bool:
    """Whether ``folder`` holds the marker of ``kind`` (a tool of that kind created it)."""
    return osp.isfile(marker_path(folder, kind))


def mark_dir(folder: str, kind: str) -> None:
    """Write the marker of ``kind`` into the existing ``folder`` (its caller created it or found it empty)."""
    with open(marker_path(folder, kind), 'w') as f:
        f.write(f'Created by mmfusion ({kind}). mmfusion tools write into and clear only folders with this file.\n')


def claim_dir(folder: str, kind: str, flag: str, create: bool = True) -> str:
    """Make ``folder`` an output folder of ``kind``: create and mark it, or accept it when empty or already marked.

    Args:
        folder (str): The output folder.
        kind (str): Who owns it, e.g. ``'demo'``; the marker is ``.mmfusion-<kind>``.
        flag (str): The command-line flag that chose the folder, named in the refusal.
        create (bool): Create and mark the folder; False only checks that it may be claimed (to fail before a long
            build). Default: True.

    Returns:
        str: ``folder``.

    Raises:
        UserError: ``folder`` is a file, or a non-empty folder without the marker.
    """
    if osp.isfile(folder):
        raise UserError(f'{flag} {folder} is a file; pass {flag} a new or empty folder')
    if osp.isdir(folder):
        if is_owned(folder, kind):
            return folder
        if os.listdir(folder):
            raise UserError(f'{flag} {folder} is a folder that mmfusion did not create (no {MARKER_PREFIX}{kind} '
                            f'in it) and it is not empty; pass {flag} a new or empty folder (nothing was changed)')
    if not create:
        return folder
    if not osp.isdir(folder):
        CREATED_DIRS.append(folder)
    os.makedirs(folder, exist_ok=True)
    mark_dir(folder, kind)
    return folder


def remove_outputs(folder: str, kind: str, names: Iterable[str], flag: str) -> list[str]:
    """Delete the entries ``names`` of an owned ``folder`` (a previous run's outputs); anything else stays.

    Args:
        folder (str): An output folder of ``kind`` (see :func:`claim_dir`); nothing happens if it does not exist.
        kind (str): Its owner.
        names (Iterable[str]): Entry names directly in ``folder`` that the tool writes.
        flag (str): The flag that chose the folder, named in the refusal.

    Returns:
        list[str]: The paths deleted.

    Raises:
        UserError: ``folder`` exists without the marker of ``kind`` (it is not the tool's; nothing is deleted).
    """
    if not osp.exists(folder):
        return []
    if not osp.isdir(folder) or not is_owned(folder, kind):
        claim_dir(folder, kind, flag)  # raises unless the folder is empty (then it is marked and has no outputs)
        return []
    removed = []
    for name in names:
        if osp.basename(name) != name or name in ('', '.', '..') or name.startswith(MARKER_PREFIX):
            raise ValueError(f'remove_outputs takes entry names directly in the folder, got {name!r}')
        path = osp.join(folder, name)
        if osp.isdir(path) and not osp.islink(path):
            shutil.rmtree(path)
        elif osp.lexists(path):
            os.remove(path)
        else:
            continue
        removed.append(path)
    return removed


def refuse_existing(paths: Iterable[str], fix: str) -> None:
    """Refuse to write over files or folders that exist already (a tool cannot tell whether it made them).

    Args:
        paths (Iterable[str]): The outputs a tool is about to write.
        fix (str): How to proceed, e.g. ``'pass --overwrite to replace them'``.

    Raises:
        UserError: some path exists; the message names the first and counts the others.
    """
    existing = [p for p in paths if osp.lexists(p)]
    if existing:
        more = f' (and {len(existing) - 1} more)' if len(existing) > 1 else ''
        raise UserError(f'{existing[0]} already exists{more}; {fix} (nothing was overwritten)')


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary path beside ``path`` to write to: when the block ends it is flushed to disk and renamed over
    ``path``, so a kill or a full disk leaves the old file or the new one, never a partial (or 0-byte) one; when the
    block raises, it is removed and ``path`` is left as it was."""
    folder = osp.dirname(osp.abspath(path))
    tmp = osp.join(folder, f'.{osp.basename(path)}.{os.getpid()}.tmp')
    try:
        yield tmp
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def atomic_write(path: str, data: Union[bytes, str]) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp, open(tmp, 'wb') as f:
        f.write(data.encode('utf-8') if isinstance(data, str) else data)
