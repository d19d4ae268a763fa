"""How far the label-free metrics can be trusted: the study behind ``tools/analysis/metric_validity.py``.

Three questions, each answered on a dataset the user chooses (the paper's Table 7 and its stated limitation):

1. **SC against SC_GT.** For every (encoder, stride) of the profile, the label-free Structural Coherence SC and the
   supervised :func:`~mmfusion.metrics.structural_coherence_gt` (ground-truth segments in place of grid cells and
   k-means clusters), averaged over the images; Spearman's rho and Kendall's tau between the two rankings.
2. **Hyper-parameter sensitivity.** Each metric hyper-parameter (SFC cell size, PCA dimension, k set, q, q_img, tau,
   input resolution, or any other keyword of :func:`~mmfusion.metrics.structural_coherence` /
   :func:`~mmfusion.metrics.edge_fidelity`) is varied one at a time over a grid; for each variant the decision of
   :func:`~mmfusion.metrics.select_pair` (master, auxiliary, s*) and the rank correlation of its SC and EF with the
   default ones. Features are computed once per input resolution and re-scored per variant; a variant that only
   changes SC options reuses the default EF and vice versa.
3. **EF against downstream gain.** Given a table of downstream scores per injection stride (e.g. the stride
   ablation's AP) and the master-only baseline, the correlation of EF_aux(s) with the gain of injecting at s.

Images and encoders come from :mod:`mmfusion.apis.profiling`. Ground-truth segments come from the dataset of an
mmdet/mmseg config: the ``seg_map_path`` of an mmseg dataset (read by mmseg's ``LoadAnnotations``, so
``reduce_zero_label`` and ``label_map`` apply), or, for a Cityscapes-format dataset, the ``gtFine`` label maps next
to ``leftImg8bit``: ``*_gtFine_labelTrainIds.png`` (semantic segments) or ``*_gtFine_instanceIds.png`` (one segment
per object and per stuff class; void from the train ids).
"""
from __future__ import annotations

import csv
import inspect
import json
import math
import os
import os.path as osp
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mmfusion.apis import profiling as P
from mmfusion.metrics import (
    PRESETS,
    edge_fidelity,
    metrics_per_image,
    prepare_features,
    select_pair,
    structural_clustering_score,
    structural_coherence,
    structural_coherence_gt,
    structured_feature_contrast,
)
from mmfusion.metrics.profile import split_options
from mmfusion.utils.normalisation import IMAGENET

SIZE = 'size'  # grid name of the input resolution
GT_KINDS = ('semantic', 'instance')
DEFAULT = 'default'
GT_KEYS = ('SFC_GT', 'SCS_GT', 'SC_GT')
# One-at-a-time grid used when none is given: every hyper-parameter the paper fixes by hand, each on both sides of
# its default (SFC cell 8, PCA 32, k {6, 8, 10}, q = q_img = 0.40 (profiling preset), tau 0.5).
DEFAULT_GRID = ('cell=4,16', 'pca_dim=8,16', 'ks=4+6+8,8+10+12', 'q=0.2,0.6', 'q_img=0.2,0.6', 'tau=0.3,0.7')


class ValidityError(P.ProfileError):
    """Bad input to the validity study; the message says what to fix."""


# --- correlations ---------------------------------------------------------------------------------------------


def _finite_or_none(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> dict:
    """Spearman's rho and Kendall's tau-b between two paired sequences (``scipy.stats``).

    Ties get average ranks (Spearman) and the tau-b correction (Kendall). A correlation is undefined (None) when
    there are fewer than two pairs or either sequence is constant.

    Args:
        x (Sequence[float]): first scores.
        y (Sequence[float]): second scores, paired with ``x``.

    Returns:
        dict: ``spearman_rho`` and ``kendall_tau`` (float or None) and ``n`` (number of pairs).
    """
    from scipy import stats

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f'rank_correlation needs two 1-D sequences of the same length, got shapes {x.shape} and '
                         f'{y.shape}.')
    out = dict(spearman_rho=None, kendall_tau=None, n=int(x.size))
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    out['spearman_rho'] = _finite_or_none(stats.spearmanr(x, y)[0])
    out['kendall_tau'] = _finite_or_none(stats.kendalltau(x, y)[0])
    return out


def _pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    from scipy import stats

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return _finite_or_none(stats.pearsonr(x, y)[0])


# --- hyper-parameter grid -------------------------------------------------------------------------------------


def metric_defaults(preset: str = 'profiling') -> dict[str, Any]:
    """Every keyword hyper-parameter of SC and EF with the value used when it is not given.

    Read from the signatures of :func:`~mmfusion.metrics.structural_coherence` and
    :func:`~mmfusion.metrics.edge_fidelity`; EF options that default to the preset (q, q_img, ...) get the preset's
    value.

    Args:
        preset (str): EF preset. Defaults to ``'profiling'``.
    """
    if preset not in PRESETS:
        raise ValidityError(f'unknown EF preset {preset!r}; choose one of {", ".join(sorted(PRESETS))}')
    opts = {}
    for fn in (structural_coherence, edge_fidelity):
        for name, par in inspect.signature(fn).parameters.items():
            if par.kind is par.KEYWORD_ONLY:
                opts.setdefault(name, par.default)
    opts.update({k: v for k, v in PRESETS[preset].items() if k in opts})
    return opts


