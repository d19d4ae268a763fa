"""Forward time and peak memory of the VFM backbones, and what stopping Hiera after OS16 saves.

Each case runs in its own subprocess (so one case's allocations cannot hide another's peak), builds the backbone
with random weights, then runs one forward for memory and ``--iters`` timed forwards on a (1, 3, H, W) input.
Peak memory is measured on the first forward: on CPU the process's peak resident set size above the resident size
after the build (Linux: the peak is reset through ``/proc/self/clear_refs``; elsewhere ``ru_maxrss`` is used, which
also counts the build), on CUDA ``torch.cuda.max_memory_allocated`` above the allocation before it. Times are the
median of the forwards after it.

Usage::

    python benchmarks/bench_backbones.py                     # 512x1024, CPU, all cases
    python benchmarks/bench_backbones.py --device cuda --size 1024 2048 --grad
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing

CASES = {
    'dinov3_vitb16': dict(type='mmfusion.DINOv3ViT', arch='vitb16', pyramid='paper'),
    'dinov3_vitb16_raw': dict(type='mmfusion.DINOv3ViT', arch='vitb16', pyramid=dict(type='paper', project=False)),
    'hiera_b+_os4-32': dict(type='mmfusion.SAM2Hiera', arch='base_plus', out_strides=(4, 8, 16, 32)),
    'hiera_b+_os16': dict(type='mmfusion.SAM2Hiera', arch='base_plus', out_strides=(16, )),
}


def _rss_kib(field: str) -> int | None:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # resets VmHWM (Linux >= 4.0)
        return True
    except OSError:
        return False


def run_case(name: str, size, iters: int, device: str, grad: bool, threads: int) -> dict:
    import gc

    import torch

    import mmfusion.models  # noqa: F401
    from mmfusion.registry import MODELS

    torch.set_num_threads(threads)
    cfg = dict(CASES[name])
    cfg['frozen'] = not grad
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # random weights
        t0 = time.perf_counter()
        model = MODELS.build(cfg).to(device).eval()
        build_s = time.perf_counter() - t0
    x = torch.randn(1, 3, *size, device=device)
    params = sum(p.numel() for p in model.parameters())

    def step():
        outs = model(x)
        if grad:
            sum(o.float().mean() for o in outs).backward()
        if device.startswith('cuda'):
            torch.cuda.synchronize()
        return outs

    with torch.set_grad_enabled(grad):
        # Memory: the first forward, from the resident size after the build (later forwards reuse memory the
        # allocator kept, so their resident-size peak says little).
        gc.collect()
        if device.startswith('cuda'):
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            reset = _reset_peak_rss()
            base = (_rss_kib('VmRSS') or 0) * 1024 if reset else 0
        shapes = [list(o.shape) for o in step()]
        if device.startswith('cuda'):
            peak, how = torch.cuda.max_memory_allocated() - base, 'cuda max_memory_allocated, first forward'
        elif reset:
            peak, how = (_rss_kib('VmHWM') or 0) * 1024 - base, 'peak RSS (VmHWM) of the first forward'
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            how = 'ru_maxrss (includes the build)'
        model.zero_grad(set_to_none=True)
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            outs = step()
            times.append(time.perf_counter() - t0)
            del outs
            model.zero_grad(set_to_none=True)
    return dict(case=name, params_m=params / 1e6, build_s=build_s, forward_s=statistics.median(times),
                forward_min_s=min(times), peak_mib=peak / 2**20, total_peak_mib=(base + peak) / 2**20, memory=how,
                out_shapes=shapes,
                out_channels=list(model.out_channels), threads=threads, device=device)


def _ratio(a: dict, b: dict, key: str) -> str:
    return f'{a[key] / b[key]:.2f}' if b[key] > 0 else 'n/a'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', type=int, nargs=2, default=(512, 1024), metavar=('H', 'W'))
    parser.add_argument('--iters', type=int, default=3)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--grad', action='store_true', help='forward + backward (trainable backbones)')
    parser.add_argument('--threads', type=int, default=os.cpu_count())
    parser.add_argument('--cases', nargs='+', default=list(CASES), choices=list(CASES))
    parser.add_argument('--case', help=argparse.SUPPRESS)  # internal: run one case in this process
    parser.add_argument('--json', help='also write the results here')
    args = parser.parse_args()

    if args.case:
        print(json.dumps(run_case(args.case, args.size, args.iters, args.device, args.grad, args.threads)))
        return

    results = []
    for name in args.cases:
        cmd = [sys.executable, __file__, '--case', name, '--size', *map(str, args.size), '--iters', str(args.iters),
               '--device', args.device, '--threads', str(args.threads)] + (['--grad'] if args.grad else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, 'PYTHONWARNINGS': 'ignore'})
        if proc.returncode:
            sys.exit(f'case {name} failed:\n{proc.stderr[-3000:]}')
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))

    ref = results[0]
    mode = 'forward+backward' if args.grad else 'forward (no_grad)'
    print(f'{mode}, input 1x3x{args.size[0]}x{args.size[1]}, {args.device}, {args.threads} threads, '
          f'median of {args.iters}; memory: {ref["memory"]}')
    print('peak = activations of one forward; total = whole process (weights, libraries) at that peak')
    print(f'{"case":<20}{"params M":>10}{"time s":>10}{"x " + ref["case"]:>24}{"peak MiB":>11}'
          f'{"x " + ref["case"]:>24}{"total MiB":>11}  out_channels')
    for r in results:
        print(f'{r["case"]:<20}{r["params_m"]:>10.1f}{r["forward_s"]:>10.3f}{_ratio(r, ref, "forward_s"):>24}'
              f'{r["peak_mib"]:>11.0f}{_ratio(r, ref, "peak_mib"):>24}{r["total_peak_mib"]:>11.0f}'
              f'  {r["out_channels"]}')
    by_name = {r['case']: r for r in results}
    if 'hiera_b+_os4-32' in by_name and 'hiera_b+_os16' in by_name:
        full, early = by_name['hiera_b+_os4-32'], by_name['hiera_b+_os16']
        print(f'Hiera-B+ stopped after OS16 vs all stages: time x{_ratio(early, full, "forward_s")}, '
              f'activation peak x{_ratio(early, full, "peak_mib")}, '
              f'process peak x{_ratio(early, full, "total_peak_mib")}, parameters x{_ratio(early, full, "params_m")}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(size=args.size, device=args.device, grad=args.grad, results=results), f, indent=1)


if __name__ == '__main__':
    main()
