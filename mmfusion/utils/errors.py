"""The failures a user can fix, and how a tool says them: one line, ``error: <problem>; <fix>``, no traceback.

A tool raises :class:`UserError` (or lets one of :func:`user_error_types` through) when the input is wrong; the
shared guard :func:`mmfusion.apis.runner_utils.run_tool` prints :func:`one_line` of it and exits with status 2.
Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import re
import sys

__all__ = ['UserError', 'UnreadableImageError', 'user_error_types', 'one_line', 'DEBUG_ENV']

# Set to 1 to see the traceback of an expected failure (the tools' ``--debug`` flag does the same).
DEBUG_ENV = 'MMFUSION_DEBUG'

# Expected failures raised by other mmfusion modules with their own exception types: (module, class name). They are
# looked up only when their module is already imported (an exception of that type cannot exist otherwise).
_OTHER_TYPES = (
    ('mmfusion.apis.profiling', 'ProfileError'),
    ('mmfusion.models.backbones.checkpoint_io', 'CheckpointMismatchError'),
    ('mmfusion.compat', 'UnsafeCheckpointError'),
    ('mmfusion.compat', 'CorruptCheckpointError'),
)
# What MMEngine's registry prefixes to an error raised while building a module.
_BUILD_PREFIX = re.compile(r'^(class `\w+` in [^:]+: )+')


class UserError(Exception):
    """Input a user can fix: a missing or wrong file, folder, flag or config key.

    The message says what is wrong and how to fix it; tools print it as one line without a traceback.
    """


class UnreadableImageError(UserError):
    """An image file that cannot be decoded (empty, not an image, corrupt, truncated); the message names it."""


def user_error_types() -> tuple:
    """The exception types printed as one line: :class:`UserError`, a file or folder that does not exist (e.g. the
    pretrained weights an encoder asks for), an output that exists already, and the expected failures of other
    mmfusion modules."""
    types = [UserError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError]
    for module, name in _OTHER_TYPES:
        if module in sys.modules:
            types.append(getattr(sys.modules[module], name))
    return tuple(types)


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line, without the registry's ``class `X` in file.py:`` prefixes."""
    msg = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else str(exc)
    msg = str(msg)
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        msg = f'{exc.strerror}: {exc.filename}'  # e.g. open() of a missing file: '[Errno 2] ...' -> readable
    msg = _BUILD_PREFIX.sub('', msg)
    return ' '.join(msg.split()) or type(exc).__name__