def _parse_value(text: str):
    """'none' -> None, 'true'/'false' -> bool, int, float, 'a+b+c' -> tuple, else the string."""
    low = text.strip().lower()
    if low == 'none':
        return None
    if low in ('true', 'false'):
        return low == 'true'
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if '+' in text:
        return tuple(_parse_value(t) for t in text.split('+'))
    return text.strip()


def _coerce(value, default):
    """Give a parsed grid value the type of the default it replaces (6 -> (6, ) for a tuple, 1 -> 1.0 for a
    float)."""
    if isinstance(default, tuple) and not isinstance(value, tuple):
        return (value, )
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def parse_size(text: str) -> tuple[int, int]:
    """``'HxW'`` -> (H, W), both positive ints."""
    h, sep, w = text.lower().partition('x')
    try:
        size = (int(h), int(w))
    except ValueError:
        size = None
    if not sep or size is None or min(size) < 1:
        raise ValidityError(f'--grid size value {text!r} is not HxW (e.g. size=256x512)')
    return size


def parse_grid(items: Sequence[str], preset: str = 'profiling') -> dict[str, list]:
    """Parse ``--grid`` items ``NAME=V1,V2,...`` into {name: [values]}.

    NAME is ``size`` (values ``HxW``) or a keyword of the SC/EF functions (:func:`metric_defaults`); tuple values
    are written with ``+`` (``ks=4+6+8``), ``none`` is None.

    Args:
        items (Sequence[str]): the ``--grid`` values.
        preset (str): EF preset (for the defaults). Defaults to ``'profiling'``.
    """
    defaults = metric_defaults(preset)
    grid: dict[str, list] = {}
    for item in items:
        name, sep, values = item.partition('=')
        name = name.strip()
        if not sep or not name or not values.strip():
            raise ValidityError(f'--grid {item!r} is not NAME=V1,V2 (e.g. cell=4,16 or ks=4+6+8 or size=256x512)')
        if name != SIZE and name not in defaults:
            raise ValidityError(f'unknown hyper-parameter {name!r} in --grid; choose from '
                                f'{", ".join([SIZE, *sorted(defaults)])}')
        if name in grid:
            raise ValidityError(f'--grid names {name} twice; give all its values once: {name}=V1,V2')
        vals = [v for v in values.split(',') if v.strip()]
        grid[name] = [parse_size(v) if name == SIZE else _coerce(_parse_value(v), defaults[name]) for v in vals]
    return grid


def default_size_values(size: Sequence[int]) -> list[tuple[int, int]]:
    """The resolutions tried when the grid does not name ``size``: half and 1.5 times ``size``, multiples of 32."""
    return [tuple(max(32, int(round(v * f / 32)) * 32) for v in size) for f in (0.5, 1.5)]


@dataclass
class Variant:
    """One point of the one-at-a-time grid: ``param`` set to ``value``, everything else at its default.

    Args:
        param (str): hyper-parameter name (``size`` or a metric keyword).
        value: its value.
        size (tuple[int, int]): input resolution (H, W) of this variant.
        opts (dict): metric keyword options of this variant (empty for a ``size`` variant).
        is_default (bool): the value equals the default, so the default profile is reused.
    """
    param: str
    value: Any
    size: tuple[int, int]
    opts: dict = field(default_factory=dict)
    is_default: bool = False

    @property
    def name(self) -> str:
        if self.param == SIZE:
            return f'{SIZE}={self.value[0]}x{self.value[1]}'
        return f'{self.param}={format_value(self.value)}'


def format_value(value) -> str:
    """A grid value the way ``--grid`` writes it."""
    if isinstance(value, tuple):
        return '+'.join(format_value(v) for v in value)
    if value is None:
        return 'none'
    return str(value).lower() if isinstance(value, bool) else str(value)


def make_variants(grid: Mapping[str, Sequence], size: Sequence[int], preset: str = 'profiling') -> list[Variant]:
    """The one-at-a-time variants of ``grid`` around the defaults and the input ``size``.

    Args:
        grid (Mapping): {name: [values]} as :func:`parse_grid` returns.
        size (Sequence[int]): default input resolution (H, W).
        preset (str): EF preset. Defaults to ``'profiling'``.
    """
    defaults = metric_defaults(preset)
    size = tuple(int(v) for v in size)
    variants = []
    for param, values in grid.items():
        for value in values:
            if param == SIZE:
                value = tuple(int(v) for v in value)
                variants.append(Variant(SIZE, value, value, {}, value == size))
            else:
                variants.append(Variant(param, value, size, {param: value}, value == defaults[param]))
    seen = set()
    for v in variants:
        if v.name in seen:
            raise ValidityError(f'--grid gives {v.name} twice; list each value once')
        seen.add(v.name)
    return variants


