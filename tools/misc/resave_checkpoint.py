"""Re-save a checkpoint written by a stock mmengine so that weight-only loading accepts it.

Stock mmengine 0.10.7 pickles HistoryBuffer statistic methods through ``builtins.getattr``, which torch's
weight-only loader refuses (see ``mmfusion/compat.py``). This tool loads the file **with full unpickling** -- so
only run it on files you trust -- and writes it back with mmfusion's patched HistoryBuffer pickling.

    python tools/misc/resave_checkpoint.py work_dirs/x/iter_1000.pth [--out new.pth] [--yes] [--overwrite]

It asks before unpickling; without a terminal to ask on (a script, a batch job) it stops and asks for ``--yes``.
Expected failures end with one line ``error: <problem>; <fix>`` (exit status 2).
"""
import argparse
import os
import sys

import torch

import mmfusion.registry  # noqa: F401  (applies the compat fixes: patched HistoryBuffer pickling)
from mmfusion.apis.runner_utils import add_debug_arg, run_tool
from mmfusion.utils.errors import UserError


def _main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('checkpoint')
    parser.add_argument('--out', help='output path (default: <name>.safe.pth beside the input)')
    parser.add_argument('--yes', action='store_true', help='do not ask before unpickling the file fully')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --out file')
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    if not os.path.isfile(args.checkpoint):
        raise UserError(f'no such checkpoint: {args.checkpoint}; pass an existing .pth')
    out = args.out or os.path.splitext(args.checkpoint)[0] + '.safe.pth'
    if os.path.exists(out) and os.path.samefile(out, args.checkpoint):
        raise UserError(f'--out {out} is the input checkpoint; write the re-saved copy elsewhere (nothing written)')
    if os.path.exists(out) and not args.overwrite:
        raise UserError(f'{out} exists; pass another --out, or --overwrite to replace it (nothing written)')
    if not args.yes:
        if not sys.stdin or not sys.stdin.isatty():
            raise UserError(f'fully unpickling {args.checkpoint} can run code stored in it, and there is no terminal '
                            'to ask whether you trust it; if you do, pass --yes (nothing written)')
        answer = input(f'Fully unpickling {args.checkpoint} can run code stored in it. Trust it? [y/N] ')
        if answer.strip().lower() not in ('y', 'yes'):
            raise UserError('not confirmed; nothing written (pass --yes to skip the question)')
    ckpt = torch.load(args.checkpoint, map_location='cpu', weights_only=False)
    torch.save(ckpt, out)
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(out)
    if unsafe:
        raise UserError(f'{out} still holds non-allow-listed objects {unsafe}; they are not written by MMEngine, '
                        'check where they come from')
    print(f'wrote {out}')
    return 0


def main(argv=None) -> int:
    """Re-save; returns 0. Expected failures print one ``error:`` line and exit with status 2."""
    return run_tool(_main, argv)


if __name__ == '__main__':
    sys.exit(main())
