"""PyTorch eager vs ONNX Runtime on the CPU, same thread count: the D3S2 semantic model (DINOv3 ViT-B/16 master +
SAM2.1 Hiera-B+ auxiliary at OS16, mmseg Mask2Former head) at 512x1024, random weights.

One run prints both sides: the graph's work (backbone, neck, head up to the per-pixel class scores: what the
``.onnx`` holds) timed as the median of ``--repeat`` runs after a warm-up, with PyTorch's and ONNX Runtime's runs
alternated in one process (load from other jobs falls on both alike); each side's process peak RSS, measured in a
fresh subprocess per side (build or load, one forward), so one side's allocations cannot hide the other's; the
export time and file size; and the agreement of the label maps. ``--int8`` adds ONNX Runtime's dynamic int8
quantisation of the exported file (MatMul/Gemm weights in int8): its latency, size, and agreement with float32.
The random head's class and mask projections are scaled (``CLASS_GAIN``, ``MASK_GAIN``) so that the label maps hold
several classes; that does not change the work. ``--profile`` adds ONNX Runtime's time per operator type and both
sides' time per part of the model (master, auxiliary, neck, pixel decoder, rest of the head), medians of
``--repeat`` more rounds: PyTorch's through forward hooks, ONNX Runtime's from its own profiler, whose kernel times
run above a plain run's.

Usage::

    python benchmarks/bench_deploy.py [--threads 2] [--repeat 3] [--size 512 1024] [--int8] [--profile]
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing
CONFIG = osp.join(ROOT, 'configs', 'mask2former_d3s2_cityscapes_semantic.py')
# Random heads put one class everywhere; these gains on the class and mask projections give label maps with several
# classes (latency does not depend on them).
CLASS_GAIN, MASK_GAIN = 20.0, 10.0


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _build(size):
    """The D3S2 semantic model with random weights (no checkpoint is read), eval mode, and its export wrapper."""
    import torch
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    import mmfusion.registry  # noqa: F401
    from mmfusion.deployment.export import ExportWrapper
    cfg = Config.fromfile(CONFIG)
    for enc in (cfg.model.backbone.master, cfg.model.backbone.auxiliary):
        enc.checkpoint = None  # random weights
    init_default_scope('mmseg')
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # "random weights" warnings of the encoders
        model = MODELS.build(cfg.model).eval()
    with torch.no_grad():  # peaked class scores and sharp masks, so that label maps have several classes to agree on
        model.decode_head.cls_embed.weight.mul_(CLASS_GAIN)
        model.decode_head.mask_embed[-1].weight.mul_(MASK_GAIN)
    return cfg, model, ExportWrapper(model, 'semantic').eval()


def _input(size, seed=1):
    import torch
    return torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(seed))


def case_export(args) -> dict:
    from mmfusion.deployment.export import export_onnx
    _, model, _ = _build(args.size)
    res = export_onnx(model, 'semantic', args.onnx, args.size, config_name=osp.relpath(CONFIG, ROOT),
                      extra_spec=dict(align_corners=False, threshold=0.3, num_classes=19, dataset_meta={}),
                      log=lambda s: print('  ' + s, file=sys.stderr, flush=True))
    out = dict(export_s=res['export_s'], size_mib=res['size_mb'], check_rel_diff=max(res['max_rel_diff'].values()))
    if args.int8:
        import logging

        from onnxruntime.quantization import QuantType, quantize_dynamic
        logging.disable(logging.WARNING)  # one warning per integer Slice output it leaves in float
        t0 = time.perf_counter()
        quantize_dynamic(args.onnx, args.onnx_int8, weight_type=QuantType.QInt8)
        out.update(int8_quantise_s=time.perf_counter() - t0, int8_size_mib=osp.getsize(args.onnx_int8) / 2**20)
    return out


def _session(args, path: str):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=['CPUExecutionProvider'])


def case_memory(args, side: str) -> dict:
    """One side alone in this process: build (or load), one forward; the process's peak RSS."""
    import torch
    torch.set_num_threads(args.threads)
    x = _input(args.size)
    t0 = time.perf_counter()
    if side == 'torch':
        _, _, wrapper = _build(args.size)
        load_s = time.perf_counter() - t0
        with torch.no_grad():
            wrapper(x)
    else:
        session = _session(args, args.onnx if side == 'ort' else args.onnx_int8)
        load_s = time.perf_counter() - t0
        session.run(['seg_logits'], {'input': x.numpy()})
    return dict(peak_rss_mib=_peak_rss_mib(), load_s=load_s)


# The model's parts, by module path: PyTorch times them with forward hooks, ONNX Runtime's profile by its node names
# (the TorchScript exporter names nodes after the module path; nodes ONNX Runtime fused and renamed go to 'other').
PARTS = (('master', 'backbone.master'), ('auxiliary', 'backbone.auxiliary'), ('neck', 'neck'),
         ('pixel decoder', 'decode_head.pixel_decoder'), ('rest of head', 'decode_head'))


def _part_of(node_name: str) -> str:
    path = node_name.strip('/').replace('/', '.')
    return next((part for part, prefix in PARTS if path == prefix or path.startswith(prefix + '.')), 'other')


