"""What the tools share: loading a config of either scope, turning CLI flags into it, checking the inputs a run
needs before it starts, and saying an expected failure in one line.

mmfusion configs inherit mmdet's or mmseg's own recipes, so one pair of tools serves both: the config's
``default_scope`` ('mmdet' or 'mmseg') decides which visualization hook and output options apply.

Every tool's ``main(argv)`` runs through :func:`run_tool`: a :class:`~mmfusion.utils.errors.UserError` (or another
expected failure, see :func:`~mmfusion.utils.errors.user_error_types`) is printed as ``error: <problem>; <fix>``
and the tool exits with status 2; ``--debug`` or ``MMFUSION_DEBUG=1`` shows the traceback instead.
"""
from __future__ import annotations

import contextlib
import difflib
import os
import os.path as osp
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Optional

from mmengine.config import Config, DictAction

from mmfusion.utils.errors import DEBUG_ENV, UserError, one_line, user_error_types
from mmfusion.utils.fileio import claim_dir

SUPPORTED_SCOPES = ('mmdet', 'mmseg')
# How a missing annotation file or data folder is made, by a part of its path: (pattern, command).
_CONVERTERS = (
    ('instancesonly_filtered_gtFine', 'python tools/dataset_converters/cityscapes.py {root}'),
    ('labelTrainIds', 'python tools/dataset_converters/cityscapes.py {root}'),
    ('cityscapes_panoptic', 'python tools/dataset_converters/cityscapes_panoptic.py {root}'),
    ('kitti360_instances', 'python tools/dataset_converters/kitti360.py {root}'),
    ('synscapes_instances', 'python tools/dataset_converters/synthetic_sources.py synscapes {root}'),
    ('urbansyn_instances', 'python tools/dataset_converters/synthetic_sources.py urbansyn {root}'),
)


# --- the one-line guard ----------------------------------------------------------------------------------------


def add_debug_arg(parser) -> None:
    """``--debug``: show the traceback of an expected failure (read by :func:`run_tool`)."""
    parser.add_argument('--debug', action='store_true',
                        help=f'on an expected failure show the traceback, not one line (or set {DEBUG_ENV}=1)')


