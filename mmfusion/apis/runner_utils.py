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
import copy
import difflib
import errno
import json
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
    from mmfusion.utils import fileio
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = '--debug' in argv or os.environ.get(DEBUG_ENV, '0') not in ('', '0')
    created = len(fileio.CREATED_DIRS)
    try:
        return main(argv)
    except user_error_types() as e:
        _remove_unused_dirs(fileio.CREATED_DIRS[created:])
        if debug:
            raise
        print(f'{prog + ": " if prog else ""}error: {one_line(e)}', file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT) or debug:
            raise
        where = f' while writing {e.filename}' if e.filename else ''
        print(f'{prog + ": " if prog else ""}error: no space left on the disk{where}; free space and run the '
              'command again (a training continues from its last checkpoint with --resume)', file=sys.stderr,
              flush=True)
        raise SystemExit(2) from None


def _remove_unused_dirs(folders: Sequence[str]) -> None:
    """Output folders a failed tool created and wrote nothing into (only its marker, or the work dir's lock) go."""
    from mmfusion.engine.work_dir_lock import release_work_dir
    from mmfusion.utils.fileio import MARKER_PREFIX
    release_work_dir()
    for folder in reversed(folders):
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        if all(e.startswith(MARKER_PREFIX) for e in entries):
            for e in entries:
                os.remove(osp.join(folder, e))
            os.rmdir(folder)


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
    """Mixed precision the MMEngine way (AmpOptimWrapper, dynamic loss scale), for a config that trains in float32
    (the stock-schedule configs; the paper configs train with AMP already).

    Raises:
        UserError: the config already trains with AMP (the flag would do nothing).
        UserError: no GPU is visible. MMEngine's AmpOptimWrapper asserts a GPU (or NPU/MLU/MUSA), whatever its
            ``dtype`` (bfloat16 included), so there is no CPU mixed precision to fall back to.
    """
    wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if wrapper == 'AmpOptimWrapper':  # the paper configs: the flag would change nothing
        raise UserError(f'--amp: {cfg.filename or "the config"} already trains with AMP (optim_wrapper.type='
                        "'AmpOptimWrapper', the paper's recipe); drop --amp")
    if not _accelerator_available():
        raise UserError('--amp needs a GPU: MMEngine\'s AmpOptimWrapper (float16 or bfloat16) runs only on '
                        'CUDA/NPU/MLU/MUSA devices and none is visible; drop --amp to train in float32 on the CPU')
    if wrapper != 'OptimWrapper':
        raise UserError(f'--amp needs optim_wrapper.type OptimWrapper or AmpOptimWrapper, got {wrapper!r}; drop --amp '
                        'or change optim_wrapper.type')
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')


def set_resume(cfg: Config, resume: Optional[str]) -> None:
    """``--resume`` alone resumes from the newest intact checkpoint in the work dir (chosen before the Runner is
    built, see :func:`check_checkpoint`); ``--resume PATH`` from PATH."""
    if resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif resume is not None:
        if not osp.isfile(resume):
            raise UserError(f'--resume {resume}: no such checkpoint; pass a .pth written by tools/train.py, or '
                            '--resume alone for the latest one in the work dir')
        cfg.resume = True
        cfg.load_from = resume