def _profiled_session(args):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.log_severity_level = 3
    opts.enable_profiling = True
    opts.profile_file_prefix = osp.join(args.workdir, 'ort_profile')
    return ort.InferenceSession(args.onnx, opts, providers=['CPUExecutionProvider'])


def _ort_profile_runs(session) -> list:
    """ONNX Runtime's own profile, per run: ``[({op type: seconds}, {part: seconds}), ...]``. Kernel times run
    above a plain run's (the profiler's own cost)."""
    import collections
    with open(session.end_profiling()) as f:
        events = json.load(f)
    runs = [(e['ts'], e['ts'] + e['dur']) for e in events if e.get('cat') == 'Session' and e['name'] == 'model_run']
    out = [(collections.Counter(), collections.Counter()) for _ in runs]
    for e in events:
        if e.get('cat') == 'Node' and e.get('name', '').endswith('_kernel_time'):
            i = next((i for i, (t0, t1) in enumerate(runs) if t0 <= e['ts'] <= t1), None)
            if i is not None:
                out[i][0][e['args'].get('op_name', '?')] += e['dur'] / 1e6
                out[i][1][_part_of(e['name'][:-len('_kernel_time')])] += e['dur'] / 1e6
    return out


def _torch_parts(model, wrapper, x) -> dict:
    """Seconds per part of one PyTorch run (forward hooks; 'rest of head' excludes the pixel decoder, 'other' is
    what no part holds)."""
    times, hooks, starts = {}, [], {}
    modules = dict(model.named_modules())
    for part, prefix in PARTS:
        if prefix in modules:
            hooks.append(modules[prefix].register_forward_pre_hook(
                lambda m, a, part=part: starts.__setitem__(part, time.perf_counter())))
            hooks.append(modules[prefix].register_forward_hook(
                lambda m, a, o, part=part: times.__setitem__(part, times.get(part, 0.0) + time.perf_counter() -
                                                             starts[part])))
    t0 = time.perf_counter()
    wrapper(x)
    total = time.perf_counter() - t0
    for h in hooks:
        h.remove()
    if 'rest of head' in times:
        times['rest of head'] -= times.get('pixel decoder', 0.0)
    times['other'] = total - sum(times.values())
    return times


def _profile(args, model, wrapper, x) -> dict:
    """Per operator type (ONNX Runtime) and per part (both sides): medians over ``--repeat`` rounds after a warm-up,
    PyTorch's hooked runs and ONNX Runtime's profiled runs alternated."""
    import torch
    session = _profiled_session(args)
    torch_runs = []
    with torch.no_grad():
        for i in range(args.repeat + 1):
            parts = _torch_parts(model, wrapper, x)
            session.run(['seg_logits'], {'input': x.numpy()})
            if i:
                torch_runs.append(parts)
    ort_runs = _ort_profile_runs(session)[1:]

    def median(runs, key):
        return statistics.median(r.get(key, 0.0) for r in runs)

    ops = {op: median([r[0] for r in ort_runs], op) for op in set().union(*(r[0] for r in ort_runs))}
    total = sum(ops.values()) or 1.0
    names = [p for p, _ in PARTS] + ['other']
    return dict(ort_profile=[(op, sec, sec / total) for op, sec in sorted(ops.items(), key=lambda kv: -kv[1])[:8]],
                ort_parts={p: median([r[1] for r in ort_runs], p) for p in names},
                torch_parts={p: median(torch_runs, p) for p in names})


def case_latency(args) -> dict:
    """Both sides in one process, their runs alternated (PyTorch, ORT[, ORT int8], PyTorch, ...), so that load from
    other jobs on the machine falls on both alike; one warm-up round, then ``--repeat`` timed rounds."""
    import numpy as np
    import torch
    torch.set_num_threads(args.threads)
    _, model, wrapper = _build(args.size)
    sides = dict(torch=lambda x: wrapper(x).numpy(), ort=None)
    sess = _session(args, args.onnx)
    sides['ort'] = lambda x: sess.run(['seg_logits'], {'input': x.numpy()})[0]
    if args.int8:
        sess8 = _session(args, args.onnx_int8)
        sides['ort_int8'] = lambda x: sess8.run(['seg_logits'], {'input': x.numpy()})[0]
    x = _input(args.size)
    times, outs = {k: [] for k in sides}, {}
    with torch.no_grad():
        for i in range(args.repeat + 1):
            for name, run in sides.items():
                t0 = time.perf_counter()
                outs[name] = run(x)
                if i:  # round 0 is a warm-up
                    times[name].append(time.perf_counter() - t0)
    res = {k: dict(median_s=statistics.median(v), times_s=v) for k, v in times.items()}
    if args.profile:
        res.update(_profile(args, model, wrapper, x))
    ref = outs['torch']
    labels = ref.argmax(1)
    res['classes_in_map'] = int(len(np.unique(labels)))
    for k in sides:
        if k != 'torch':
            other = outs['ort'] if k == 'ort_int8' else ref  # int8 against fp32 ORT, fp32 ORT against PyTorch
            res[k].update(label_agreement=float((outs[k].argmax(1) == other.argmax(1)).mean()),
                          rel_diff=float(np.abs(outs[k] - other).max() / np.abs(other).max()))
    return res