def check_variants(variants: Sequence[Variant], preset: str = 'profiling') -> None:
    """Check every variant's options before any encoder runs: the metrics' own range check, and a run of
    :func:`~mmfusion.metrics.edge_fidelity` on a small random map for EF options without a range (``fc_map``,
    ``gradient``, ...).

    Raises:
        ValidityError: naming the variant and the metric's complaint.
    """
    from mmfusion.metrics.common import PARAM_RANGES, check_params

    gen = torch.Generator().manual_seed(0)
    feat = torch.randn(1, 4, 12, 12, generator=gen)
    image = torch.randint(0, 256, (1, 3, 24, 24), generator=gen, dtype=torch.uint8)
    for v in variants:
        ranged = {k: val for k, val in v.opts.items() if k in PARAM_RANGES}
        sc_opts, ef_opts = split_options({k: val for k, val in v.opts.items() if k not in PARAM_RANGES})
        try:
            check_params(**ranged)
            if ef_opts:  # EF is cheap on a small map; SCS (k-means) is not, and all its options have a range
                edge_fidelity(feat, image, preset, **ef_opts)
            if sc_opts:
                structural_coherence(feat, **sc_opts)
        except (TypeError, ValueError) as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValidityError(f'--grid {v.name}: {msg}') from None


# --- ground truth ---------------------------------------------------------------------------------------------


def cityscapes_gt_path(img_path: str, suffix: str) -> str | None:
    """The ``gtFine`` file of a Cityscapes-layout image, or None when ``img_path`` is not in that layout.

    ``.../leftImg8bit/{split}/{city}/{name}_leftImg8bit.png`` -> ``.../gtFine/{split}/{city}/{name}_gtFine_{suffix}``.

    Args:
        img_path (str): the image path.
        suffix (str): e.g. ``'labelTrainIds.png'``.
    """
    parts = osp.normpath(img_path).split(os.sep)
    tail = '_leftImg8bit.png'
    dirs = [i for i, p in enumerate(parts[:-1]) if p == 'leftImg8bit']
    if not dirs or not parts[-1].endswith(tail):
        return None
    parts[dirs[-1]] = 'gtFine'
    parts[-1] = parts[-1][:-len(tail)] + '_gtFine_' + suffix
    return os.sep.join(parts)


def _read_png(path: str) -> np.ndarray:
    from PIL import Image
    try:
        with Image.open(path) as im:
            return np.asarray(im).astype(np.int64)
    except Exception as e:  # PIL raises several types for broken files
        raise ValidityError(f'cannot read ground truth {path} ({type(e).__name__}: {e}); fix or remove it') \
            from None


def load_gt_segments(info: Mapping, kind: str = 'semantic', size: Sequence[int] | None = None,
                     ignore_index: int = 255) -> torch.Tensor:
    """Ground-truth segment ids of one dataset sample, void as -1.

    - ``semantic``: an mmseg sample's ``seg_map_path`` through mmseg's ``LoadAnnotations`` (its
      ``reduce_zero_label`` and ``label_map`` apply); otherwise the Cityscapes ``*_gtFine_labelTrainIds.png``.
      ``ignore_index`` is void.
    - ``instance``: the Cityscapes ``*_gtFine_instanceIds.png`` (each object its own segment, each stuff class
      one), void where the train id is ``ignore_index``.

    Args:
        info (Mapping): a data info (``img_path``, and ``seg_map_path`` for mmseg datasets).
        kind (str): ``'semantic'`` or ``'instance'``. Defaults to ``'semantic'``.
        size (Sequence[int], optional): (H, W) to resize to (nearest). Defaults to None (as stored).
        ignore_index (int): void label of the semantic maps. Defaults to 255.

    Returns:
        Tensor: (H, W) int64.
    """
    if kind not in GT_KINDS:
        raise ValidityError(f'unknown ground-truth kind {kind!r}; use one of {", ".join(GT_KINDS)}')
    img_path = info.get('img_path', '')
    train_ids = cityscapes_gt_path(img_path, 'labelTrainIds.png')
    if kind == 'semantic' and info.get('seg_map_path') and 'reduce_zero_label' in info:
        from mmseg.datasets.transforms import LoadAnnotations
        if not osp.isfile(info['seg_map_path']):
            raise ValidityError(f'ground truth not found: {info["seg_map_path"]} (for {img_path}); check the '
                                "dataset's data_prefix.seg_map_path")
        seg = LoadAnnotations()(dict(info, seg_fields=[]))['gt_seg_map'].astype(np.int64)
        seg[seg == ignore_index] = -1
    elif train_ids is not None:
        if not osp.isfile(train_ids):
            raise ValidityError(f'ground truth not found: {train_ids} (for {img_path}); create the labelTrainIds '
                                'maps (tools/dataset_converters/cityscapes.py)')
        seg = _read_png(train_ids)
        void = seg == ignore_index
        if kind == 'instance':
            inst_path = cityscapes_gt_path(img_path, 'instanceIds.png')
            if not osp.isfile(inst_path):
                raise ValidityError(f'ground truth not found: {inst_path} (for {img_path}); use --gt semantic')
            seg = _read_png(inst_path)
        seg[void] = -1
    else:
        need = 'a Cityscapes gtFine layout' if kind == 'instance' else 'an mmseg dataset or a Cityscapes gtFine layout'
        raise ValidityError(f'no {kind} ground truth for {img_path}: SC_GT needs {need}; use such a '
                            '--dataset-config, or --images to skip SC_GT')
    out = torch.from_numpy(seg)
    if size is not None and tuple(out.shape) != tuple(size):
        out = F.interpolate(out[None, None].double(), size=tuple(int(v) for v in size), mode='nearest')[0, 0].long()
    return out