def set_load_from(cfg: Config, load_from: Optional[str], partial: bool) -> None:
    """``--load-from PATH`` (a path taken as it is: ``--cfg-options`` splits values at spaces and commas) and
    ``--partial-load`` (a fine-tuning load that may leave weights out)."""
    if load_from is not None:
        if not osp.isfile(load_from):
            raise UserError(f'--load-from {load_from}: no such checkpoint; pass an existing .pth')
        cfg.load_from = load_from
    if partial:
        if not cfg.get('load_from') or cfg.get('resume'):
            raise UserError('--partial-load applies to a fine-tuning load_from only (a resume is always exact); pass '
                            '--load-from CKPT with it, or drop it')
        cfg.partial_load = True


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
            if not osp.isabs(show_dir):  # as mmdet does: a relative --show-dir lives in the work dir
                show_dir = osp.join(cfg.work_dir, show_dir)
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
    A relative one is resolved under the work dir (the config's path, not the current directory's).

    Raises:
        UserError: such a folder exists, is not empty, and no mmfusion tool made it.
    """
    for where, metric in _evaluator_items(cfg, mode):
        key = _METRIC_OUTPUT_DIRS.get(str(metric.get('type', '')).split('.')[-1])
        if key and metric.get(key):
            path = osp.expanduser(metric[key])
            if not osp.isabs(path):  # a relative output of a config lives in the run's work dir, not the cwd
                path = metric[key] = osp.normpath(osp.join(cfg.work_dir, path))
            claim_dir(path, 'metric-output', f'--cfg-options {where}.{key}')


# --- checkpoints and the model, before the Runner is built ------------------------------------------------------


class _StderrLog:
    """A logger stand-in for :func:`mmfusion.compat.resume_checkpoint`: its warning is one line on stderr."""

    @staticmethod
    def warning(msg: str) -> None:
        print(f'warning: {msg}', file=sys.stderr, flush=True)


def planned_checkpoint(cfg: Config, mode: str) -> Optional[str]:
    """The checkpoint the Runner will load: ``load_from`` (test; training from it or resuming from it), or for
    ``--resume`` alone the newest intact checkpoint of the work dir, which is then set as ``load_from`` so that the
    Runner resumes exactly the file checked here. A resume in a work dir without checkpoints says so and starts
    from iteration 0.

    Raises:
        CorruptCheckpointError: checkpoints exist in the work dir but none is intact.
    """
    if mode == 'train' and cfg.get('resume') and not cfg.get('load_from'):
        from mmfusion.compat import resume_checkpoint
        found = resume_checkpoint(cfg.work_dir, _StderrLog)
        if found is None:
            print(f'note: no checkpoint in {cfg.work_dir}, starting from iteration 0', file=sys.stderr, flush=True)
            cfg.resume = False
            return None
        cfg.load_from = found
    return cfg.get('load_from') or None


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Every parameter a module registers moves to the meta device at once (its initialisation then costs nothing).

    Unlike ``torch.device('meta')``, other tensors stay real: constructors that read values (e.g. SAM2's Hiera takes
    ``.item()`` of a ``linspace`` for its drop-path rates) still run.
    """
    from torch import nn
    stock = nn.Module.register_parameter

    def register_parameter(module, name, param):
        stock(module, name, param)
        if param is not None and not param.is_meta:
            module._parameters[name] = type(param)(param.to('meta'), requires_grad=param.requires_grad)

    nn.Module.register_parameter = register_parameter
    try:
        yield
    finally:
        nn.Module.register_parameter = stock


def build_meta_model(cfg: Config):
    """The config's model built on the meta device (no memory, no weights: names and shapes only); None when it
    cannot be built there (the Runner then builds it and the checks run in its hooks).

    Raises:
        UserError: an unknown type or argument in the model config (see :func:`config_errors`).
    """
    from mmengine.registry import MODELS, DefaultScope
    try:
        with config_errors(cfg.filename or 'the config'), DefaultScope.overwrite_default_scope(
                cfg.get('default_scope')), parameters_on_meta():
            # A copy: some models edit their config while building (mmdet's DINO sets bbox_head keys) and the Runner
            # builds from the same config afterwards.
            return MODELS.build(copy.deepcopy(cfg.model))
    except UserError:  # an unknown type or argument: said now, not after the Runner's start-up log
        raise
    except Exception:  # noqa: BLE001  (e.g. a module that cannot live on the meta device: the Runner builds it)
        return None