def _sub(args, case: str) -> dict:
    """Run one case in a fresh interpreter; its JSON result is the last line of its stdout."""
    cmd = [sys.executable, osp.abspath(__file__), '--case', case, '--threads', str(args.threads), '--repeat',
           str(args.repeat), '--size', *map(str, args.size), '--workdir', args.workdir] + \
        (['--int8'] if args.int8 else []) + (['--profile'] if args.profile else [])
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f'case {case} failed:\n{proc.stderr[-3000:]}')
    sys.stderr.write(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--threads', type=int, default=2, help='PyTorch and ONNX Runtime intra-op threads')
    parser.add_argument('--repeat', type=int, default=3, help='timed runs per side (after one warm-up)')
    parser.add_argument('--size', type=int, nargs=2, default=(512, 1024), metavar=('H', 'W'))
    parser.add_argument('--int8', action='store_true', help='also ONNX Runtime dynamic int8 quantisation')
    parser.add_argument('--profile', action='store_true',
                        help="ONNX Runtime's time per operator type, and each side's time per part of the model")
    parser.add_argument('--case', choices=['export', 'latency', 'memory_torch', 'memory_ort', 'memory_ort_int8'],
                        help=argparse.SUPPRESS)
    parser.add_argument('--workdir', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.size = tuple(args.size)
    if args.case:
        args.onnx = osp.join(args.workdir, 'd3s2.onnx')
        args.onnx_int8 = osp.join(args.workdir, 'd3s2_int8.onnx')
        if args.case == 'export':
            res = case_export(args)
        elif args.case == 'latency':
            res = case_latency(args)
        else:
            res = case_memory(args, args.case[len('memory_'):])
        print(json.dumps(res))
        return res

    with tempfile.TemporaryDirectory(prefix='bench_deploy_') as work:
        args.workdir = work
        h, w = args.size
        print(f'D3S2 semantic (DINOv3 ViT-B/16 + SAM2.1 Hiera-B+ OS16, Mask2Former head), random weights, '
              f'1x3x{h}x{w}, CPU, {args.threads} thread(s), median of {args.repeat} runs after a warm-up', flush=True)
        exp = _sub(args, 'export')
        lat = _sub(args, 'latency')
        mem = {side: _sub(args, f'memory_{side}') for side in ['torch', 'ort'] + (['ort_int8'] if args.int8 else [])}
    res = dict(export=exp, latency=lat, memory=mem)

    print(f'export: {exp["export_s"]:.1f} s (TorchScript exporter + checks), file {exp["size_mib"]:.0f} MiB, '
          f'ONNX Runtime vs PyTorch on the check input: {exp["check_rel_diff"]:.2e} (max |diff| / max |PyTorch|)')
    rows = [('PyTorch eager', 'torch'), ('ONNX Runtime fp32', 'ort')] + \
        ([('ONNX Runtime int8 (dynamic)', 'ort_int8')] if args.int8 else [])
    t_pt = lat['torch']['median_s']
    print(f'{"":28s} {"median latency":>15s} {"x PyTorch":>10s} {"peak RSS":>10s} {"load":>8s}   runs (s)')
    for name, key in rows:
        r, m = lat[key], mem[key]
        print(f'{name:28s} {r["median_s"]:13.2f} s {r["median_s"] / t_pt:9.2f}x {m["peak_rss_mib"]:6.0f} MiB '
              f'{m["load_s"]:6.1f} s   {", ".join(f"{t:.1f}" for t in r["times_s"])}')
    print(f'ONNX Runtime fp32 vs PyTorch: label maps ({lat["classes_in_map"]} classes) equal on '
          f'{100 * lat["ort"]["label_agreement"]:.3f} % of pixels, scores max |diff| / max = '
          f'{lat["ort"]["rel_diff"]:.2e}')
    if args.profile:
        print(f'ONNX Runtime float32, profiled (median of {args.repeat}), time per operator type: ' + ', '.join(
            f'{op} {sec:.2f} s ({100 * share:.0f} %)' for op, sec, share in lat['ort_profile']))
        parts = [p for p, _ in PARTS] + ['other']
        print(f'time per part (median of {args.repeat}), PyTorch (forward hooks) / ONNX Runtime (profiled): '
              + ', '.join(f'{p} {lat["torch_parts"][p]:.2f} / {lat["ort_parts"][p]:.2f} s' for p in parts))
    if args.int8:
        q = lat['ort_int8']
        print(f'int8: quantised in {exp["int8_quantise_s"]:.1f} s, file {exp["int8_size_mib"]:.0f} MiB; label maps '
              f'equal to fp32 ONNX Runtime on {100 * q["label_agreement"]:.2f} % of pixels, scores max |diff| / max '
              f'= {q["rel_diff"]:.2e} (random weights)')
    print(json.dumps(res))
    return res


if __name__ == '__main__':
    main()
