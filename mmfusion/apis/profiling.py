"""Reusable parts of the SC/EF encoder profiler (``tools/analysis/profile_vfm.py``) and of the SC/EF hook.

Image loading, the input normalisation (the configured model's data preprocessor's), building and running an
encoder, the PCA-RGB picture of a feature map, the SC/EF table and the SC/EF-vs-stride plot. The table and PCA-RGB
helpers are plain numpy/torch; the encoder and dataset helpers import MMEngine when called.
"""
from __future__ import annotations

import os
import os.path as osp
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from mmfusion.metrics.cluster import pca_fit
from mmfusion.metrics.profile import DEFAULT_STRIDES
from mmfusion.utils import images as _images
from mmfusion.utils.images import IMAGE_EXTS, IMAGENET_MEAN, IMAGENET_STD, normalize
from mmfusion.utils.normalisation import (
    IDENTITY,
    IMAGENET,
    Normalisation,
    describe,
    normalisation_mismatches,
    renormalises,
)

CHECKPOINT_KEYS = ('checkpoint', 'pretrained', 'ckpt', 'ckpt_path', 'weights')


class ProfileError(Exception):
    """Bad profiler input.

    The message states the problem in the library's own terms; ``advice`` (optional) is how to fix it in the words
    of the command-line tools (their flags), which :func:`tool_error` appends.

    Args:
        message (str): The problem.
        advice (str): The fix, naming the tool's flag. Defaults to ''.
    """

    def __init__(self, message: str, advice: str = ''):
        super().__init__(message)
        self.advice = advice


def tool_error(exc: ProfileError) -> str:
    """The one line a command-line tool prints for ``exc``: the problem, then the flag to change."""
    return f'{exc}; {exc.advice}' if exc.advice else str(exc)


# --- images --------------------------------------------------------------------------------------------------


def list_images(folder: str, num: int | None = None) -> list[str]:
    """The image files of ``folder`` (not recursive), sorted by name, the first ``num`` of them."""
    if not osp.isdir(folder):
        raise ProfileError(f'image folder not found: {folder}', 'pass an existing folder to --images')
    try:
        return _images.list_images(folder, num, exts=IMAGE_EXTS)
    except FileNotFoundError:
        raise ProfileError(f'no {"/".join(IMAGE_EXTS)} images in {folder}',
                           'put some there or pass another --images') from None


def load_image(path: str, size: Sequence[int] | None = None) -> Tensor:
    """Read an image as uint8 RGB (3, H, W), resized (bilinear) to ``size`` = (H, W) when given."""
    try:
        return _images.read_rgb(path, size)
    except Exception as e:  # PIL raises several types for broken files
        raise ProfileError(f'cannot read image {path} ({type(e).__name__}: {e}); remove or replace it') from None


def dataset_infos(config: str, split: str = 'val', num: int | None = None) -> list[dict]:
    """Data infos of a dataset config's split (``{split}_dataloader.dataset``), in dataset order.

    The dataset is built without its pipeline (only the annotation index is read), in the config's default scope.
    Every info has an ``img_path``.

    Args:
        config (str): a config with ``{split}_dataloader.dataset``.
        split (str): ``train``, ``val`` or ``test``. Defaults to ``'val'``.
        num (int, optional): keep the first ``num``. Defaults to None (all).
    """
    from mmengine.config import Config
    from mmengine.registry import DATASETS, init_default_scope

    if not osp.isfile(config):
        raise ProfileError(f'dataset config not found: {config}', 'pass an existing file to --dataset-config')
    cfg = Config.fromfile(config)
    key = f'{split}_dataloader'
    if key not in cfg or 'dataset' not in cfg[key]:
        raise ProfileError(f'{config} has no {key}.dataset', 'choose another --split (train/val/test)')
    ds_cfg = cfg[key]['dataset'].copy()
    ds_cfg['pipeline'] = []
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    try:
        dataset = DATASETS.build(ds_cfg)
    except Exception as e:
        raise ProfileError(f'cannot build the {split} dataset of {config} ({type(e).__name__}: {e}); '
                           'check its data_root') from None
    count = len(dataset) if num is None else min(num, len(dataset))
    if count == 0:
        raise ProfileError(f'the {split} dataset of {config} is empty; check its data_root and ann_file')
    infos = []
    for i in range(count):
        info = dict(dataset.get_data_info(i))
        path = info.get('img_path') or info.get('filename')
        if path is None:
            raise ProfileError(f'the {split} dataset of {config} gives no img_path', 'use --images instead')
        info['img_path'] = path
        infos.append(info)
    return infos