def check_pretrained(model) -> None:
    """Every pretrained file an encoder will read in ``init_weights`` exists (its own message says how to get it).

    Raises:
        FileNotFoundError: the first missing one.
    """
    from mmfusion.models.backbones.checkpoint_io import resolve_checkpoint
    for module in model.modules():
        path = getattr(module, 'checkpoint', None)
        how = getattr(module, '_how_to_get', None)
        if isinstance(path, str) and callable(how) and hasattr(module, 'load_checkpoint'):
            resolve_checkpoint(path, how())


def read_checkpoint(path: str) -> dict:
    """A local checkpoint for the pre-flight check: integrity first (zip directory and CRCs), then loaded
    weights-only and memory-mapped (names and shapes are read, the weights stay on disk).

    Raises:
        UserError: the file is truncated, corrupt or not a checkpoint; UnsafeCheckpointError: it pickles objects
            weight-only loading refuses.
    """
    import pickle

    import torch

    from mmfusion.compat import _explain_unpickling_error, checkpoint_problem
    problem = checkpoint_problem(path)
    if problem is not None:
        raise UserError(f'checkpoint {path} {problem}; pass an intact checkpoint (for --resume, e.g. an earlier '
                        'one)')
    try:
        try:
            return torch.load(path, map_location='cpu', weights_only=True, mmap=True)
        except RuntimeError:  # a legacy (non-zip) file cannot be memory-mapped
            return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        raise _explain_unpickling_error(path, err) from err
    except Exception as err:
        raise UserError(f'checkpoint {path} cannot be read ({type(err).__name__}: {one_line(err)}); pass a .pth '
                        'written by tools/train.py') from err


def check_checkpoint(cfg: Config, mode: str, model=None) -> list:
    """Check the checkpoint the run will load (see :func:`planned_checkpoint`) before the Runner is built, so that
    a truncated or corrupt file, or one that does not fit the model, is said in one line within seconds instead of
    after MMEngine's start-up log.

    Args:
        cfg (Config): The run's config.
        mode (str): ``'train'`` or ``'test'``.
        model (nn.Module, optional): The model built on the meta device (:func:`build_meta_model`).

    Returns:
        list[str]: The checkpoints compared with the model here (the Runner's hook does not repeat them).
    """
    from mmfusion.apis.checkpoint_fit import refuse_mismatch
    path = planned_checkpoint(cfg, mode)
    if not path or '://' in str(path) or osp.isdir(path):
        return []  # remote files and sharded folders are checked by the Runner's hook and strategy
    checkpoint = read_checkpoint(path)
    if model is None:
        return []
    partial = mode == 'train' and not cfg.get('resume') and bool(cfg.get('partial_load'))
    refuse_mismatch(model, checkpoint, path, cfg.filename or 'the config', partial=partial, model_cfg=cfg.model)
    return [path]


def _encoder_id(cfg: Any) -> str:
    if not isinstance(cfg, Mapping):
        return repr(cfg)
    arch = cfg.get('arch')
    arch = arch if isinstance(arch, str) else ('a custom arch' if arch else 'default arch')
    return f'{cfg.get("type")} {arch}'


def _same_encoder(a: Any, b: Any) -> bool:
    """Same type and arch (checkpoint paths and pyramid options may differ between a profile and a model)."""
    if not (isinstance(a, Mapping) and isinstance(b, Mapping)):
        return False
    def norm(v):
        return json.dumps(v.to_dict() if hasattr(v, 'to_dict') else v, sort_keys=True, default=str)

    return (str(a.get('type')).split('.')[-1] == str(b.get('type')).split('.')[-1]
            and norm(a.get('arch')) == norm(b.get('arch')))


def _master_strides(master_cfg: Mapping) -> Optional[tuple]:
    """The strides the master encoder offers (built on the meta device), or None when it cannot be built."""
    from mmengine.registry import MODELS
    try:
        with parameters_on_meta():
            master = MODELS.build(dict(master_cfg))
    except Exception:  # noqa: BLE001  (the model's own build reports it)
        return None
    strides = getattr(master, 'out_strides', None) or getattr(master, 'strides', None)
    return tuple(int(s) for s in strides) if strides else None