# --- the study ------------------------------------------------------------------------------------------------


class _Means:
    """Running means of per-image metrics, keyed by (variant, encoder, stride)."""

    def __init__(self):
        self.sums: dict[tuple, dict[str, float]] = {}
        self.counts: dict[tuple, dict[str, int]] = {}

    def add(self, key: tuple, vals: Mapping[str, torch.Tensor]) -> None:
        sums = self.sums.setdefault(key, {})
        counts = self.counts.setdefault(key, {})
        for name, v in vals.items():
            sums[name] = sums.get(name, 0.0) + float(v.double().sum())
            counts[name] = counts.get(name, 0) + int(v.numel())

    def profiles(self, variant: str) -> dict[str, dict[int, dict[str, float]]]:
        out: dict[str, dict[int, dict[str, float]]] = {}
        for (var, enc, stride), sums in self.sums.items():
            if var == variant:
                counts = self.counts[(var, enc, stride)]
                out.setdefault(enc, {})[stride] = {k: s / counts[k] for k, s in sums.items()}
        return {enc: dict(sorted(prof.items())) for enc, prof in out.items()}


# Options of structural_coherence that reach only SFC (the rest reach only SCS).
_SFC_OPTS = frozenset(inspect.signature(structured_feature_contrast).parameters) - {'feat'}


def _rescore(prep, images: torch.Tensor, base: Mapping, opts: Mapping, preset: str) -> dict:
    """The default metrics with those a variant's options touch recomputed: SFC options -> SFC, other SC options ->
    SCS, EF options -> EC/NC/FC/SP/EF; SC = sqrt(SFC * SCS) of the result. SCS (k-means) is the costly part, so an
    SFC-only variant skips it."""
    sc_opts, ef_opts = split_options(opts)
    out = dict(base)
    sfc_opts = {k: v for k, v in sc_opts.items() if k in _SFC_OPTS}
    scs_opts = {k: v for k, v in sc_opts.items() if k not in _SFC_OPTS}
    if sfc_opts:
        out['SFC'] = structured_feature_contrast(prep, **sfc_opts)
    if scs_opts:
        out['SCS'] = structural_clustering_score(prep, **scs_opts)
    if sc_opts:
        out['SC'] = (out['SFC'] * out['SCS']).clamp_min(0).sqrt()  # as structural_coherence forms it
    if ef_opts:
        out.update(edge_fidelity(prep, images, preset, **ef_opts))
    return out


class _Progress:
    """A tqdm bar on stderr, or MMEngine's ProgressBar when tqdm is missing; silent when disabled."""

    def __init__(self, total: int, desc: str, enabled: bool = True):
        self.bar = None
        if not enabled:
            return
        try:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, unit='batch', file=sys.stderr)
        except ImportError:
            from mmengine.utils import ProgressBar
            self.bar = ProgressBar(total, file=sys.stderr)

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update()

    def close(self) -> None:
        if self.bar is not None and hasattr(self.bar, 'close'):
            self.bar.close()
        elif self.bar is not None:
            sys.stderr.write('\n')


def build_encoders(configs: Mapping[str, dict], device: str | torch.device = 'cpu', seed: int = 0) -> dict:
    """Build every encoder (eval mode, on ``device``), each after ``torch.manual_seed(seed)`` so random weights are
    the same as the profiler's.

    Args:
        configs (Mapping): name -> backbone config (see :func:`~mmfusion.apis.profiling.encoder_config`).
        device (str | torch.device): target device. Defaults to ``'cpu'``.
        seed (int): seed before each build. Defaults to 0.

    Returns:
        dict: name -> model.
    """
    models = {}
    for name, cfg in configs.items():
        torch.manual_seed(seed)
        models[name] = P.build_encoder(name, cfg).to(device)
        # score_dataset feeds ImageNet-normalised images (P.extract_features' default), as every shipped config
        P.check_encoder_normalisation(name, models[name], IMAGENET, "ImageNet's, as every shipped config",
                                      fix='metric_validity.py feeds ImageNet-normalised images: validate an encoder '
                                          'that expects them')
    return models