def dataset_image_paths(config: str, split: str = 'val', num: int | None = None) -> list[str]:
    """Image paths of a dataset config's split (``{split}_dataloader.dataset``), in dataset order.

    The dataset is built without its pipeline (only the annotation index is read), in the config's default scope.

    Args:
        config (str): a config with ``{split}_dataloader.dataset``.
        split (str): ``train``, ``val`` or ``test``. Defaults to ``'val'``.
        num (int, optional): keep the first ``num``. Defaults to None (all).
    """
    return [info['img_path'] for info in dataset_infos(config, split, num)]


# --- encoders ------------------------------------------------------------------------------------------------


def _set_nested(cfg: dict, dotted: str, value) -> None:
    keys = dotted.split('.')
    node = cfg
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[keys[-1]] = value


def encoder_config(spec: str, overrides: Mapping | None = None) -> dict:
    """The backbone config of an ``--encoder`` value.

    Args:
        spec (str): one of
            - ``path/to/config.py`` (its ``backbone`` dict, else ``model.backbone``),
            - ``path/to/config.py:dotted.key`` (the dict at that key, e.g. ``model.backbone.master``),
            - a registered backbone type, e.g. ``mmfusion.DINOv3ViT``,
            - ``hf:FOLDER``, a Hugging Face ``save_pretrained`` folder run by ``mmfusion.HFBackbone`` (a plain ViT
              gives its own features at every stride: ``pyramid=dict(type='paper', project=False)``).
        overrides (Mapping, optional): dotted keys relative to the backbone dict, e.g. ``{'checkpoint': 'x.pth'}``.

    Returns:
        dict: a plain dict with a ``type``.
    """
    path, key = spec, ''
    if '.py:' in spec:
        path, key = spec.split('.py:', 1)
        path += '.py'
    if path.endswith('.py'):
        from mmengine.config import Config
        if not osp.isfile(path):
            raise ProfileError(f'encoder config not found: {path}', 'fix the --encoder value')
        cfg = Config.fromfile(path).to_dict()
        if key:
            node = cfg
            for k in key.split('.'):
                if not isinstance(node, dict) or k not in node:
                    raise ProfileError(f'{path} has no {key}', 'fix the part after ":" in --encoder')
                node = node[k]
        else:
            node = cfg.get('backbone') or (cfg.get('model') or {}).get('backbone')
        if not isinstance(node, dict) or 'type' not in node:
            raise ProfileError(f'{path} holds no backbone dict with a type (looked at '
                               f'{key or "backbone and model.backbone"}); name one with {path}:dotted.key')
        out = dict(node)
    elif spec.startswith('hf:'):
        out = dict(type='mmfusion.HFBackbone', checkpoint=spec[3:])
    else:
        out = dict(type=spec)
    for k, v in (overrides or {}).items():
        _set_nested(out, k, v)
    if spec.startswith('hf:') and 'pyramid' not in out:
        # Profile what the encoder itself computes: a plain ViT without the pyramid's new, random projections.
        from mmfusion.registry import MODELS
        try:
            plain = MODELS.build(dict(out)).plain  # reads the folder's config.json only
        except (OSError, ValueError) as e:
            raise ProfileError(f'encoder {spec}: {e}', 'fix the --encoder value') from None
        if plain:
            out['pyramid'] = dict(type='paper', project=False)
    return out


def check_checkpoints(name: str, cfg: Mapping, prefix: str = '') -> None:
    """Raise :class:`ProfileError` for a local checkpoint path in ``cfg`` (any depth) that does not exist.

    Args:
        name (str): encoder name, for the message.
        cfg (Mapping): backbone config; keys named like :data:`CHECKPOINT_KEYS` are checked (URLs are not).
        prefix (str): dotted path of ``cfg`` in the encoder config. Defaults to ''.
    """
    for key, val in cfg.items():
        where = f'{prefix}{key}'
        if isinstance(val, Mapping):
            check_checkpoints(name, val, where + '.')
        elif key in CHECKPOINT_KEYS and isinstance(val, str) and '://' not in val and not osp.exists(val):
            raise ProfileError(f'checkpoint of encoder {name} not found: {val}',
                               f'download it or set --cfg-options {name}.{where}=PATH')


