"""Re-save a checkpoint written by a stock mmengine so that weight-only loading accepts it.

Stock mmengine 0.10.7 pickles HistoryBuffer statistic methods through ``builtins.getattr``, which torch's
weight-only loader refuses (see ``mmfusion/compat.py``). This tool loads the file **with full unpickling** -- so
only run it on files you trust -- and writes it back with mmfusion's patched HistoryBuffer pickling.

    python tools/misc/resave_checkpoint.py work_dirs/x/iter_1000.pth [--out new.pth] [--yes] [--overwrite]
"""
import argparse
import os
import sys

import torch

import mmfusion.registry  # noqa: F401  (applies the compat fixes: patched HistoryBuffer pickling)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('checkpoint')
    parser.add_argument('--out', help='output path (default: <name>.safe.pth beside the input)')
    parser.add_argument('--yes', action='store_true', help='do not ask before unpickling the file fully')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --out file')
    args = parser.parse_args(argv)
    if not os.path.isfile(args.checkpoint):
        sys.exit(f'error: no such checkpoint: {args.checkpoint}')
    out = args.out or os.path.splitext(args.checkpoint)[0] + '.safe.pth'
    if os.path.exists(out) and os.path.samefile(out, args.checkpoint):
        sys.exit(f'error: --out {out} is the input checkpoint; write the re-saved copy elsewhere (nothing written)')
    if os.path.exists(out) and not args.overwrite:
        sys.exit(f'error: {out} exists; pass another --out, or --overwrite to replace it (nothing written)')
    if not args.yes:
        answer = input(f'Fully unpickling {args.checkpoint} can run code stored in it. Trust it? [y/N] ')
        if answer.strip().lower() not in ('y', 'yes'):
            sys.exit('aborted')
    ckpt = torch.load(args.checkpoint, map_location='cpu', weights_only=False)
    torch.save(ckpt, out)
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(out)
    if unsafe:
        sys.exit(f'error: {out} still holds non-allow-listed objects {unsafe}; they are not written by MMEngine, '
                 'check where they come from')
    print(f'wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