@torch.no_grad()
def score_dataset(models: Mapping[str, torch.nn.Module],
                  paths: Sequence[str],
                  size: Sequence[int],
                  variants: Sequence[Variant] = (),
                  segments: Sequence[torch.Tensor] | None = None,
                  preset: str = 'profiling',
                  batch_size: int = 1,
                  progress: bool = True) -> dict:
    """Profile every encoder at the default hyper-parameters (with SC_GT when ``segments`` are given) and at every
    variant.

    Features are computed once per encoder and input resolution and scored by the default and by every variant of
    that resolution; a variant's options recompute only the metrics they touch (SC options -> SFC/SCS/SC, EF
    options -> EC/NC/FC/SP/EF).

    Args:
        models (Mapping): name -> backbone (:func:`build_encoders`); images go to the device of its parameters.
        paths (Sequence[str]): image files.
        size (Sequence[int]): default input resolution (H, W); images are resized to it.
        variants (Sequence[Variant]): grid variants (:func:`make_variants`). Defaults to ().
        segments (Sequence[Tensor], optional): per image (H, W) segment ids at ``size``, void -1. Defaults to None.
        preset (str): EF preset. Defaults to ``'profiling'``.
        batch_size (int): images per forward pass. Defaults to 1.
        progress (bool): show a progress bar on stderr. Defaults to True.

    Returns:
        dict: ``profiles`` (encoder -> stride -> metric means, SC_GT parts included), ``variants`` (variant name ->
        such profiles) and ``channels`` (encoder -> stride -> channels).
    """
    size = tuple(int(v) for v in size)
    if segments is not None and len(segments) != len(paths):
        raise ValueError(f'got {len(segments)} segment maps for {len(paths)} images.')
    todo = [v for v in variants if not v.is_default]
    sizes = [size] + sorted({v.size for v in todo if v.size != size})
    images = {sz: [P.load_image(p, sz) for p in paths] for sz in sizes}  # a bad file stops before any model runs
    n_batches = math.ceil(len(paths) / batch_size)
    bar = _Progress(len(models) * len(sizes) * n_batches, 'metric validity', progress)
    means, channels = _Means(), {}
    for name, model in models.items():
        strides = P.encoder_strides(model)
        device = next(iter(model.parameters()), torch.empty(0)).device
        for sz in sizes:
            here = [v for v in todo if v.size == sz]
            for start in range(0, len(paths), batch_size):
                batch = torch.stack(images[sz][start:start + batch_size]).to(device)
                feats = P.extract_features(model, batch, strides)
                if sz == size:
                    channels[name] = {s: int(f.shape[1]) for s, f in zip(strides, feats)}
                for stride, feat in zip(strides, feats):
                    prep = prepare_features(feat)  # shared by every score of this map
                    base = metrics_per_image(prep, batch, preset)
                    if sz != size:  # a resolution variant: default options on its own features
                        for v in here:
                            means.add((v.name, name, stride), base)
                        continue
                    means.add((DEFAULT, name, stride), base)
                    if segments is not None:
                        seg = torch.stack(list(segments[start:start + batch_size])).to(device)
                        means.add((DEFAULT, name, stride), structural_coherence_gt(prep, seg))
                    for v in here:
                        means.add((v.name, name, stride), _rescore(prep, batch, base, v.opts, preset))
                bar.update()
    bar.close()
    profiles = means.profiles(DEFAULT)
    var_profiles = {v.name: (profiles if v.is_default else means.profiles(v.name)) for v in variants}
    return dict(profiles=profiles, variants=var_profiles, channels=channels)


# --- analyses -------------------------------------------------------------------------------------------------


def _items(profiles: Mapping) -> list[tuple[str, int]]:
    return [(enc, int(s)) for enc, prof in profiles.items() for s in sorted(prof, key=int)]


def _column(profiles: Mapping, items: Sequence[tuple[str, int]], key: str) -> list[float]:
    return [float(profiles[enc][s][key]) for enc, s in items]


def sc_gt_agreement(profiles: Mapping[str, Mapping[int, Mapping[str, float]]]) -> dict:
    """SC against SC_GT over every (encoder, stride) of ``profiles`` (which hold SC and SC_GT per stride).

    Returns:
        dict: ``items`` (encoder, stride, SC, SC_GT, SFC, SFC_GT, SCS, SCS_GT), ``spearman_rho``/``kendall_tau``/``n``
        of SC vs SC_GT over all items, ``components`` (the same for SFC vs SFC_GT and SCS vs SCS_GT) and
        ``per_encoder`` (SC vs SC_GT over one encoder's strides).
    """
    items = _items(profiles)
    rows = [dict(encoder=enc, stride=s, **{k: float(profiles[enc][s][k])
                                           for k in ('SC', 'SC_GT', 'SFC', 'SFC_GT', 'SCS', 'SCS_GT')})
            for enc, s in items]
    out = dict(items=rows, **rank_correlation(_column(profiles, items, 'SC'), _column(profiles, items, 'SC_GT')))
    out['components'] = {k: rank_correlation(_column(profiles, items, k), _column(profiles, items, k + '_GT'))
                         for k in ('SFC', 'SCS')}
    out['per_encoder'] = {
        enc: rank_correlation([profiles[enc][s]['SC'] for s in sorted(prof)],
                              [profiles[enc][s]['SC_GT'] for s in sorted(prof)])
        for enc, prof in profiles.items()
    }
    return out


def decide(profiles: Mapping) -> tuple[dict | None, str | None]:
    """:func:`~mmfusion.metrics.select_pair` of ``profiles``, or None and the reason when no pair can be chosen
    (one encoder, or a profile the selection refuses, e.g. EF = 0 at every stride)."""
    if len(profiles) < 2:
        return None, 'one encoder: no pair to choose'
    try:
        return select_pair(profiles), None
    except ValueError as e:
        return None, str(e)