def build_encoder(name: str, cfg: dict):
    """Build a backbone from the model registry (mmfusion's, reaching mmdet/mmseg/mmpretrain types by scope).

    Args:
        name (str): encoder name, for messages.
        cfg (dict): backbone config with a ``type``.

    Returns:
        nn.Module: the backbone in eval mode.
    """
    from mmengine.registry import DefaultScope

    from mmfusion.registry import MODELS

    check_checkpoints(name, cfg)
    try:
        # MMEngine builds in the registry of the current default scope; a caller's (e.g. 'mmdet') must not hide
        # mmfusion's unprefixed types.
        with DefaultScope.overwrite_default_scope('mmfusion'):
            model = MODELS.build(cfg)
    except KeyError as e:
        if 'registry' in str(e) or 'not in the' in str(e):
            raise ProfileError(f'unknown encoder type {cfg.get("type")!r} for {name}',
                               'give a config file, a registered backbone type (e.g. mmfusion.DINOv3ViT), or '
                               'register yours with --custom-imports') from None
        raise ProfileError(f'cannot build encoder {name}: {type(e).__name__}: {e}') from None
    except FileNotFoundError as e:
        raise ProfileError(f'encoder {name}: {e}') from None
    except Exception as e:
        raise ProfileError(f'cannot build encoder {name} ({type(e).__name__}: {e})',
                           'fix its config or --cfg-options') from None
    # Pretrained weights load in init_weights() (mmfusion's VFM backbones from `checkpoint=`, OpenMMLab ones from
    # init_cfg); building alone reads no file.
    if hasattr(model, 'init_weights'):
        try:
            model.init_weights()
        except FileNotFoundError as e:
            raise ProfileError(f'encoder {name}: {e}') from None
        except Exception as e:
            raise ProfileError(f'cannot initialise encoder {name} ({type(e).__name__}: {e}); fix its checkpoint or '
                               'init_cfg') from None
    return model.eval()


def encoder_strides(model) -> tuple[int, ...]:
    """The backbone's ``out_strides``, (4, 8, 16, 32) when it does not say.

    Args:
        model (nn.Module): the backbone.
    """
    return tuple(int(s) for s in getattr(model, 'out_strides', DEFAULT_STRIDES))


def config_normalisation(config: str | None) -> tuple[Normalisation, str]:
    """The mean/std a model config's data preprocessor normalises with, and where they come from, for the profile:
    the encoders are profiled on the input the configured model will train them on.

    Args:
        config (str, optional): A model config (the profiler's ``--base-config``). None: ImageNet's mean/std, which
            every shipped config uses.

    Returns:
        tuple: ``((mean, std), source)``, 0-255 scale; a preprocessor without ``mean``/``std`` does not normalise
        (``(0, 0, 0)``, ``(1, 1, 1)``).
    """
    if config is None:
        return IMAGENET, "ImageNet's (no --base-config; every shipped config normalises so)"
    from mmengine.config import Config
    if not osp.isfile(config):
        raise ProfileError(f'base config not found: {config}', 'pass an existing file to --base-config')
    try:
        model = Config.fromfile(config).get('model') or {}
    except Exception as e:
        raise ProfileError(f'cannot read --base-config {config} ({type(e).__name__}: {e})') from None
    pre = model.get('data_preprocessor')
    if not pre:  # MMEngine's models then take a BaseDataPreprocessor, which hands the pixels on as they are
        return IDENTITY, f'{config} sets no model.data_preprocessor, so its model does not normalise'
    source = f'model.data_preprocessor of {config}'
    if pre.get('mean') is None or pre.get('std') is None:
        return IDENTITY, source + ' (no mean/std: it does not normalise)'
    mean, std = [float(v) for v in pre['mean']], [float(v) for v in pre['std']]
    if len(mean) != 3 or len(std) != 3:
        raise ProfileError(f'model.data_preprocessor of {config} has mean {mean} std {std}; 3 values each (RGB) '
                           'are needed to profile colour images')
    return (tuple(mean), tuple(std)), source


