"""The main job on an embedded default: the whole method, end to end, on this machine, with no data of your own.

1. generate synthetic street scenes in the Cityscapes on-disk format (data/demo_cityscapes, deterministic);
2. profile DINOv3 and SAM2.1 (SC/EF per stride, tools/analysis/profile_vfm.py) and let the profiler write the config
   of its selection (--emit-config: master, auxiliary, s*, head channels) on top of configs/demo/;
3. evaluate that model untrained (its initial weights, tools/test.py);
4. train it from those weights (tools/train.py), SCEFHook logging SC/EF on fixed probe images;
5. evaluate it (tools/test.py: mmseg mIoU, mmfusion boundary IoU) and draw ground truth | prediction overlays;
6. write a report folder: README.md with the profile plot, loss curve, SC/EF drift plot, metrics (untrained and
   trained) and overlays; summary.json with the same numbers.

    python tools/demo.py [--out-dir demo_output] [--data-root data/demo_cityscapes] [--iters N] [--smoke] [--debug]

Without the pretrained checkpoints (README "Weights") the encoders are small real architectures of the same families
(DINOv3 ViT-S/16, SAM2.1 Hiera-T) trained from scratch; with them, DINOv3 ViT-B/16 and SAM2.1 Hiera-B+ as in the paper.
``--smoke`` runs the same pipeline with tiny encoders and images (what the test suite runs). The demo writes only
into folders it made (``--out-dir`` gets ``.mmfusion-demo``, ``--data-root`` ``.mmfusion-synthetic-cityscapes``) or
finds empty; a rerun replaces its own outputs there and leaves anything else alone.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import os.path as osp
import shutil
import subprocess
import sys
import time
from typing import Optional

from mmfusion.apis.runner_utils import add_debug_arg, run_tool
from mmfusion.utils.errors import UserError
from mmfusion.utils.fileio import claim_dir, is_owned, remove_outputs

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(ROOT, 'configs', 'demo', 'mask2former_d3s2_synthetic_semantic_demo.py')
ENCODERS = osp.join(ROOT, 'configs', '_base_', 'encoders.py')
ENCODER_KEYS = {'dinov3': 'dinov3_vitb16', 'sam2': 'sam2_hiera_bplus'}
# What a run writes into --out-dir: a rerun deletes these (and nothing else) first.
OUTPUTS = ('encoders.py', 'demo_config.py', 'fused_config.py', 'profile', 'profile.log', 'untrained',
           'untrained.log', 'train', 'train.log', 'test', 'test.log', 'overlays', 'plots', 'cityscapes_metric',
           'summary.json', 'README.md')
# Keys of a test run's JSON log record that are not metrics.
NOT_METRICS = ('data_time', 'time', 'step', 'iter', 'epoch', 'memory', 'lr')
SYNTHETIC_KIND = 'synthetic-cityscapes'  # the marker generate_synthetic_cityscapes leaves in its data root

# --smoke: the real architectures at toy sizes, and a toy head, so the pipeline runs in about a minute.
SMOKE_ARCH = {
    'dinov3': dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                   num_register_tokens=1),
    'sam2': dict(embed_dim=8, num_heads=1, stages=(1, 1, 2, 1), global_att_blocks=(3, ), window_spec=(8, 4, 4, 2),
                 window_pos_embed_bkg_spatial_size=(4, 4), q_pool=3),
}


def banner(text: str) -> None:
    line = '=' * 100
    print(f'\n{line}\n{text}\n{line}', flush=True)


def run(cmd: list, log_path: str) -> None:
    """Run a tool as a user would, tee its output to a log, stop the demo if it fails."""
    print('$ ' + ' '.join(osp.relpath(c, ROOT) if osp.isabs(c) and c.startswith(ROOT) else c for c in cmd),
          flush=True)
    error = ''
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        for line in proc.stdout:
            log.write(line)
            if line.startswith('error:') or ': error: ' in line:
                error = line.strip()
            if 'mmengine - INFO - Iter' in line or line.startswith(('error', 'Traceback')):
                print('  ' + line.rstrip().split('  loss_cls')[0].split(' - INFO - ')[-1], flush=True)
        if proc.wait() != 0:
            said = f' ({error})' if error else ''
            raise UserError(f'{osp.relpath(cmd[1], ROOT)} failed (exit {proc.returncode}){said}; see {log_path}')


def find_weights() -> dict:
    """{'dinov3': path or None, 'sam2': path or None} at the documented places."""
    from mmengine.config import Config
    enc = Config.fromfile(ENCODERS)
    found = {}
    for name, key in ENCODER_KEYS.items():
        path = osp.join(ROOT, enc[key]['checkpoint'])
        found[name] = path if osp.isfile(path) else None
    return found


def encoder_configs(weights: dict, smoke: bool, demo_cfg) -> dict:
    """The two encoders as this run profiles and fuses them, in their parameter-free form (DINOv3 without the new
    1x1 projections): the documented ViT-B/16 / Hiera-B+ with their checkpoints where present, else the demo
    config's ``random_init_encoders`` (random weights), toy sizes in smoke mode."""
    from mmengine.config import Config
    enc = Config.fromfile(ENCODERS)
    out = {}
    for name, key in ENCODER_KEYS.items():
        if weights[name] is None:
            cfg = demo_cfg.random_init_encoders[name].to_dict()
        else:
            cfg = enc[key].to_dict()
            if name == 'dinov3':
                cfg['pyramid'] = dict(type='paper', project=False)
        if smoke:
            cfg['arch'] = SMOKE_ARCH[name]
        out[name] = cfg
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out-dir', default=osp.join(ROOT, 'demo_output'),
                        help='report folder: new, empty, or an earlier report of the demo')
    parser.add_argument('--data-root', default=osp.join(ROOT, 'data', 'demo_cityscapes'),
                        help='synthetic scenes: new, empty, or written by an earlier demo run (then reused)')
    parser.add_argument('--iters', type=int, default=None,
                        help='training iterations (default: the demo config\'s max_iters; smoke: 2)')
    parser.add_argument('--profile-images', type=int, default=None, help='images to profile (default 4; smoke 2)')
    parser.add_argument('--smoke', action='store_true', help='toy encoder sizes and images (for tests)')
    add_debug_arg(parser)
    return parser.parse_args(argv)


