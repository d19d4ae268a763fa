"""What tools/train.py and tools/test.py share: loading a config of either scope and turning CLI flags into it.

mmfusion configs inherit mmdet's or mmseg's own recipes, so one pair of tools serves both: the config's
``default_scope`` ('mmdet' or 'mmseg') decides which visualization hook and output options apply.
"""
from __future__ import annotations

import os.path as osp
from typing import Optional

from mmengine.config import Config, DictAction

SUPPORTED_SCOPES = ('mmdet', 'mmseg')


def add_common_args(parser) -> None:
    """Flags mmdet's and mmseg's tools share, with their meaning."""
    parser.add_argument('--work-dir', help='the dir to save logs and models (default: ./work_dirs/<config name>)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings in the config, xxx=yyy format, e.g. model.neck.inject_stride=8')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none', help='job launcher')
    # torchrun passes --local-rank (torch >= 2.0) or --local_rank
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def load_config(config: str, cfg_options: Optional[dict], work_dir: Optional[str], launcher: str) -> Config:
    """Read ``config``, apply overrides, set the work dir and launcher, and check its scope."""
    if not osp.isfile(config):
        raise FileNotFoundError(f'config file not found: {config!r} (configs live under configs/ of mmfusion)')
    import mmfusion  # noqa: F401  (compat fixes and registries, before anything builds)
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope')
    if scope not in SUPPORTED_SCOPES:
        raise ValueError(f'{config}: default_scope is {scope!r}; mmfusion tools run configs that inherit an mmdet '
                         f'or mmseg recipe (default_scope one of {SUPPORTED_SCOPES})')
    cfg.launcher = launcher
    vis = cfg.get('visualizer')
    if isinstance(vis, dict) and vis.get('name') == 'visualizer':
        # mmdet/mmseg name their visualizer 'visualizer'; MMEngine keeps it as a per-process singleton, so a second
        # run in the same process (a notebook, the demo, tests) would log into the first run's folder. Without a
        # name, the Runner names it after the run (its timestamp).
        vis.pop('name')
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])
    return cfg


def enable_amp(cfg: Config) -> None:
    """Mixed precision the MMEngine way (AmpOptimWrapper, dynamic loss scale)."""
    wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if wrapper == 'AmpOptimWrapper':
        return
    if wrapper != 'OptimWrapper':
        raise ValueError(f'--amp needs optim_wrapper.type OptimWrapper or AmpOptimWrapper, got {wrapper!r}')
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')


def set_resume(cfg: Config, resume: Optional[str]) -> None:
    """``--resume`` alone resumes from the latest checkpoint in the work dir; ``--resume PATH`` from PATH."""
    if resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif resume is not None:
        if not osp.isfile(resume):
            raise FileNotFoundError(f'--resume {resume}: no such checkpoint')
        cfg.resume = True
        cfg.load_from = resume


def enable_visualization(cfg: Config, show: bool, show_dir: Optional[str], wait_time: float = 2.0) -> None:
    """Turn on the scope's visualization hook (DetVisualizationHook / SegVisualizationHook)."""
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise ValueError('--show/--show-dir need default_hooks.visualization in the config')
    hook['draw'] = True
    if show:
        hook['show'] = True
        hook['wait_time'] = wait_time
    if show_dir:
        if cfg.default_scope == 'mmdet':
            hook['test_out_dir'] = show_dir
        else:
            cfg.visualizer['save_dir'] = show_dir
            hook['interval'] = 1  # mmseg draws every 50th image by default; --show-dir means every test image


def build_runner(cfg: Config):
    """The config's runner type if it names one, else MMEngine's Runner."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)