def check_encoder_normalisation(name: str, model, norm: Normalisation, source: str,
                                fix: str = 'profile it with a --base-config whose model.data_preprocessor normalises so'
                                ) -> None:
    """Refuse an encoder that expects another input normalisation (``input_mean``/``input_std``) than ``norm``.

    Args:
        name (str): encoder name, for the message.
        model (nn.Module): the built encoder.
        norm (tuple): ``(mean, std)`` the profile normalises with.
        source (str): where ``norm`` comes from, for the message.
        fix (str): the advice (an encoder taking ``input_mean``/``input_std`` also gets the ``--cfg-options`` that
            set them). Defaults to the profiler's.
    """
    wrong = normalisation_mismatches(model, norm, prefix='')
    if not wrong:
        return
    where, module, expected = wrong[0]
    what = f'encoder {name}' + (f' ({where})' if where else '')
    if renormalises(module):
        fix += (f', or set --cfg-options {name}.input_mean=[{",".join(f"{v:g}" for v in norm[0])}] '
                f'{name}.input_std=[{",".join(f"{v:g}" for v in norm[1])}] (it renormalises to its own)')
    raise ProfileError(f'the profile normalises images with {describe(norm)}, {source}, but {what} '
                       f'({type(module).__name__}) expects {describe(expected)}, the input it was pretrained on', fix)


@torch.no_grad()
def extract_features(model, images: Tensor, strides: Sequence[int], mean: Sequence[float] = IMAGENET_MEAN,
                     std: Sequence[float] = IMAGENET_STD) -> list[Tensor]:
    """Run ``model`` on the images normalised with ``mean``/``std``.

    Args:
        model (nn.Module): backbone returning a tuple (or a stride-keyed dict) of (B, C, H, W) maps.
        images (Tensor): uint8 (B, 3, H, W) on the model's device.
        strides (Sequence[int]): the strides the maps must match.
        mean (Sequence[float]): per-channel mean, 0-255 scale (see :func:`config_normalisation`). Defaults to
            ImageNet's.
        std (Sequence[float]): per-channel std, 0-255 scale. Defaults to ImageNet's.

    Returns:
        list[Tensor]: the maps, ordered like ``strides``.
    """
    out = model(normalize(images, mean, std))
    if isinstance(out, Tensor):
        out = (out, )
    if isinstance(out, Mapping):
        out = [out[s] for s in strides]
    out = [o for o in out if isinstance(o, Tensor) and o.dim() == 4]
    if len(out) != len(strides):
        raise ProfileError(f'the encoder returned {len(out)} feature maps for out_strides {tuple(strides)}; set '
                           'out_strides to match its outputs')
    return out


def check_map_sizes(name: str, feats: Sequence[Tensor], strides: Sequence[int], size: Sequence[int]) -> None:
    """Raise :class:`ProfileError` when ``--size`` makes a map of encoder ``name`` too small for SC or EF.

    A map too small for a metric scores 0 there, and a profile of zeros would still yield a recommendation; the fix
    is a larger ``--size`` (every image is resized to it), so the message names the smallest one that works.

    Args:
        name (str): encoder name, for the message.
        feats (Sequence[Tensor]): the encoder's (B, C, h, w) maps, ordered like ``strides``.
        strides (Sequence[int]): their strides.
        size (Sequence[int]): the ``--size`` (H, W) the images were resized to.
    """
    from mmfusion.metrics.common import MIN_EF_SIDE, map_size_problems

    height, width = int(size[0]), int(size[1])
    for stride, feat in zip(strides, feats):
        h, w = feat.shape[-2:]
        problems = map_size_problems(h, w)
        if not problems:
            continue
        # Smallest size that works at this stride: EF's 5x5 on both sides, 2 SFC cells (16 px) on the longer one.
        need_h, need_w = max(height, MIN_EF_SIDE * stride), max(width, MIN_EF_SIDE * stride)
        if height > width:
            need_h = max(need_h, 16 * stride)
        else:
            need_w = max(need_w, 16 * stride)
        raise ProfileError(f'images resized to {height}x{width} are too small for stride {stride}: encoder {name} '
                           f'gives {h}x{w} maps there and {"; ".join(problems)}',
                           f'use --size {need_h} {need_w} or larger (or profile fewer strides)')


# --- pictures and tables -------------------------------------------------------------------------------------


