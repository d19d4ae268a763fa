"""The full `make demo` job: its wall time and its scores, untrained and trained.

Runs ``tools/demo.py`` as a user would (a subprocess, the repository as working directory) into a fresh report
folder and data folder, then reads the report's ``summary.json``. Prints one line per number and a final JSON line
(also written to ``--json``). Not a test: it takes minutes; run it when the machine is otherwise idle.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_demo.py [--work DIR] [--json bench_demo.json] [-- DEMO_ARGS...]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCORES = ('mIoU', 'mBIoU', 'aAcc', 'mAcc', 'coco/segm_mAP_50', 'coco/segm_mAP', 'coco/boundary_AP')


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--work', help='folder for the report and data (default: a new temporary folder)')
    parser.add_argument('--json', help='also write the result here')
    parser.add_argument('demo_args', nargs='*', help='extra tools/demo.py arguments (after --)')
    args = parser.parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix='bench_demo_')
    out, data = os.path.join(work, 'report'), os.path.join(work, 'data')
    cmd = [sys.executable, os.path.join(ROOT, 'tools', 'demo.py'), '--out-dir', out, '--data-root', data,
           *args.demo_args]
    print('$ ' + ' '.join(cmd), flush=True)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout[-4000:])
        raise SystemExit(f'bench_demo: tools/demo.py failed (exit {proc.returncode})')
    with open(os.path.join(out, 'summary.json')) as f:
        summary = json.load(f)
    result = dict(wall_s=round(wall, 1), load_avg_1min_at_start=round(load, 2), cpu_count=os.cpu_count(),
                  omp_num_threads=os.environ.get('OMP_NUM_THREADS'), iters=summary['iters'],
                  selection=summary['selection'], random_init=summary['random_init'],
                  untrained={k: summary['untrained'][k] for k in SCORES if k in summary['untrained']},
                  trained={k: summary['metrics'][k] for k in SCORES if k in summary['metrics']},
                  report=os.path.join(out, 'README.md'))
    print(f'demo wall time: {result["wall_s"]} s ({result["wall_s"] / 60:.1f} min), {result["iters"]} iterations, '
          f'load average at start {result["load_avg_1min_at_start"]}')
    for key in result['trained']:
        print(f'{key}: untrained {result["untrained"].get(key)} -> trained {result["trained"][key]}')
    print(json.dumps(result))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == '__main__':
    main()