def run_tool(main: Callable[[Optional[list]], Any], argv: Optional[Sequence[str]] = None,
             prog: Optional[str] = None) -> Any:
    """Run a tool's ``main(argv)``; an expected failure becomes one ``error: ...`` line on stderr and exit status 2.

    Args:
        main (Callable): The tool's entry point; it parses ``argv``.
        argv (Sequence[str], optional): Arguments; default ``sys.argv[1:]``.
        prog (str, optional): Prefix the line with ``<prog>: `` (argparse's style). Default: None.

    Returns:
        Whatever ``main`` returns.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = '--debug' in argv or os.environ.get(DEBUG_ENV, '0') not in ('', '0')
    try:
        return main(argv)
    except user_error_types() as e:
        if debug:
            raise
        print(f'{prog + ": " if prog else ""}error: {one_line(e)}', file=sys.stderr, flush=True)
        raise SystemExit(2) from None


@contextlib.contextmanager
def config_errors(config: str) -> Iterator[None]:
    """Turn the errors a wrong config key gives while building (an unknown type, an unknown argument) into
    :class:`UserError` naming ``config``; other errors pass unchanged."""
    try:
        yield
    except KeyError as e:
        msg = one_line(e)
        if 'registry' not in msg:
            raise
        first = msg.split(' Please check')[0].rstrip('.')
        raise UserError(f'{config}: {first}; check the type names in the config and --cfg-options') from e
    except TypeError as e:
        msg = one_line(e)
        if 'unexpected keyword argument' not in msg and 'required positional argument' not in msg:
            raise
        raise UserError(f'{config}: {msg}; check that key in the config and --cfg-options') from e


# --- config ----------------------------------------------------------------------------------------------------


def add_common_args(parser) -> None:
    """Flags mmdet's and mmseg's tools share, with their meaning."""
    parser.add_argument('--work-dir', help='the dir to save logs and models (default: ./work_dirs/<config name>); '
                        'a new or empty folder, or one an mmfusion tool made')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings in the config, xxx=yyy format, e.g. train_cfg.max_iters=1000; every key but the '
        'last must exist in the config')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none', help='job launcher')
    # torchrun passes --local-rank (torch >= 2.0) or --local_rank
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    add_debug_arg(parser)


def read_config(config: str) -> Config:
    """``Config.fromfile`` with a missing file or an unreadable config (syntax error, missing base, bad reference)
    said in one line that names the file."""
    if not osp.isfile(config):
        raise UserError(f'config file not found: {config}; pass an existing config (they live under configs/)')
    import mmfusion.registry  # noqa: F401  (compat fixes and registries, before anything builds)
    try:
        return Config.fromfile(config)
    except SyntaxError as e:
        found = _syntax_error(config)
        if found:
            path, err = found
            where = '' if osp.samefile(path, config) else f' (its base {path})'
            raise UserError(f'config {config}{where} has a syntax error at line {err.lineno}: {err.msg}; fix the '
                            'file') from e
        raise UserError(f'config {config} has a syntax error ({one_line(e)}); fix the file') from e
    except Exception as e:  # a missing _base_, a bad {{_base_.x}} reference, an exception in the file
        raise UserError(f'cannot read config {config}: {type(e).__name__}: {one_line(e)}; fix the file') from e


def _syntax_error(config: str, seen: Optional[set] = None) -> Optional[tuple[str, SyntaxError]]:
    """The first local config file, ``config`` or one of its ``_base_`` files, that Python cannot parse."""
    import ast
    seen = set() if seen is None else seen
    if config in seen or not osp.isfile(config):
        return None
    seen.add(config)
    with open(config, encoding='utf-8') as f:
        source = f.read()
    try:
        tree = ast.parse(source, filename=config)
    except SyntaxError as err:
        return config, err
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, 'id', None) == '_base_' for t in node.targets):
            try:
                bases = ast.literal_eval(node.value)
            except ValueError:
                continue
            for base in [bases] if isinstance(bases, str) else list(bases):
                if isinstance(base, str) and '::' not in base:
                    found = _syntax_error(osp.normpath(osp.join(osp.dirname(config), base)), seen)
                    if found:
                        return found
    return None


def check_cfg_options(cfg: Config, options: Mapping[str, Any]) -> None:
    """Refuse a ``--cfg-options`` key whose parent is not in ``cfg`` (a typo would otherwise add a new, unused key).

    A new last component (an argument the config leaves at its default) is accepted with a note.

    Raises:
        UserError: a parent key is missing, or a list index is out of range; the message suggests close keys.
    """
    for key in options:
        node: Any = cfg._cfg_dict if isinstance(cfg, Config) else cfg
        parts = key.split('.')
        for depth, part in enumerate(parts):
            path = '.'.join(parts[:depth + 1])
            last = depth == len(parts) - 1
            if isinstance(node, (list, tuple)):
                if not part.isdigit() or int(part) >= len(node):
                    raise UserError(f'--cfg-options {key}: {".".join(parts[:depth]) or "the config"} is a list of '
                                    f'{len(node)}; use an index 0..{len(node) - 1} after it')
                node = node[int(part)]
            elif isinstance(node, Mapping):
                if part in node:
                    node = node[part]
                elif last:
                    print(f'note: --cfg-options {key} adds a key the config does not have', file=sys.stderr)
                else:
                    stem = '.'.join(parts[:depth] + [''])
                    close = [stem + c for c in difflib.get_close_matches(part, [str(k) for k in node], n=3)]
                    hint = f' (did you mean {" or ".join(close)}?)' if close else ''
                    raise UserError(f'--cfg-options {key}: the config has no {path}{hint}; fix the key')
            else:
                raise UserError(f'--cfg-options {key}: {".".join(parts[:depth])} is {node!r}, not a dict or a list; '
                                'fix the key')


def load_config(config: str, cfg_options: Optional[dict], work_dir: Optional[str], launcher: str) -> Config:
    """Read ``config``, apply overrides, set the work dir and launcher, and check its scope."""
    cfg = read_config(config)
    if cfg_options:
        check_cfg_options(cfg, cfg_options)
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope')
    if scope not in SUPPORTED_SCOPES:
        raise UserError(f'{config}: default_scope is {scope!r}; mmfusion tools run configs that inherit an mmdet '
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


def _accelerator_available() -> bool:
    from mmengine.device import is_cuda_available, is_mlu_available, is_musa_available, is_npu_available
    return is_cuda_available() or is_npu_available() or is_mlu_available() or is_musa_available()


def enable_amp(cfg: Config) -> None:
    """Mixed precision the MMEngine way (AmpOptimWrapper, dynamic loss scale).

    Raises:
        UserError: no GPU is visible. MMEngine's AmpOptimWrapper asserts a GPU (or NPU/MLU/MUSA), whatever its
            ``dtype`` (bfloat16 included), so there is no CPU mixed precision to fall back to.
    """
    if not _accelerator_available():
        raise UserError('--amp needs a GPU: MMEngine\'s AmpOptimWrapper (float16 or bfloat16) runs only on '
                        'CUDA/NPU/MLU/MUSA devices and none is visible; drop --amp to train in float32 on the CPU')
    wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if wrapper == 'AmpOptimWrapper':
        return
    if wrapper != 'OptimWrapper':
        raise UserError(f'--amp needs optim_wrapper.type OptimWrapper or AmpOptimWrapper, got {wrapper!r}; drop --amp '
                        'or change optim_wrapper.type')
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')


def set_resume(cfg: Config, resume: Optional[str]) -> None:
    """``--resume`` alone resumes from the latest checkpoint in the work dir; ``--resume PATH`` from PATH."""
    if resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif resume is not None:
        if not osp.isfile(resume):
            raise UserError(f'--resume {resume}: no such checkpoint; pass a .pth written by tools/train.py, or '
                            '--resume alone for the latest one in the work dir')
        cfg.resume = True
        cfg.load_from = resume


def enable_visualization(cfg: Config, show: bool, show_dir: Optional[str], wait_time: float = 2.0) -> None:
    """Turn on the scope's visualization hook (DetVisualizationHook / SegVisualizationHook)."""
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise UserError('--show/--show-dir need default_hooks.visualization in the config; add it or drop the flag')
    hook['draw'] = True
    if show:
        hook['show'] = True
        hook['wait_time'] = wait_time
    if show_dir:
        if cfg.default_scope == 'mmdet':
            hook['test_out_dir'] = show_dir  # mmdet puts a relative one under <work_dir>/<timestamp>/
            if osp.isabs(show_dir):
                claim_dir(show_dir, 'show-dir', '--show-dir')
        else:
            claim_dir(show_dir, 'show-dir', '--show-dir')
            cfg.visualizer['save_dir'] = show_dir
            hook['interval'] = 1  # mmseg draws every 50th image by default; --show-dir means every test image