def check_backbone(cfg: Config) -> None:
    """The fused backbone's ``inject_stride`` before anything is built: a stride the master does not offer, or
    ``'auto'`` without a profile or with a profile of other encoders, said in one line naming the key.

    Raises:
        UserError: the first problem.
    """
    backbone = cfg.get('model', {}).get('backbone')
    if not isinstance(backbone, Mapping) or not str(backbone.get('type', '')).endswith('MasterAuxBackbone'):
        return
    inject, profile = backbone.get('inject_stride', 16), backbone.get('profile')
    master, aux = backbone.get('master'), backbone.get('auxiliary')
    if inject == 'auto':
        if not profile:
            raise UserError("model.backbone.inject_stride='auto' reads s* from a profile, and model.backbone.profile "
                            'is not set; pass --cfg-options model.backbone.profile=PATH (a profile.json of '
                            'tools/analysis/profile_vfm.py) or an int inject_stride')
        if not osp.isfile(profile):
            raise UserError(f'model.backbone.profile {profile}: no such file; pass the profile.json written by '
                            'tools/analysis/profile_vfm.py')
        with open(profile) as f:
            try:
                doc = json.load(f)
            except ValueError as e:
                raise UserError(f'model.backbone.profile {profile} is not a JSON profile ({e}); pass the '
                                'profile.json written by tools/analysis/profile_vfm.py') from e
        sel = doc.get('selection') or {}
        specs = (doc.get('meta') or {}).get('encoders') or {}
        p_master, p_aux = specs.get(sel.get('master')), specs.get(sel.get('auxiliary'))
        if p_master is not None and p_aux is not None and not isinstance(aux, (list, tuple)) and \
                not (_same_encoder(p_master, master) and _same_encoder(p_aux, aux)):
            raise UserError(
                f"model.backbone.inject_stride='auto' with profile {profile}: it profiles master "
                f"{sel.get('master')} ({_encoder_id(p_master)}) and auxiliary {sel.get('auxiliary')} "
                f'({_encoder_id(p_aux)}), but this model fuses master {_encoder_id(master)} and auxiliary '
                f'{_encoder_id(aux)}; profile this model\'s encoders with tools/analysis/profile_vfm.py, or set '
                'model.backbone.inject_stride to a stride')
        inject = sel.get('inject_stride', inject)
    flat = []
    for item in (inject if isinstance(inject, (list, tuple)) else [inject]):
        flat += list(item) if isinstance(item, (list, tuple)) else [item]
    if not flat or any(not isinstance(s, int) or isinstance(s, bool) for s in flat):
        return  # the backbone's own check words other malformed values
    strides = _master_strides(master) if isinstance(master, Mapping) else None
    wrong = [s for s in flat if strides is not None and s not in strides]
    if wrong:
        raise UserError(f'model.backbone.inject_stride={inject!r}: {", ".join(map(str, wrong))} is not a stride '
                        f'the master ({_encoder_id(master)}) offers; use one of {list(strides)}')


def check_hooks(cfg: Config, mode: str) -> None:
    """SCEFHook's probe folder (missing or without images: one line) and an interval no probe reaches (a note),
    before the Runner is built."""
    if mode != 'train':
        return
    max_iters = (cfg.get('train_cfg') or {}).get('max_iters')
    for i, hook in enumerate(cfg.get('custom_hooks') or []):
        if not isinstance(hook, Mapping) or not str(hook.get('type', '')).endswith('SCEFHook'):
            continue
        folder = hook.get('probe_images')
        if folder is not None:
            from mmfusion.utils.images import list_images
            if not osp.isdir(folder):
                raise UserError(f'custom_hooks.{i}.probe_images {folder}: no such folder; pass a folder of images '
                                'for SCEFHook, or drop probe_images to probe the validation images')
            try:
                list_images(folder, 1)
            except FileNotFoundError as e:
                raise UserError(f'custom_hooks.{i}.probe_images {folder} holds no image ({one_line(e)}); put the '
                                'probe images there, or drop probe_images to probe the validation images') from e
        interval = hook.get('interval', 1000)
        if isinstance(max_iters, int) and isinstance(interval, int) and interval > max_iters:
            only = ('only the iteration-0 probe will run' if hook.get('before_train', True) else
                    'no probe will run')
            print(f'note: custom_hooks.{i} (SCEFHook) interval={interval} is larger than train_cfg.max_iters='
                  f'{max_iters}: {only}', file=sys.stderr, flush=True)