def sensitivity(default: Mapping, variant_profiles: Mapping[str, Mapping], variants: Sequence[Variant]) -> dict:
    """Stability of the decisions and rankings across the grid.

    Args:
        default (Mapping): the default profiles (encoder -> stride -> metrics).
        variant_profiles (Mapping): variant name -> profiles.
        variants (Sequence[Variant]): the variants, in report order.

    Returns:
        dict: ``default_selection`` (None, with ``default_no_selection_reason``, when no pair can be chosen),
        ``variants`` (one row per variant: ``name``, ``param``, ``value``, ``selection`` (or None and
        ``no_selection_reason``), ``same_master``/``same_auxiliary``/``same_inject_stride``/``same_decision`` (None
        without a default decision; False when the variant allows none), ``rank_correlation`` of SC and EF with the
        default over all (encoder, stride), and ``sc_gt_agreement`` (the variant's SC against the default SC_GT,
        when known)) and ``summary`` per hyper-parameter (variants, decisions kept, smallest rho of SC and EF).
    """
    items = _items(default)
    base_sel, base_reason = decide(default)
    has_gt = all('SC_GT' in default[e][s] for e, s in items)
    rows = []
    for v in variants:
        prof = variant_profiles[v.name]
        if _items(prof) != items:
            raise ValueError(f'variant {v.name} profiles {_items(prof)}, the default {items}.')
        sel, reason = decide(prof)
        # No default decision: nothing to compare; a variant without a decision changed it.
        same = {k: (None if base_sel is None else sel is not None and sel[k] == base_sel[k])
                for k in ('master', 'auxiliary', 'inject_stride')}
        row = dict(name=v.name, param=v.param, value=to_jsonable(v.value), reused_default=v.is_default, selection=sel,
                   no_selection_reason=reason, same_master=same['master'], same_auxiliary=same['auxiliary'],
                   same_inject_stride=same['inject_stride'],
                   same_decision=None if base_sel is None else all(same.values()),
                   rank_correlation={k: rank_correlation(_column(default, items, k), _column(prof, items, k))
                                     for k in ('SC', 'EF')})
        if has_gt:
            row['sc_gt_agreement'] = rank_correlation(_column(prof, items, 'SC'), _column(default, items, 'SC_GT'))
        rows.append(row)
    summary = {}
    for row in rows:
        s = summary.setdefault(row['param'], dict(variants=0, same_decision=0, min_rho_SC=None, min_rho_EF=None))
        s['variants'] += 1
        s['same_decision'] += int(bool(row['same_decision']))
        for k in ('SC', 'EF'):
            rho = row['rank_correlation'][k]['spearman_rho']
            if rho is not None:
                s[f'min_rho_{k}'] = rho if s[f'min_rho_{k}'] is None else min(s[f'min_rho_{k}'], rho)
    return dict(default_selection=base_sel, default_no_selection_reason=base_reason, variants=rows, summary=summary,
                stable=sum(int(bool(r['same_decision'])) for r in rows), total=len(rows))


def _parse_stride(value) -> int | None:
    text = str(value).strip().lower()
    if text in ('none', 'baseline', 'master', ''):
        return None
    text = text[2:] if text.startswith('os') else text
    try:
        stride = int(float(text))
    except ValueError:
        stride = 0
    if stride < 1 or stride != float(text):
        raise ValidityError(f'results stride {value!r} is not a stride (4, OS16, ...) or none (the master-only '
                            'baseline)')
    return stride


def load_results(path: str, score_key: str = 'score') -> dict[int | None, float]:
    """Downstream score per injection stride from a CSV or JSON table; the stride ``none`` is the baseline.

    CSV: a header with ``stride`` and ``score_key`` columns. JSON: a list of ``{"stride": ..., score_key: ...}``
    objects, or an object ``{stride: score}``. Strides are written ``16`` or ``OS16``; ``none`` (or ``baseline``)
    marks the master-only model.

    Args:
        path (str): the file (``.csv`` or ``.json``).
        score_key (str): name of the score column. Defaults to ``'score'``.

    Returns:
        dict: stride (int, None for the baseline) -> score.
    """
    if not osp.isfile(path):
        raise ValidityError(f'results file not found: {path}; pass an existing CSV/JSON file to --results')
    ext = osp.splitext(path)[1].lower()
    try:
        if ext == '.csv':
            with open(path, newline='') as f:
                reader = csv.DictReader(f)
                fields = [c.strip() for c in (reader.fieldnames or [])]
                rows = [{k.strip(): v for k, v in r.items() if k is not None} for r in reader]
            if 'stride' not in fields or score_key not in fields:
                raise ValidityError(f'{path} needs the columns stride and {score_key} (has {", ".join(fields)}); '
                                    'fix the header or pass --score-key')
            pairs = [(r['stride'], r[score_key]) for r in rows]
        elif ext == '.json':
            with open(path) as f:
                doc = json.load(f)
            if isinstance(doc, Mapping):
                pairs = list(doc.items())
            elif isinstance(doc, list) and all(isinstance(r, Mapping) and 'stride' in r and score_key in r
                                               for r in doc):
                pairs = [(r['stride'], r[score_key]) for r in doc]
            else:
                raise ValidityError(f'{path} is neither {{stride: score}} nor a list of {{"stride", '
                                    f'"{score_key}"}} objects')
        else:
            raise ValidityError(f'results file {path} must end in .csv or .json')
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as e:
        raise ValidityError(f'cannot read results file {path} ({type(e).__name__}: {e})') from None
    results: dict[int | None, float] = {}
    for stride, score in pairs:
        key = _parse_stride(stride)
        if key in results:
            raise ValidityError(f'{path} lists stride {stride} twice; keep one row per stride')
        try:
            results[key] = float(score)
        except (TypeError, ValueError):
            raise ValidityError(f'{path}: score {score!r} of stride {stride} is not a number') from None
    if not any(k is not None for k in results):
        raise ValidityError(f'{path} has no stride rows; add stride,score rows (e.g. 16,39.1)')
    return results