# --- the inputs a run needs -------------------------------------------------------------------------------------


def _how_to_make(path: str, root: str) -> str:
    for pattern, command in _CONVERTERS:
        if pattern in path:
            return f'create it with: {command.format(root=root.rstrip("/") or ".")}'
    return 'check the path in the config'


def _join(root: str, path: str) -> str:
    return path if not root or osp.isabs(path) else osp.join(root, path)


def _dataset_problem(ds: Mapping, where: str) -> Optional[str]:
    """What is missing for the dataset config ``ds`` (wrappers followed), or None."""
    if isinstance(ds.get('dataset'), Mapping):
        return _dataset_problem(ds['dataset'], f'{where}.dataset')
    if isinstance(ds.get('datasets'), Sequence):
        for i, sub in enumerate(ds['datasets']):
            problem = _dataset_problem(sub, f'{where}.datasets.{i}')
            if problem:
                return problem
        return None
    root = ds.get('data_root') or ''
    if root and not osp.isdir(root):
        fix = ('put the dataset there (a symlink works) or point the config at your copy')
        if 'cityscapes' in root.lower():
            fix += (f'; to try the tools without it, generate synthetic scenes: python '
                    f'tools/dataset_converters/make_synthetic_cityscapes.py {root.rstrip("/")}')
        return f'data folder not found: {root} ({where}.data_root); {fix}'
    ann = ds.get('ann_file')
    if ann and not osp.isfile(_join(root, ann)):
        return f'annotation file not found: {_join(root, ann)} ({where}.ann_file); {_how_to_make(ann, root)}'
    prefix = ds.get('data_prefix') or {}
    for key, sub in prefix.items():
        if sub and not osp.isdir(_join(root, sub)):
            return f'data folder not found: {_join(root, sub)} ({where}.data_prefix.{key}); {_how_to_make(sub, root)}'
    suffix = ds.get('seg_map_suffix')
    seg_dir = prefix.get('seg_map_path')
    if suffix and seg_dir and not _any_file(_join(root, seg_dir), suffix):
        return (f'no *{suffix} file under {_join(root, seg_dir)} ({where}.seg_map_suffix); '
                f'{_how_to_make(suffix, root)}')
    return None


def _any_file(folder: str, suffix: str) -> bool:
    """Whether some file under ``folder`` ends in ``suffix`` (stops at the first)."""
    for _, _, files in os.walk(folder):
        if any(f.endswith(suffix) for f in files):
            return True
    return False