def use_safe_checkpoint_hook(cfg: Config) -> None:
    """MMEngine's stock CheckpointHook deletes the checkpoint rotation drops before writing the new one; the
    tools use :class:`mmfusion.engine.hooks.SafeCheckpointHook` (write, update ``last_checkpoint``, then delete)."""
    hook = (cfg.get('default_hooks') or {}).get('checkpoint')
    if isinstance(hook, Mapping) and hook.get('type') in ('CheckpointHook', 'mmengine.CheckpointHook'):
        hook['type'] = 'mmfusion.SafeCheckpointHook'


# --- building ---------------------------------------------------------------------------------------------------


def build_runner(cfg: Config, mode: str = 'train'):
    """The config's runner type if it names one, else MMEngine's Runner, with its inputs checked, its work dir
    claimed (see :func:`mmfusion.utils.fileio.claim_dir`) and a
    :class:`~mmfusion.apis.checkpoint_fit.CheckpointFitHook` registered.

    Args:
        cfg (Config): A config from :func:`load_config`.
        mode (str): ``'train'`` or ``'test'``: which data :func:`check_data` checks. Every checkpoint loaded must
            fit the model exactly (:mod:`mmfusion.apis.checkpoint_fit`), except a fine-tuning ``load_from`` with
            ``partial_load=True``. Training takes the work dir's lock (one run per work dir). Default: ``'train'``.
    """
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    from mmfusion.apis.checkpoint_fit import CheckpointFitHook
    from mmfusion.utils.normalisation import check_runner_normalisation
    if mode not in ('train', 'test'):
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    config = cfg.filename or 'the config'
    if mode == 'train' and cfg.get('optim_wrapper', {}).get('type') == 'AmpOptimWrapper' \
            and not _accelerator_available():
        raise UserError(f'{config}: optim_wrapper.type is AmpOptimWrapper, which needs a GPU, and none is visible; '
                        'pass --cfg-options optim_wrapper.type=OptimWrapper to train in float32 on the CPU')
    check_data(cfg, mode)
    check_backbone(cfg)
    claim_dir(cfg.work_dir, 'work-dir', '--work-dir')  # removed again if the run fails before writing into it
    if mode == 'train':
        from mmfusion.engine.work_dir_lock import lock_work_dir
        lock_work_dir(cfg.work_dir)
    model = build_meta_model(cfg)
    if model is not None:
        from mmfusion.apis.pyramid_wiring import WiringError, check_model_wiring
        try:
            check_model_wiring(cfg.model, model)  # what reads the fused pyramid takes its channels and its fused level
        except WiringError as e:
            raise UserError(f'{config}: {e}') from None
    if model is not None and mode == 'train':
        check_pretrained(model)
    checked = check_checkpoint(cfg, mode, model)
    check_hooks(cfg, mode)
    use_safe_checkpoint_hook(cfg)
    claim_metric_outputs(cfg, mode)
    with config_errors(config):
        runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    check_runner_normalisation(runner)  # the data preprocessor gives every encoder the input it expects
    partial = mode == 'train' and not cfg.get('resume') and bool(cfg.get('partial_load'))
    runner.register_hook(CheckpointFitHook(config, partial=partial, model_cfg=cfg.model, checked=checked))
    return runner