def gain_correlation(profiles: Mapping, auxiliary: str, results: Mapping[int | None, float],
                     baseline: float | None = None) -> dict:
    """EF_aux(s) against the downstream gain score(s) - baseline over the strides of ``results``.

    Args:
        profiles (Mapping): encoder -> stride -> metrics (at least EF).
        auxiliary (str): the encoder whose EF is compared (the fused model's auxiliary).
        results (Mapping): stride -> score (:func:`load_results`); key None is the baseline.
        baseline (float, optional): master-only score; overrides ``results[None]``. Defaults to None.

    Returns:
        dict: ``auxiliary``, ``baseline``, ``rows`` (stride, EF_aux, score, gain), ``spearman_rho``,
        ``kendall_tau``, ``pearson_r``, ``n``, ``s_star_by_ef`` (argmax EF_aux), ``s_star_by_score`` (argmax score)
        and ``agree``.
    """
    if auxiliary not in profiles:
        raise ValidityError(f'auxiliary {auxiliary!r} is not a profiled encoder ({", ".join(profiles)}); fix '
                            '--aux-encoder')
    if baseline is None:
        baseline = results.get(None)
    if baseline is None:
        raise ValidityError('no master-only baseline: add a row with stride none to the results file or pass '
                            '--baseline-score')
    strides = sorted(k for k in results if k is not None)
    profiled = sorted(int(s) for s in profiles[auxiliary])
    if not set(strides) <= set(profiled) or len(strides) < 2:
        raise ValidityError(f'the results strides {strides} do not match the profiled strides {profiled} of '
                            f'{auxiliary}; give scores for at least two of the profiled strides')
    ef = [float(profiles[auxiliary][s]['EF']) for s in strides]
    gain = [float(results[s]) - float(baseline) for s in strides]
    rows = [dict(stride=s, EF_aux=e, score=float(results[s]), gain=g) for s, e, g in zip(strides, ef, gain)]
    s_ef = strides[int(np.argmax(ef))]
    s_score = strides[int(np.argmax(gain))]
    return dict(auxiliary=auxiliary, baseline=float(baseline), rows=rows, **rank_correlation(ef, gain),
                pearson_r=_pearson(ef, gain), s_star_by_ef=s_ef, s_star_by_score=s_score, agree=s_ef == s_score)


# --- report ---------------------------------------------------------------------------------------------------


def to_jsonable(obj):
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, (np.integer, np.floating)):
        return to_jsonable(obj.item())
    return repr(obj)