def _evaluator_items(cfg: Config, mode: str) -> Iterator[tuple[str, Mapping]]:
    splits = ['test'] if mode == 'test' else (['val'] if cfg.get('val_cfg') else [])
    for split in splits:
        ev = cfg.get(f'{split}_evaluator')
        if isinstance(ev, Mapping) and 'metrics' in ev and 'type' not in ev:
            ev = ev['metrics']
        items = list(ev) if isinstance(ev, Sequence) and not isinstance(ev, (str, Mapping)) else [ev]
        for i, metric in enumerate(items):
            if isinstance(metric, Mapping):
                yield (f'{split}_evaluator.{i}' if len(items) > 1 else f'{split}_evaluator'), metric


def _metric_problem(metric: Mapping, where: str) -> Optional[str]:
    """What is missing for the evaluator metric config ``metric``, or None."""
    ann = metric.get('ann_file')
    if ann and not osp.isfile(ann):
        fix = _how_to_make(ann, osp.dirname(osp.dirname(ann)))
        return f'annotation file not found: {ann} ({where}.ann_file); {fix}'
    seg = metric.get('seg_prefix')
    if seg and not osp.isdir(seg):
        return f'ground-truth folder not found: {seg} ({where}.seg_prefix); {_how_to_make(seg, osp.dirname(seg))}'
    return None


def check_data(cfg: Config, mode: str) -> None:
    """Check before building anything that the folders and annotation files a run reads exist.

    Args:
        cfg (Config): The run's config.
        mode (str): ``'train'`` (train data, and val data when the config validates) or ``'test'``.

    Raises:
        UserError: the first missing folder or file, with the converter command that makes it.
    """
    splits = ['test'] if mode == 'test' else ['train'] + (['val'] if cfg.get('val_cfg') else [])
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if isinstance(loader, Mapping) and isinstance(loader.get('dataset'), Mapping):
            problem = _dataset_problem(loader['dataset'], f'{split}_dataloader.dataset')
            if problem:
                raise UserError(problem)
    for where, metric in _evaluator_items(cfg, mode):
        problem = _metric_problem(metric, where)
        if problem:
            raise UserError(problem)


# Metrics that delete a folder named in their config before (or after) writing into it: type -> key.
_METRIC_OUTPUT_DIRS = {'CityScapesMetric': 'outfile_prefix', 'CityscapesMetric': 'output_dir'}


def claim_metric_outputs(cfg: Config, mode: str) -> None:
    """Claim the folders of metrics that clear them (mmdet's ``CityScapesMetric`` deletes ``outfile_prefix/results``,
    mmseg's ``CityscapesMetric`` its ``output_dir``) as tool outputs, so a folder of the user's is refused instead.

    Raises:
        UserError: such a folder exists, is not empty, and no mmfusion tool made it.
    """
    for where, metric in _evaluator_items(cfg, mode):
        key = _METRIC_OUTPUT_DIRS.get(str(metric.get('type', '')).split('.')[-1])
        if key and metric.get(key):
            claim_dir(osp.expanduser(metric[key]), 'metric-output', f'--cfg-options {where}.{key}')


# --- building ---------------------------------------------------------------------------------------------------


def build_runner(cfg: Config, mode: str = 'train'):
    """The config's runner type if it names one, else MMEngine's Runner, with its inputs checked, its work dir
    claimed (see :func:`mmfusion.utils.fileio.claim_dir`) and a
    :class:`~mmfusion.apis.checkpoint_fit.CheckpointFitHook` registered.

    Args:
        cfg (Config): A config from :func:`load_config`.
        mode (str): ``'train'`` or ``'test'``: which data :func:`check_data` checks; a test run, or a resumed
            training, refuses a checkpoint that does not fit the model (training from ``load_from`` gets a note).
            Default: ``'train'``.
    """
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    from mmfusion.apis.checkpoint_fit import CheckpointFitHook
    if mode not in ('train', 'test'):
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    config = cfg.filename or 'the config'
    if mode == 'train' and cfg.get('optim_wrapper', {}).get('type') == 'AmpOptimWrapper' \
            and not _accelerator_available():
        raise UserError(f'{config}: optim_wrapper.type is AmpOptimWrapper, which needs a GPU, and none is visible; '
                        'pass --cfg-options optim_wrapper.type=OptimWrapper to train in float32 on the CPU')
    check_data(cfg, mode)
    claim_dir(cfg.work_dir, 'work-dir', '--work-dir')
    claim_metric_outputs(cfg, mode)
    with config_errors(config):
        runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    runner.register_hook(CheckpointFitHook(config, strict=mode == 'test' or bool(cfg.get('resume'))))
    return runner