def pca_rgb(feat: Tensor, size: Sequence[int] | None = None, seed: int = 0) -> np.ndarray:
    """Picture of a (C, H, W) feature map: its first three principal components as R, G, B.

    Each component is stretched between its 1st and 99th percentile; missing components (C < 3, constant maps)
    stay black.

    Args:
        feat (Tensor): (C, H, W) features, any device and floating dtype.
        size (Sequence[int], optional): (H, W) of the picture (nearest upsampling). Defaults to the map size.
        seed (int): seed of the PCA solver. Defaults to 0.

    Returns:
        np.ndarray: (H, W, 3) uint8.
    """
    feat = torch.nan_to_num(feat.detach().float().cpu(), nan=0.0, posinf=0.0, neginf=0.0)
    c, h, w = feat.shape
    x = feat.reshape(c, -1).t()[None]  # (1, HW, C)
    rgb = torch.zeros(h * w, 3)
    if h * w > 1 and float(x.var(dim=1).sum()) > 0:
        mean, axes = pca_fit(x, min(3, c, h * w), seed=seed)
        comps = ((x - mean) @ axes)[0]  # (HW, k)
        lo = torch.quantile(comps, 0.01, dim=0)
        hi = torch.quantile(comps, 0.99, dim=0)
        scale = torch.where(hi - lo > 1e-12, hi - lo, torch.ones_like(hi))
        rgb[:, :comps.shape[1]] = ((comps - lo) / scale).clamp(0, 1) * (hi - lo > 1e-12)
    img = (rgb.view(h, w, 3) * 255).round().to(torch.uint8)
    if size is not None and tuple(size) != (h, w):
        img = torch.nn.functional.interpolate(img.permute(2, 0, 1)[None].float(), size=tuple(size),
                                              mode='nearest')[0].permute(1, 2, 0).to(torch.uint8)
    return img.numpy()


def save_png(path: str, array: np.ndarray) -> None:
    """Write an image as PNG, creating the folder.

    Args:
        path (str): output file.
        array (np.ndarray): (H, W, 3) uint8.
    """
    from PIL import Image
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    Image.fromarray(array).save(path)


def format_profile_table(profiles: Mapping[str, Mapping[int, Mapping[str, float]]],
                         metrics: Sequence[str] = ('SC', 'EF')) -> str:
    """The SPEC §4 table: one row per encoder and metric, one column per stride, 2 decimals.

    Args:
        profiles (Mapping): encoder -> stride -> metrics.
        metrics (Sequence[str]): rows per encoder. Defaults to ('SC', 'EF').

    Returns:
        str: the table, lines joined by newlines.
    """
    strides = sorted({int(s) for prof in profiles.values() for s in prof})
    name_w = max([len('Encoder')] + [len(n) for n in profiles])
    head = f'{"Encoder":<{name_w}}  {"Metric":<6}' + ''.join(f'{"OS" + str(s):>9}' for s in strides)
    lines = [head, '-' * len(head)]
    for name, prof in profiles.items():
        by_int = {int(s): v for s, v in prof.items()}
        for metric in metrics:
            cells = ''.join(f'{by_int[s][metric]:>9.2f}' if s in by_int and metric in by_int[s] else f'{"-":>9}'
                            for s in strides)
            lines.append(f'{name:<{name_w}}  {metric:<6}{cells}')
    return '\n'.join(lines)


def plot_profiles(profiles: Mapping[str, Mapping[int, Mapping[str, float]]], path: str,
                  metrics: Sequence[str] = ('SC', 'EF')) -> None:
    """SC and EF against stride, one line per encoder, one subplot per metric, saved as PNG (Agg backend).

    Args:
        profiles (Mapping): encoder -> stride -> metrics.
        path (str): output PNG; parent folders are created.
        metrics (Sequence[str]): one subplot each. Defaults to ('SC', 'EF').
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6))
    axes = np.atleast_1d(axes)
    strides = sorted({int(s) for prof in profiles.values() for s in prof})
    for ax, metric in zip(axes, metrics):
        for name, prof in profiles.items():
            xs = sorted(int(s) for s in prof)
            by_int = {int(s): v for s, v in prof.items()}
            ax.plot(xs, [by_int[s][metric] for s in xs], marker='o', label=name)
        ax.set_xscale('log', base=2)
        ax.set_xticks(strides, [f'OS{s}' for s in strides])
        ax.minorticks_off()
        ax.set_xlabel('output stride')
        ax.set_ylabel(metric + (' (0-100)' if metric == 'EF' else ''))
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