def save_json(path: str, doc: Mapping) -> None:
    """Write ``doc`` as JSON (non-finite numbers as null, int keys as strings), creating the folder."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(to_jsonable(doc), f, indent=2)


def _fmt(v, spec: str = '.3f') -> str:
    return '-' if v is None else format(v, spec)


def format_report(doc: Mapping) -> str:
    """The printed tables: SC vs SC_GT, sensitivity, EF vs gain (whichever ``doc`` holds)."""
    lines = []
    gt = doc.get('sc_vs_sc_gt')
    if gt:
        name_w = max([7] + [len(r['encoder']) for r in gt['items']])
        head = f'{"Encoder":<{name_w}}  {"Stride":>6}' + ''.join(
            f'{k:>9}' for k in ('SC', 'SC_GT', 'SFC', 'SFC_GT', 'SCS', 'SCS_GT'))
        lines += ['SC vs SC_GT (means over the images)', head, '-' * len(head)]
        for r in gt['items']:
            lines.append(f'{r["encoder"]:<{name_w}}  {"OS" + str(r["stride"]):>6}' + ''.join(
                f'{r[k]:>9.3f}' for k in ('SC', 'SC_GT', 'SFC', 'SFC_GT', 'SCS', 'SCS_GT')))
        lines.append(f'ranking by SC vs by SC_GT over {gt["n"]} (encoder, stride): Spearman rho = '
                     f'{_fmt(gt["spearman_rho"])}, Kendall tau = {_fmt(gt["kendall_tau"])}')
        lines.append('')
    sens = doc.get('sensitivity')
    if sens:
        sel = sens['default_selection']
        if sel:
            lines.append(f'default decision: master = {sel["master"]}, auxiliary = {sel["auxiliary"]}, '
                         f's* = OS{sel["inject_stride"]}')
        name_w = max([7] + [len(r['name']) for r in sens['variants']])
        head = (f'{"Variant":<{name_w}}  {"master":>10} {"auxiliary":>10} {"s*":>5}  {"same":>4}  {"rho SC":>7} '
                f'{"rho EF":>7} {"tau SC":>7} {"tau EF":>7}')
        lines += ['Sensitivity (one hyper-parameter at a time; rank correlation with the default profile)', head,
                  '-' * len(head)]
        for r in sens['variants']:
            s = r['selection'] or {}
            rc = r['rank_correlation']
            same = '-' if r['same_decision'] is None else ('yes' if r['same_decision'] else 'NO')
            lines.append(f'{r["name"]:<{name_w}}  {str(s.get("master", "-")):>10} {str(s.get("auxiliary", "-")):>10} '
                         f'{("OS" + str(s["inject_stride"])) if s else "-":>5}  {same:>4}  '
                         f'{_fmt(rc["SC"]["spearman_rho"], ".2f"):>7} {_fmt(rc["EF"]["spearman_rho"], ".2f"):>7} '
                         f'{_fmt(rc["SC"]["kendall_tau"], ".2f"):>7} {_fmt(rc["EF"]["kendall_tau"], ".2f"):>7}')
        lines.append(f'decision (master, auxiliary, s*) unchanged in {sens["stable"]}/{sens["total"]} variants')
        lines.append('')
    res = doc.get('results')
    if res:
        head = f'{"Stride":>6} {"EF_aux":>9} {"score":>9} {"gain":>9}'
        lines += [f'EF of {res["auxiliary"]} vs downstream gain over the master-only baseline {res["baseline"]:.2f}',
                  head, '-' * len(head)]
        for r in res['rows']:
            lines.append(f'{"OS" + str(r["stride"]):>6} {r["EF_aux"]:>9.2f} {r["score"]:>9.2f} {r["gain"]:>+9.2f}')
        lines.append(f'Spearman rho = {_fmt(res["spearman_rho"])}, Kendall tau = {_fmt(res["kendall_tau"])}, '
                     f'Pearson r = {_fmt(res["pearson_r"])}; s* by EF = OS{res["s_star_by_ef"]}, best stride = '
                     f'OS{res["s_star_by_score"]}')
    return '\n'.join(lines).rstrip()


def plot_report(doc: Mapping, out_dir: str) -> list[str]:
    """PNG plots (Agg backend) of whatever ``doc`` holds; returns their paths.

    ``sc_vs_sc_gt.png`` (SC against SC_GT, one colour per encoder, points labelled by stride),
    ``sensitivity.png`` (rho of SC and EF with the default per variant; changed decisions marked) and
    ``ef_vs_gain.png`` (EF_aux and the downstream gain per stride).
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    written = []

    def save(fig, name):
        path = osp.join(out_dir, name)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    gt = doc.get('sc_vs_sc_gt')
    if gt:
        fig, ax = plt.subplots(figsize=(5, 4))
        for enc in dict.fromkeys(r['encoder'] for r in gt['items']):
            rows = [r for r in gt['items'] if r['encoder'] == enc]
            ax.plot([r['SC'] for r in rows], [r['SC_GT'] for r in rows], marker='o', label=enc)
            for r in rows:
                ax.annotate(f'OS{r["stride"]}', (r['SC'], r['SC_GT']), textcoords='offset points', xytext=(4, 4),
                            fontsize=8)
        ax.set_xlabel('SC (label-free)')
        ax.set_ylabel('SC_GT (ground-truth segments)')
        ax.set_title(f'rho = {_fmt(gt["spearman_rho"], ".2f")}, tau = {_fmt(gt["kendall_tau"], ".2f")}')
        ax.grid(alpha=0.3)
        ax.legend()
        save(fig, 'sc_vs_sc_gt.png')
    sens = doc.get('sensitivity')
    if sens and sens['variants']:
        rows = sens['variants']
        y = np.arange(len(rows))
        fig, ax = plt.subplots(figsize=(6, 1.2 + 0.32 * len(rows)))
        for off, key in ((-0.18, 'SC'), (0.18, 'EF')):
            vals = [r['rank_correlation'][key]['spearman_rho'] for r in rows]
            ax.barh(y + off, [np.nan if v is None else v for v in vals], height=0.36, label=f'rho {key}')
        for i, r in enumerate(rows):
            if r['same_decision'] is False:
                ax.plot(1.05, i, marker='x', color='red')
        ax.set_yticks(y, [r['name'] for r in rows])
        ax.invert_yaxis()
        ax.set_xlim(-1, 1.1)
        ax.axvline(0, color='black', lw=0.5)
        ax.set_xlabel('Spearman rho with the default profile (x: decision changed)')
        ax.legend(loc='lower left', fontsize=8)
        save(fig, 'sensitivity.png')
    res = doc.get('results')
    if res:
        strides = [r['stride'] for r in res['rows']]
        fig, ax = plt.subplots(figsize=(5, 3.6))
        ax.plot(strides, [r['EF_aux'] for r in res['rows']], marker='o', color='tab:blue')
        ax.set_ylabel(f'EF of {res["auxiliary"]}', color='tab:blue')
        ax2 = ax.twinx()
        ax2.plot(strides, [r['gain'] for r in res['rows']], marker='s', color='tab:orange')
        ax2.set_ylabel('gain over master-only', color='tab:orange')
        ax.set_xscale('log', base=2)
        ax.set_xticks(strides, [f'OS{s}' for s in strides])
        ax.minorticks_off()
        ax.set_xlabel('injection stride')
        ax.set_title(f'rho = {_fmt(res["spearman_rho"], ".2f")}, tau = {_fmt(res["kendall_tau"], ".2f")}')
        save(fig, 'ef_vs_gain.png')
    return written