def prepare_folders(out: str, data_root: str) -> bool:
    """Check both folders before anything is written, then clear the previous report's outputs.

    Returns:
        bool: Whether ``data_root`` holds the complete synthetic scenes of an earlier run (reused as they are).

    Raises:
        UserError: a folder holds files the demo did not write (nothing is deleted).
    """
    ann_val = osp.join(data_root, 'annotations', 'instancesonly_filtered_gtFine_val.json')
    ours = is_owned(data_root, SYNTHETIC_KIND)
    if not ours and osp.exists(data_root) and (not osp.isdir(data_root) or os.listdir(data_root)):
        raise UserError(f'--data-root {data_root} holds files the demo did not write (no .mmfusion-{SYNTHETIC_KIND} '
                        'in it), e.g. a real dataset; pass --data-root a new or empty folder for the synthetic scenes '
                        '(nothing was changed)')
    claim_dir(out, 'demo', '--out-dir', create=False)
    remove_outputs(out, 'demo', OUTPUTS, '--out-dir')
    claim_dir(out, 'demo', '--out-dir')
    return ours and osp.isfile(ann_val)


def _main(argv) -> dict:
    args = parse_args(argv)
    t0 = time.time()
    smoke = args.smoke
    from mmengine.config import Config

    import mmfusion.registry  # noqa: F401  (compat fixes and registries, before anything builds)
    demo_cfg = Config.fromfile(DEMO_CONFIG)
    iters = args.iters or (2 if smoke else demo_cfg.max_iters)
    n_prof = args.profile_images or (2 if smoke else 4)
    size = (64, 128) if smoke else tuple(demo_cfg.scene_size)
    # the profiler refuses maps too small for SC/EF (OS32 needs 5x16 px at least): smoke images are profiled upscaled
    prof_size = (160, 512) if smoke else size
    out = osp.abspath(args.out_dir)
    data_root = osp.abspath(args.data_root)
    reuse_data = prepare_folders(out, data_root)
    py = sys.executable

    weights = find_weights()
    missing = [n for n, p in weights.items() if p is None]
    if missing:
        banner('WARNING: RANDOMLY INITIALISED ENCODERS: ' + ', '.join(missing) + '\n'
               'No pretrained weights at the documented places (README, "Weights"): the demo fuses small encoders of\n'
               'the same families (DINOv3 ViT-S/16, SAM2.1 Hiera-T) trained from scratch. It shows that the system\n'
               'learns and that profile -> selection -> fused training connect, NOT what the method achieves, and the\n'
               'profile\'s choice of master/auxiliary/s* is then arbitrary. Put the checkpoints there and run this\n'
               'command again to use them.')
    else:
        print('using pretrained weights: ' + ', '.join(f'{k}={v}' for k, v in weights.items()))

    # 1. data (an incomplete earlier dataset of the demo is replaced; the generator refuses anything else)
    if not reuse_data:
        banner(f'1/6 generating synthetic Cityscapes-format scenes in {data_root}')
        from mmfusion.datasets.synthetic_cityscapes import generate_synthetic_cityscapes
        generate_synthetic_cityscapes(data_root, num_train=8 if smoke else demo_cfg.num_train_scenes,
                                      num_val=2 if smoke else demo_cfg.num_val_scenes, height=size[0],
                                      width=size[1], seed=0, overwrite=True, panoptic=False)
    else:
        banner(f'1/6 reusing the synthetic scenes in {data_root}')

    # the demo config with this run's data, length and sizes (dumped: the profiler's --base-config, then the tools)
    encoders = encoder_configs(weights, smoke, demo_cfg)
    enc_file = osp.join(out, 'encoders.py')
    with open(enc_file, 'w') as f:
        f.write('# The encoders this demo run profiles and fuses (written by tools/demo.py).\n')
        f.write(''.join(f'{name} = {cfg!r}\n' for name, cfg in encoders.items()))
    base_dump = osp.join(out, 'demo_config.py')
    cfg = run_config(demo_cfg, data_root, iters, smoke, encoders)
    cfg.dump(base_dump)

    # 2. profile + selection, emitted as the config that is trained
    banner(f'2/6 profiling DINOv3 and SAM2.1 ({_arch_names(encoders)}) on {n_prof} images at '
           f'{prof_size[0]}x{prof_size[1]}; the profiler writes the fused config of its selection')
    prof_dir = osp.join(out, 'profile')
    fused = osp.join(out, 'fused_config.py')
    cmd = [py, osp.join(ROOT, 'tools', 'analysis', 'profile_vfm.py'),
           '--encoder', f'dinov3={enc_file}:dinov3', '--encoder', f'sam2={enc_file}:sam2',
           '--dataset-config', base_dump, '--split', 'val', '--num-images', str(n_prof),
           '--size', str(prof_size[0]), str(prof_size[1]), '--device', 'cpu', '--out-dir', prof_dir,
           '--emit-config', fused, '--base-config', base_dump]
    run(cmd, osp.join(out, 'profile.log'))
    print(_profile_table(osp.join(out, 'profile.log')), flush=True)
    with open(osp.join(prof_dir, 'profile.json')) as f:
        selection = json.load(f)['selection']
    trained = _trained_pair(fused, encoders)
    if trained != selection:
        raise UserError(f'{fused} trains {trained}, not the profile\'s selection {selection}')
    if missing:
        print(f'note: with random encoders this choice (master = {selection["master"]}, auxiliary = '
              f'{selection["auxiliary"]}, s* = OS{selection["inject_stride"]}) is arbitrary; the paper\'s profile '
              '(pretrained ViT-B/16 and Hiera-B+) selects DINOv3 master, SAM2 auxiliary, s* = OS16.', flush=True)

    # 3. the untrained model: its initial weights, evaluated as the trained one will be (training starts from them)
    banner('3/6 evaluating the untrained fused model (its initial weights; tools/test.py)')
    untrained_dir = osp.join(out, 'untrained')
    ckpt0 = save_initial_weights(fused, untrained_dir)
    run([py, osp.join(ROOT, 'tools', 'test.py'), fused, ckpt0, '--work-dir', untrained_dir],
        osp.join(out, 'untrained.log'))
    untrained = _last_metrics(untrained_dir)

    # 4. train
    banner(f'4/6 training the selected fused model for {iters} iterations from those weights (tools/train.py, '
           f'{osp.relpath(fused, out)})')
    train_dir = osp.join(out, 'train')
    run([py, osp.join(ROOT, 'tools', 'train.py'), fused, '--work-dir', train_dir, '--load-from', ckpt0],
        osp.join(out, 'train.log'))
    ckpt = osp.join(train_dir, f'iter_{iters}.pth')

    # 5. evaluate + overlays
    banner('5/6 evaluating the trained model (tools/test.py: mIoU, boundary IoU), drawing overlays')
    test_dir = osp.join(out, 'test')
    overlays = osp.join(out, 'overlays')
    run([py, osp.join(ROOT, 'tools', 'test.py'), fused, ckpt, '--work-dir', test_dir, '--show-dir', overlays],
        osp.join(out, 'test.log'))
    metrics = _last_metrics(test_dir)

    # 6. report
    banner('6/6 writing the report')
    for src in sorted(glob.glob(osp.join(overlays, '**', '*.png'), recursive=True)):
        if osp.dirname(src) != overlays:
            shutil.move(src, osp.join(overlays, osp.basename(src)))
    os.makedirs(osp.join(out, 'plots'), exist_ok=True)
    loss_png = plot_loss(train_dir, osp.join(out, 'plots', 'loss.png'))
    scef = sorted(glob.glob(osp.join(train_dir, 'scef', 'iter_*.json')), key=_iter_of)
    scef_png = plot_scef(scef, osp.join(out, 'plots', 'scef_drift.png'))
    summary = dict(task='semantic segmentation (mmseg Mask2Former, 19 Cityscapes classes)', weights=weights,
                   random_init=missing, encoders=encoders, selection=selection, trained=trained, iters=iters,
                   untrained=untrained, metrics=metrics,
                   figures=dict(profile='profile/profile.png', loss=osp.relpath(loss_png, out),
                                scef_drift=osp.relpath(scef_png, out),
                                overlays=[osp.relpath(p, out) for p in sorted(glob.glob(osp.join(overlays, '*.png')))]),
                   scef_profiles=[osp.relpath(p, out) for p in scef], seconds=round(time.time() - t0, 1))
    with open(osp.join(out, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    _write_readme(out, summary)
    print(json.dumps(dict(selection=selection, untrained=untrained, trained=metrics), indent=2))
    print(f'report: {out}/README.md ({summary["seconds"]} s)')
    return summary


def run_config(demo_cfg, data_root: str, iters: int, smoke: bool, encoders: Optional[dict] = None):
    """The demo config with this run's data, length and sizes (what the profiler's --base-config and the tools
    read). In smoke mode the toy sizes, and the toy encoders fused the paper's way (DINOv3 master, SAM2 auxiliary;
    the profiler's emitted config then sets its own selection), so that the config trains as it is.

    Args:
        demo_cfg (Config): ``configs/demo/mask2former_d3s2_synthetic_semantic_demo.py``, read (changed in place).
        data_root (str): The synthetic scenes.
        iters (int): Training iterations.
        smoke (bool): Toy sizes.
        encoders (dict, optional): :func:`encoder_configs` of this run (smoke: the toy encoders). Default: None.

    Returns:
        Config: ``demo_cfg``.
    """
    cfg = demo_cfg
    scef_every = max(1, iters // 2)
    size = (64, 128)
    # Values, not option strings: DictAction's parser drops spaces and splits at commas (paths such as "démo out").
    cfg.merge_from_dict({
        'data_root': f'{data_root}/', 'train_dataloader.dataset.data_root': f'{data_root}/',
        'val_dataloader.dataset.data_root': f'{data_root}/', 'test_dataloader.dataset.data_root': f'{data_root}/',
        'train_cfg.max_iters': iters, 'train_cfg.val_interval': iters, 'train_cfg.val_begin': iters + 1,
        'default_hooks.checkpoint.interval': iters, 'custom_hooks.0.interval': scef_every})
    cfg.param_scheduler[-1].end = iters
    cfg.param_scheduler[0].end = cfg.param_scheduler[-1].begin = min(cfg.warmup_iters, max(1, iters // 2))
    if smoke:
        cfg.merge_from_dict(_parse_opts([
            'model.decode_head.num_queries=10', 'model.decode_head.transformer_decoder.num_layers=1',
            'model.decode_head.pixel_decoder.encoder.num_layers=1', 'model.decode_head.train_cfg.num_points=256',
            f'model.data_preprocessor.size={size}']))
        cfg.train_dataloader.dataset.pipeline[2].scale = size[::-1]
        cfg.train_dataloader.dataset.pipeline[3].crop_size = size
        for loader in ('val_dataloader', 'test_dataloader'):
            cfg[loader].dataset.pipeline[1].scale = size[::-1]
        cfg.custom_hooks[0].probe_size = size
        if encoders is not None:
            cfg.model.backbone.master = dict(encoders['dinov3'])
            cfg.model.backbone.auxiliary = dict(encoders['sam2'])
            width = encoders['dinov3']['arch']['hidden_size']  # the parameter-free pyramid: hidden size everywhere
            cfg.model.decode_head.in_channels = [width] * 4
    return cfg


def save_initial_weights(config: str, work_dir: str) -> str:
    """Build the runner of ``config`` as tools/train.py does, initialise the model's weights as training starts
    (pretrained encoders where their checkpoints are present) and save them as ``work_dir/iter_0.pth``."""
    from mmfusion.apis.runner_utils import build_runner, load_config

    cfg = load_config(config, None, work_dir, 'none')
    cfg.custom_hooks = []  # no SC/EF probe before a run that does not train
    runner = build_runner(cfg, 'train')
    runner.model.init_weights()
    runner.save_checkpoint(work_dir, 'iter_0.pth', save_optimizer=False, save_param_scheduler=False)
    from mmfusion.engine.work_dir_lock import release_work_dir
    release_work_dir()  # build_runner took the work dir's lock as for a training run
    return osp.join(work_dir, 'iter_0.pth')


def _trained_pair(fused: str, encoders: dict) -> dict:
    """master, auxiliary (by encoder name) and s* of the fused config as emitted."""
    from mmengine.config import Config
    backbone = Config.fromfile(fused).model.backbone
    names = {repr(sorted(cfg.items())): name for name, cfg in encoders.items()}

    def name_of(cfg):
        return names.get(repr(sorted(cfg.to_dict().items())), '?')

    return dict(master=name_of(backbone.master), auxiliary=name_of(backbone.auxiliary),
                inject_stride=backbone.inject_stride)


def _arch_names(encoders: dict) -> str:
    return ', '.join(f'{n} {c["arch"] if isinstance(c["arch"], str) else "toy"}' for n, c in encoders.items())


def _iter_of(path: str) -> int:
    return int(osp.basename(path)[len('iter_'):-len('.json')])


def plot_loss(train_dir: str, png: str) -> str:
    """The training loss per logged iteration, from MMEngine's JSON log of the run (vis_data/scalars.json)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    logs = sorted(glob.glob(osp.join(train_dir, '*', 'vis_data', 'scalars.json')))
    if not logs:
        raise UserError(f'no MMEngine JSON log (vis_data/scalars.json) under {train_dir}; see train.log')
    steps, losses = [], []
    with open(logs[-1]) as f:
        for line in f:
            rec = json.loads(line)
            if 'loss' in rec and 'iter' in rec:
                steps.append(rec['iter'])
                losses.append(rec['loss'])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, losses, marker='.')
    ax.set(xlabel='iteration', ylabel='total loss', title='training loss (MMEngine json log)')
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def plot_scef(paths: list, png: str) -> str:
    """SC and EF of the master/auxiliary pyramids per stride during training (SCEFHook's scef/iter_*.json)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    if not paths:
        raise UserError('SCEFHook wrote no scef/iter_*.json during training; see train.log')
    series = {}
    for path in paths:
        with open(path) as f:
            doc = json.load(f)
        for name, entry in doc['encoders'].items():
            for key in ('SC', 'EF'):
                for s, v in zip(entry['strides'], entry[key]):
                    series.setdefault((key, name, s), []).append((_iter_of(path), v))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, key in zip(axes, ('SC', 'EF')):
        for (k, name, s), pts in sorted(series.items()):
            if k == key:
                ax.plot(*zip(*pts), marker='o', label=f'{name} OS{s}')
        ax.set(xlabel='iteration', ylabel=key, title=f'{key} during training (SCEFHook)')
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def _parse_opts(opts: list) -> dict:
    from mmengine.config import DictAction
    parsed = {}
    for opt in opts:
        key, val = opt.split('=', 1)
        parsed[key] = DictAction._parse_iterable(val)
    return parsed


def _profile_table(log_path: str) -> str:
    """The SC/EF table and the recommendation the profiler printed."""
    with open(log_path) as f:
        lines = f.read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith('Encoder'))
    end = next(i for i, line in enumerate(lines) if line.startswith('recommended'))
    return '\n'.join(lines[start:end + 1])


def _last_metrics(test_dir: str) -> dict:
    """The metrics tools/test.py logged (the last record of MMEngine's JSON log of the test run), as they print."""
    metrics = {}
    for path in sorted(glob.glob(osp.join(test_dir, '*', '*.json'))):
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                metrics.update({k: None if isinstance(v, float) and math.isnan(v) else v  # strict JSON
                                for k, v in rec.items() if k not in NOT_METRICS})
    if not metrics:
        raise UserError(f'tools/test.py wrote no metrics under {test_dir}; see the .log beside it')
    return metrics


def headline_metrics(metrics: dict) -> list:
    """The dataset-level metric names (per-class ones such as ``BIoU.road`` stay in summary.json)."""
    return [k for k in sorted(metrics) if '.' not in k]


def _write_readme(out: str, summary: dict) -> None:
    sel, figs = summary['selection'], summary['figures']
    table = _profile_table(osp.join(out, 'profile.log'))
    lines = ['# mmfusion demo report', '', f'Task: {summary["task"]}, on the synthetic Cityscapes-format scenes.', '']
    if summary['random_init']:
        lines += [f'**Randomly initialised encoders: {", ".join(summary["random_init"])}.** Without the pretrained '
                  'weights (top-level README, "Weights") the demo fuses small encoders of the same families, trained '
                  'from scratch: the numbers show that the system learns and that its pieces connect, not what the '
                  'method achieves, and the profile\'s choice of master, auxiliary and s\\* is arbitrary.', '']
    lines += ['## 1. Label-free profile (SC / EF per output stride)', '',
              f'Encoders: {_arch_names(summary["encoders"])} (`encoders.py`).', '', '```', table.rstrip(), '```', '',
              f'![SC and EF per stride]({figs["profile"]})', '',
              f'Selection: master = **{sel["master"]}**, auxiliary = **{sel["auxiliary"]}**, '
              f's\\* = **OS{sel["inject_stride"]}**. The profiler wrote `fused_config.py` '
              '(`--emit-config`): the selected encoders as master and auxiliary, `inject_stride` = s\\*, the head\'s '
              '`in_channels` = the master\'s channels. That is the config trained below.', '',
              'For comparison, the paper\'s profile of the pretrained DINOv3 ViT-B/16 and SAM2.1 Hiera-B+ '
              '(SPEC §4):', '',
              '| Encoder | Metric | OS4 | OS8 | OS16 | OS32 |', '|---|---|---|---|---|---|',
              '| DINOv3 ViT-B/16 | SC | 0.73 | 0.71 | 0.65 | 0.53 |',
              '| DINOv3 ViT-B/16 | EF | 1.27 | 1.64 | 2.33 | 5.88 |',
              '| SAM2.1 Hiera-B+ | SC | 0.49 | 0.44 | 0.11 | 0.41 |',
              '| SAM2.1 Hiera-B+ | EF | 6.60 | 8.59 | 17.13 | 12.47 |', '',
              '(DINOv3 master, SAM2 auxiliary, s\\* = OS16.) PCA-RGB pictures of each encoder per stride: '
              '`profile/pca/`.',
              '', f'## 2. Training: {summary["iters"]} iterations (`train/`, `train.log`)', '',
              f'![training loss]({figs["loss"]})', '',
              f'SC/EF of the master and auxiliary pyramids on fixed probe images during training (SCEFHook, '
              f'`{"`, `".join(summary["scef_profiles"])}`):', '', f'![SC/EF drift]({figs["scef_drift"]})', '',
              '## 3. Evaluation (mmseg `IoUMetric` and mmfusion `BoundaryIoUMetric`, val split, tools/test.py)', '',
              '| metric | untrained (initial weights) | trained |', '|---|---|---|']
    for key in headline_metrics(summary['metrics']):
        lines.append(f'| {key} | {summary["untrained"].get(key, "")} | {summary["metrics"][key]} |')
    lines += ['', 'Per-class scores: `summary.json`.', '',
              'Ground truth | prediction, per val image (`overlays/`):', '']
    lines += [f'![{osp.basename(p)}]({p})' for p in figs['overlays']]
    lines += ['', f'Total time: {summary["seconds"]} s.', '']
    with open(osp.join(out, 'README.md'), 'w') as f:
        f.write('\n'.join(lines))


def main(argv=None) -> dict:
    """Run the demo; returns its summary. Expected failures print one ``error:`` line and exit with status 2."""
    return run_tool(_main, argv)


if __name__ == '__main__':
    main()
