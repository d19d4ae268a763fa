"""PyTorch eager vs ONNX Runtime on the CPU, same thread count: the D3S2 semantic model (DINOv3 ViT-B/16 master +
SAM2.1 Hiera-B+ auxiliary at OS16, mmseg Mask2Former head) at 512x1024, random weights.

One run prints both sides: the graph's work (backbone, neck, head up to the per-pixel class scores: what the
``.onnx`` holds) timed as the median of ``--repeat`` runs after a warm-up, each side's process peak RSS (every side
runs in a fresh subprocess, so one side's allocations cannot hide the other's peak), the export time and file size,
and the agreement of the label maps. ``--int8`` adds ONNX Runtime's dynamic int8 quantisation of the exported file
(weights of MatMul/Gemm in int8): its latency, size and label-map agreement with float32.

Usage::

    python benchmarks/bench_deploy.py [--threads 2] [--repeat 3] [--size 512 1024] [--int8]
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
        from onnxruntime.quantization import QuantType, quantize_dynamic
        t0 = time.perf_counter()
        quantize_dynamic(args.onnx, args.onnx_int8, weight_type=QuantType.QInt8)
        out.update(int8_quantise_s=time.perf_counter() - t0, int8_size_mib=osp.getsize(args.onnx_int8) / 2**20)
    return out


def case_torch(args) -> dict:
    import numpy as np
    import torch
    torch.set_num_threads(args.threads)
    _, _, wrapper = _build(args.size)
    x = _input(args.size)
    times = []
    with torch.no_grad():
        for i in range(args.repeat + 1):
            t0 = time.perf_counter()
            out = wrapper(x)
            if i:  # the first run is a warm-up
                times.append(time.perf_counter() - t0)
    np.save(args.labels, out.argmax(1).numpy().astype(np.uint8))
    np.save(args.labels.replace('.npy', '_logits.npy'), out.numpy())
    return dict(median_s=statistics.median(times), times_s=times, peak_rss_mib=_peak_rss_mib())


def case_ort(args, path: str, labels: str) -> dict:
    import numpy as np
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.log_severity_level = 3
    t0 = time.perf_counter()
    session = ort.InferenceSession(path, opts, providers=['CPUExecutionProvider'])
    load_s = time.perf_counter() - t0
    x = _input(args.size).numpy()
    times = []
    for i in range(args.repeat + 1):
        t0 = time.perf_counter()
        out, = session.run(['seg_logits'], {'input': x})
        if i:
            times.append(time.perf_counter() - t0)
    np.save(labels, out.argmax(1).astype(np.uint8))
    np.save(labels.replace('.npy', '_logits.npy'), out)
    return dict(median_s=statistics.median(times), times_s=times, peak_rss_mib=_peak_rss_mib(), load_s=load_s)


def _sub(args, case: str) -> dict:
    """Run one case in a fresh interpreter; its JSON result is the last line of its stdout."""
    cmd = [sys.executable, osp.abspath(__file__), '--case', case, '--threads', str(args.threads), '--repeat',
           str(args.repeat), '--size', *map(str, args.size), '--workdir', args.workdir] + (['--int8'] if args.int8
                                                                                       else [])
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
    parser.add_argument('--case', choices=['export', 'torch', 'ort', 'ort_int8'], help=argparse.SUPPRESS)
    parser.add_argument('--workdir', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.size = tuple(args.size)
    if args.case:
        args.onnx = osp.join(args.workdir, 'd3s2.onnx')
        args.onnx_int8 = osp.join(args.workdir, 'd3s2_int8.onnx')
        args.labels = osp.join(args.workdir, 'torch.npy')
        if args.case == 'export':
            res = case_export(args)
        elif args.case == 'torch':
            res = case_torch(args)
        elif args.case == 'ort':
            res = case_ort(args, args.onnx, osp.join(args.workdir, 'ort.npy'))
        else:
            res = case_ort(args, args.onnx_int8, osp.join(args.workdir, 'ort_int8.npy'))
        print(json.dumps(res))
        return res

    import numpy as np
    with tempfile.TemporaryDirectory(prefix='bench_deploy_') as work:
        args.workdir = work
        h, w = args.size
        print(f'D3S2 semantic (DINOv3 ViT-B/16 + SAM2.1 Hiera-B+ OS16, Mask2Former head), random weights, '
              f'1x3x{h}x{w}, CPU, {args.threads} thread(s), median of {args.repeat} runs after a warm-up', flush=True)
        exp = _sub(args, 'export')
        pt = _sub(args, 'torch')
        ox = _sub(args, 'ort')
        res = dict(export=exp, torch=pt, ort=ox)
        lab_pt, lab_ox = (np.load(osp.join(work, f'{n}.npy')) for n in ('torch', 'ort'))
        log_pt, log_ox = (np.load(osp.join(work, f'{n}_logits.npy')) for n in ('torch', 'ort'))
        res['ort_vs_torch'] = dict(label_agreement=float((lab_pt == lab_ox).mean()),
                                   rel_diff=float(np.abs(log_pt - log_ox).max() / np.abs(log_pt).max()))
        if args.int8:
            res['ort_int8'] = _sub(args, 'ort_int8')
            lab_q = np.load(osp.join(work, 'ort_int8.npy'))
            res['int8_vs_fp32'] = dict(label_agreement=float((lab_q == lab_ox).mean()))

    print(f'export: {exp["export_s"]:.1f} s (TorchScript exporter + checks), file {exp["size_mib"]:.0f} MiB, '
          f'ONNX Runtime vs PyTorch on the check input: {exp["check_rel_diff"]:.2e} (max |diff| / max |PyTorch|)')
    rows = [('PyTorch eager', pt), ('ONNX Runtime fp32', ox)]
    if args.int8:
        rows.append(('ONNX Runtime int8 (dynamic)', res['ort_int8']))
    print(f'{"":28s} {"median latency":>15s} {"x PyTorch":>10s} {"peak RSS":>10s}')
    for name, r in rows:
        print(f'{name:28s} {r["median_s"]:13.2f} s {r["median_s"] / pt["median_s"]:9.2f}x '
              f'{r["peak_rss_mib"]:7.0f} MiB')
    agree = res['ort_vs_torch']
    print(f'ONNX Runtime fp32 vs PyTorch: label maps equal on {100 * agree["label_agreement"]:.3f} % of pixels, '
          f'scores max |diff| / max = {agree["rel_diff"]:.2e}')
    if args.int8:
        print(f'int8: quantised in {exp["int8_quantise_s"]:.1f} s, file {exp["int8_size_mib"]:.0f} MiB; label maps '
              f'equal to fp32 ONNX Runtime on {100 * res["int8_vs_fp32"]["label_agreement"]:.2f} % of pixels '
              '(random weights)')
    print(json.dumps(res))
    return res


if __name__ == '__main__':
    main()
