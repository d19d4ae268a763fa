"""The main job on an embedded default: the whole method, end to end, on this machine, with no data of your own.

1. generate synthetic street scenes in the Cityscapes on-disk format (data/demo_cityscapes, deterministic);
2. profile DINOv3 ViT-B/16 and SAM2.1 Hiera-B+ (SC/EF per stride; weights from checkpoints/ when present, else
   random -- said loudly) and select master, auxiliary and s*;
3. train the fused Mask2Former (tools/train.py on configs/demo/, which inherits the flagship config) briefly;
4. evaluate it with the stock COCO and Cityscapes instance metrics (tools/test.py) and draw overlays;
5. write a report folder: profile table/plots/PCA images, selected config, training log, metrics, overlays.

    python tools/demo.py [--out-dir demo_output] [--data-root data/demo_cityscapes] [--iters 30] [--smoke] [--debug]

``--smoke`` runs the same pipeline with tiny encoders and images (what the test suite runs). The demo writes only
into folders it made (``--out-dir`` gets ``.mmfusion-demo``, ``--data-root`` ``.mmfusion-synthetic-cityscapes``) or
finds empty; a rerun replaces its own outputs there and leaves anything else alone.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import time

from mmfusion.apis.runner_utils import add_debug_arg, run_tool
from mmfusion.utils.errors import UserError
from mmfusion.utils.fileio import claim_dir, is_owned, remove_outputs

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(ROOT, 'configs', 'demo', 'mask2former_d3s2_synthetic_demo.py')
ENCODERS = osp.join(ROOT, 'configs', '_base_', 'encoders.py')
ENCODER_KEYS = {'dinov3': 'dinov3_vitb16', 'sam2': 'sam2_hiera_bplus'}
# What a run writes into --out-dir: a rerun deletes these (and nothing else) first.
OUTPUTS = ('encoders.py', 'demo_config.py', 'profile', 'profile.log', 'train', 'train.log', 'test', 'test.log',
           'overlays', 'cityscapes_metric', 'summary.json', 'README.md')
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


def encoder_configs(weights: dict, smoke: bool) -> dict:
    """The two encoders as this run builds them: random init where no checkpoint, toy archs in smoke mode."""
    from mmengine.config import Config
    enc = Config.fromfile(ENCODERS)
    out = {}
    for name, key in ENCODER_KEYS.items():
        cfg = enc[key].to_dict()
        if weights[name] is None:
            cfg['checkpoint'] = None
        if smoke:
            cfg['arch'] = SMOKE_ARCH[name]
        out[name] = cfg
    return out


def fusion_options(profile: dict, encoders: dict) -> tuple:
    """Config updates that apply the profile's s* and this run's encoder settings to the demo config.

    Returns (updates, stride). The demo trains the paper's pairing (DINOv3 master, SAM2 auxiliary); when the profile
    ranks the pair the other way (it can with random weights), s* is still SAM2's EF peak, the auxiliary used.
    """
    selection = profile['selection']
    stride = selection['inject_stride']
    if (selection['master'], selection['auxiliary']) != ('dinov3', 'sam2'):
        ef = dict(zip(profile['encoders']['sam2']['strides'], profile['encoders']['sam2']['EF']))
        stride = max(ef, key=ef.get)
        print(f'note: the profile ranks {selection["master"]} as master and {selection["auxiliary"]} as auxiliary. '
              'With random weights a profile says little about the encoders; the demo keeps the paper\'s D3S2 '
              f'pairing and injects SAM2 at its EF peak, OS{stride}.')
    return {
        'model.backbone.inject_stride': stride,
        'model.backbone.master': dict(encoders['dinov3'], _delete_=True),
        'model.backbone.auxiliary': dict(encoders['sam2'], _delete_=True),
    }, stride


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out-dir', default=osp.join(ROOT, 'demo_output'),
                        help='report folder: new, empty, or an earlier report of the demo')
    parser.add_argument('--data-root', default=osp.join(ROOT, 'data', 'demo_cityscapes'),
                        help='synthetic scenes: new, empty, or written by an earlier demo run (then reused)')
    parser.add_argument('--iters', type=int, default=None, help='training iterations (default: 30; smoke: 2)')
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
    iters = args.iters or (2 if smoke else 30)
    n_prof = args.profile_images or (2 if smoke else 4)
    size = (64, 128) if smoke else (256, 512)
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
               'No pretrained weights at the documented places (README, "Weights"), so the profile and the trained\n'
               'model show that the pipeline works, NOT what the method achieves. Put the checkpoints there and\n'
               'run this command again to use them.')
    else:
        print('using pretrained weights: ' + ', '.join(f'{k}={v}' for k, v in weights.items()))

    # 1. data (an incomplete earlier dataset of the demo is replaced; the generator refuses anything else)
    ann_val = osp.join(data_root, 'annotations', 'instancesonly_filtered_gtFine_val.json')
    if not reuse_data:
        banner(f'1/5 generating synthetic Cityscapes-format scenes in {data_root}')
        from mmfusion.datasets.synthetic_cityscapes import generate_synthetic_cityscapes
        generate_synthetic_cityscapes(data_root, num_train=8 if smoke else 16, num_val=2 if smoke else 4,
                                      height=size[0], width=size[1], seed=0, overwrite=True, panoptic=False)
    else:
        banner(f'1/5 reusing the synthetic scenes in {data_root}')
    data_opts = [f'data_root={data_root}/',
                 f'train_dataloader.dataset.data_root={data_root}/', f'val_dataloader.dataset.data_root={data_root}/',
                 f'test_dataloader.dataset.data_root={data_root}/',
                 f'val_evaluator.0.ann_file={ann_val}', f'test_evaluator.0.ann_file={ann_val}',
                 f'val_evaluator.1.seg_prefix={data_root}/gtFine/val',
                 f'test_evaluator.1.seg_prefix={data_root}/gtFine/val',
                 f'val_evaluator.1.outfile_prefix={out}/cityscapes_metric',
                 f'test_evaluator.1.outfile_prefix={out}/cityscapes_metric']

    # the demo config with this run's data, weights and sizes (dumped: the tools below read it)
    from mmengine.config import Config

    import mmfusion.registry  # noqa: F401  (compat fixes and registries, before anything builds)
    encoders = encoder_configs(weights, smoke)
    enc_file = osp.join(out, 'encoders.py')
    with open(enc_file, 'w') as f:
        f.write('# The encoders this demo run profiles and fuses (written by tools/demo.py).\n')
        f.write(''.join(f'{name} = {cfg!r}\n' for name, cfg in encoders.items()))
    cfg_dump = osp.join(out, 'demo_config.py')
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.merge_from_dict(_parse_opts(data_opts + [
        f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}', f'param_scheduler.end={iters}',
        f'default_hooks.checkpoint.interval={iters}', f'custom_hooks.0.interval={iters}']))
    if smoke:
        cfg.merge_from_dict(_parse_opts([
            'model.panoptic_head.num_queries=10', 'model.panoptic_head.transformer_decoder.num_layers=2',
            'model.train_cfg.num_points=256', 'model.test_cfg.max_per_image=10',
            'model.data_preprocessor.batch_augments.0.size=(64,128)']))
        cfg.train_dataloader.dataset.pipeline[4].crop_size = (128, 64)
        cfg.train_dataloader.dataset.pipeline[3].scale = (128, 64)
        for loader in ('val_dataloader', 'test_dataloader'):
            cfg[loader].dataset.pipeline[1].scale = (128, 64)
        cfg.custom_hooks[0].probe_size = (64, 128)
    cfg.dump(cfg_dump)

    # 2. profile + selection
    banner(f'2/5 profiling DINOv3 ViT-B/16 and SAM2.1 Hiera-B+ on {n_prof} images at {prof_size[0]}x{prof_size[1]}')
    prof_dir = osp.join(out, 'profile')
    cmd = [py, osp.join(ROOT, 'tools', 'analysis', 'profile_vfm.py'),
           '--encoder', f'dinov3={enc_file}:dinov3', '--encoder', f'sam2={enc_file}:sam2',
           '--dataset-config', cfg_dump, '--split', 'val', '--num-images', str(n_prof),
           '--size', str(prof_size[0]), str(prof_size[1]), '--device', 'cpu', '--out-dir', prof_dir]
    run(cmd, osp.join(out, 'profile.log'))
    print(_profile_table(osp.join(out, 'profile.log')), flush=True)
    with open(osp.join(prof_dir, 'profile.json')) as f:
        profile = json.load(f)
    selection = profile['selection']

    # 3. train
    banner(f'3/5 training the fused model for {iters} iterations (tools/train.py, {osp.relpath(DEMO_CONFIG, ROOT)})')
    train_dir = osp.join(out, 'train')
    updates, stride = fusion_options(profile, encoders)
    cfg.merge_from_dict(updates)
    cfg.dump(cfg_dump)
    run([py, osp.join(ROOT, 'tools', 'train.py'), cfg_dump, '--work-dir', train_dir], osp.join(out, 'train.log'))
    ckpt = osp.join(train_dir, f'iter_{iters}.pth')

    # 4. evaluate + overlays
    banner('4/5 evaluating with the stock CocoMetric and CityScapesMetric (tools/test.py), drawing overlays')
    test_dir = osp.join(out, 'test')
    run([py, osp.join(ROOT, 'tools', 'test.py'), cfg_dump, ckpt, '--work-dir', test_dir, '--show-dir',
         osp.join(out, 'overlays')], osp.join(out, 'test.log'))
    metrics = _last_metrics(test_dir)

    # 5. report
    banner('5/5 writing the report')
    for src in glob.glob(osp.join(test_dir, '**', 'overlays', '**', '*.png'), recursive=True):
        dst = osp.join(out, 'overlays', osp.basename(src))
        os.makedirs(osp.dirname(dst), exist_ok=True)
        shutil.move(src, dst)
    scef = sorted(glob.glob(osp.join(train_dir, 'scef', '*.json')))
    summary = dict(weights=weights, random_init=missing, selection=selection, trained_inject_stride=stride,
                   iters=iters, metrics=metrics,
                   scef_profiles=[osp.relpath(p, out) for p in scef], seconds=round(time.time() - t0, 1))
    with open(osp.join(out, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    _write_readme(out, summary)
    print(json.dumps(dict(selection=selection, metrics=metrics), indent=2))
    print(f'report: {out} ({summary["seconds"]} s)')
    return summary


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
    """The metrics tools/test.py logged (MMEngine's JSON log of the test run)."""
    metrics = {}
    for path in glob.glob(osp.join(test_dir, '*', '*.json')):
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                metrics.update({k: v for k, v in rec.items() if '/' in k})
    if not metrics:
        raise UserError(f'tools/test.py wrote no metrics under {test_dir}; see test.log beside it')
    return metrics


def _write_readme(out: str, summary: dict) -> None:
    sel = summary['selection']
    table = _profile_table(osp.join(out, 'profile.log'))
    lines = ['# mmfusion demo report', '']
    if summary['random_init']:
        lines += [f'**Randomly initialised encoders: {", ".join(summary["random_init"])}.** The numbers below show '
                  'that the pipeline runs, not what the method achieves.', '']
    lines += ['## Label-free profile (SC / EF per output stride)', '', '```', table.rstrip(), '```', '',
              f'Selection: master = {sel["master"]}, auxiliary = {sel["auxiliary"]}, s* = OS{sel["inject_stride"]}.',
              f'Trained: DINOv3 master + SAM2 auxiliary injected at OS{summary["trained_inject_stride"]}.', '',
              '![profile](profile/profile.png)', '', 'PCA-RGB pictures of each encoder per stride: `profile/pca/`.',
              '', f'## Training: {summary["iters"]} iterations (`train/`, log in `train.log`)', '',
              '## Evaluation (stock mmdet metrics, val split)', '']
    lines += [f'- {k}: {v}' for k, v in sorted(summary['metrics'].items())]
    lines += ['', 'Overlays: `overlays/`. SC/EF during training (SCEFHook): ' + ', '.join(summary['scef_profiles']),
              '', f'Total time: {summary["seconds"]} s.', '']
    with open(osp.join(out, 'README.md'), 'w') as f:
        f.write('\n'.join(lines))


def main(argv=None) -> dict:
    """Run the demo; returns its summary. Expected failures print one ``error:`` line and exit with status 2."""
    return run_tool(_main, argv)


if __name__ == '__main__':
    main()
