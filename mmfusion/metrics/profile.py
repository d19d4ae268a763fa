"""Per-stride SC/EF profiles of encoders, the master/auxiliary/s* selection (SPEC §4) and their JSON/CSV files."""
import csv
import inspect
import json
import math
import os
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from .common import check_options, prepare_features
from .edge_fidelity import edge_fidelity
from .structure import structural_coherence

METRIC_KEYS = ('SFC', 'SCS', 'SC', 'EC', 'NC', 'FC', 'SP', 'r_tau', 'EF')
DEFAULT_STRIDES = (4, 8, 16, 32)

_SC_OPTS = set(inspect.signature(structural_coherence).parameters) - {'feat'}
_EF_OPTS = set(inspect.signature(edge_fidelity).parameters) - {'feat', 'image', 'preset'}


def split_options(opts: Mapping) -> tuple[dict, dict]:
    """Route keyword options to :func:`structural_coherence` and :func:`edge_fidelity` by name.

    A name both accept (``seed``) goes to both; an unknown name raises ``TypeError`` naming the valid ones.

    Args:
        opts (Mapping): keyword options.

    Returns:
        tuple[dict, dict]: the SC options and the EF options.
    """
    unknown = set(opts) - _SC_OPTS - _EF_OPTS
    if unknown:
        raise TypeError(f'unknown metric option(s) {sorted(unknown)}; valid: {sorted(_SC_OPTS | _EF_OPTS)}.')
    return ({k: v for k, v in opts.items() if k in _SC_OPTS}, {k: v for k, v in opts.items() if k in _EF_OPTS})


def _as_stride_dict(feats, strides) -> dict[int, Tensor]:
    if isinstance(feats, Mapping):
        return {int(s): f for s, f in feats.items()}
    if isinstance(feats, Tensor) or not isinstance(feats, Sequence):
        raise ValueError('feats must be a sequence of (B, C, H, W) maps ordered like strides, or a mapping '
                         f'stride -> map; got {type(feats).__name__}.')
    strides = tuple(int(s) for s in strides)
    if len(feats) != len(strides):
        raise ValueError(f'got {len(feats)} feature maps but {len(strides)} strides {strides}; pass strides= '
                         'matching the encoder outputs.')
    return dict(zip(strides, feats))


def metrics_per_image(feat: Tensor, image: Tensor, preset: str = 'profiling', **opts) -> dict[str, Tensor]:
    """SC and EF parts of one feature map for each image: (B,) tensors keyed by :data:`METRIC_KEYS`.

    Args:
        feat (Tensor): (B, C, H, W) features.
        image (Tensor): uint8 RGB (B, 3, H0, W0) or (3, H0, W0).
        preset (str): EF preset. Defaults to ``'profiling'``.
        **opts: options of :func:`structural_coherence` and :func:`edge_fidelity`, routed by name.
    """
    sc_opts, ef_opts = split_options(opts)
    prep = prepare_features(feat)  # checked once; channel statistics and the channel-L2 map shared by SC and EF
    out = dict(structural_coherence(prep, **sc_opts))
    out.update(edge_fidelity(prep, image, preset, **ef_opts))
    return {k: out[k] for k in METRIC_KEYS}


class ProfileAccumulator:
    """Accumulates per-stride metrics over batches; :meth:`compute` gives the mean over all images seen.

    Images whose features are non-finite count with metrics 0 (and a warning), so a broken encoder is visible in
    the profile rather than silently skipped.

    Args:
        strides (Sequence[int]): strides of the maps passed as a sequence. Defaults to (4, 8, 16, 32).
        preset (str): EF preset. Defaults to ``'profiling'``.
        **opts: options of :func:`structural_coherence` and :func:`edge_fidelity`.
    """

    def __init__(self, strides: Sequence[int] = DEFAULT_STRIDES, preset: str = 'profiling', **opts):
        self.strides = tuple(int(s) for s in strides)
        self.preset = preset
        self.opts = opts
        split_options(opts)  # fail early on a typo
        check_options(opts)  # and on a value out of range
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        self._sums: dict[int, dict[str, float]] = {}
        self._counts: dict[int, int] = {}

    def update(self, feats, images: Tensor) -> None:
        """Add one batch.

        Args:
            feats (Sequence[Tensor] | Mapping[int, Tensor]): (B, C, H, W) maps ordered like ``strides``, or a mapping
                stride -> map.
            images (Tensor): uint8 RGB (B, 3, H0, W0) (or (3, H0, W0) when B = 1).
        """
        for stride, feat in _as_stride_dict(feats, self.strides).items():
            vals = metrics_per_image(feat, images, self.preset, **self.opts)
            sums = self._sums.setdefault(stride, dict.fromkeys(METRIC_KEYS, 0.0))
            for key in METRIC_KEYS:
                sums[key] += float(vals[key].double().sum())
            self._counts[stride] = self._counts.get(stride, 0) + int(vals['SC'].numel())

    def all_reduce(self) -> None:
        """Sum the accumulators of every process of the default ``torch.distributed`` group, in place.

        After it, :meth:`compute` gives the mean over the images of all processes (each process having profiled its
        share). A no-op when ``torch.distributed`` is not initialised. Every process must have called :meth:`update`
        for the same strides (it may have seen no image). The sums travel as float64 on the backend's device (CUDA
        for nccl).
        """
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()):
            return
        device = torch.device('cuda', torch.cuda.current_device()) if dist.get_backend() == 'nccl' \
            else torch.device('cpu')
        rows = [[self._sums.get(s, {}).get(k, 0.0) for k in METRIC_KEYS] + [float(self._counts.get(s, 0))]
                for s in self.strides]
        table = torch.tensor(rows, dtype=torch.float64, device=device)
        dist.all_reduce(table)
        self._sums = {s: dict(zip(METRIC_KEYS, row[:-1].tolist())) for s, row in zip(self.strides, table.cpu())}
        self._counts = {s: int(row[-1]) for s, row in zip(self.strides, table.cpu())}

    @property
    def count(self) -> int:
        """Images seen (per stride)."""
        return max(self._counts.values(), default=0)

    def compute(self) -> dict[int, dict[str, float]]:
        """Mean of every metric per stride, strides ascending."""
        if not self._counts:
            raise ValueError('ProfileAccumulator.compute() called before any update().')
        return {s: {k: v / self._counts[s] for k, v in self._sums[s].items()} for s in sorted(self._sums)}


def profile_features(feats,
                     images: Tensor,
                     strides: Sequence[int] = DEFAULT_STRIDES,
                     preset: str = 'profiling',
                     **opts) -> dict[int, dict[str, float]]:
    """Profile an encoder's multi-stride features on a batch: the batch mean of every metric per stride.

    Args:
        feats (Sequence[Tensor] | Mapping[int, Tensor]): (B, C, H, W) maps ordered like ``strides``, or a mapping
            stride -> map.
        images (Tensor): uint8 RGB (B, 3, H0, W0) or (3, H0, W0).
        strides (Sequence[int]): strides of a sequence of maps. Defaults to (4, 8, 16, 32).
        preset (str): EF preset. Defaults to ``'profiling'``.
        **opts: options of :func:`structural_coherence` and :func:`edge_fidelity`, routed by name.

    Returns:
        dict[int, dict[str, float]]: stride -> {SFC, SCS, SC, EC, NC, FC, SP, r_tau, EF}.
    """
    acc = ProfileAccumulator(strides, preset, **opts)
    acc.update(feats, images)
    return acc.compute()


def _mean(vals) -> float:
    vals = [float(v) for v in vals]
    return sum(vals) / len(vals) if vals else -math.inf


def select_pair(profiles: Mapping[str, Mapping[int, Mapping[str, float]]]) -> dict:
    """Pick the fusion pair from encoder profiles (SPEC §4).

    master = the encoder with the highest SC averaged over its strides (structure-strong); auxiliary = among the
    others, the one with the highest mean EF (edge-strong); inject_stride s* = argmax over strides of the
    auxiliary's EF. Ties go to the first encoder / smallest stride in the given order.

    Args:
        profiles (Mapping): encoder name -> stride -> metrics (at least ``SC`` and ``EF``).

    Returns:
        dict: ``master`` (str), ``auxiliary`` (str), ``inject_stride`` (int).
    """
    if len(profiles) < 2:
        raise ValueError(f'select_pair needs profiles of at least 2 encoders to choose a master and an auxiliary, '
                         f'got {len(profiles)} ({list(profiles)}); profile another encoder.')
    for name, prof in profiles.items():
        if not prof:
            raise ValueError(f'encoder {name!r} has an empty profile.')
        for stride, vals in prof.items():
            if 'SC' not in vals or 'EF' not in vals:
                raise ValueError(f'profile of {name!r} at stride {stride} lacks SC or EF.')
            bad = [k for k in ('SC', 'EF') if not math.isfinite(float(vals[k]))]
            if bad:
                raise ValueError(f'profile of {name!r} at stride {stride} has a non-finite {bad[0]} '
                                 f'({vals[bad[0]]}); check the encoder outputs (NaN/inf) before choosing a pair.')
        for key in ('SC', 'EF'):
            if all(float(vals[key]) == 0 for vals in prof.values()):
                raise ValueError(f'profile of {name!r} has {key} = 0 at every stride: its maps are too small for the '
                                 'metrics or its features are constant, so no pair can be chosen from it; profile '
                                 'larger images.')
    names = list(profiles)
    mean_sc = {n: _mean(v['SC'] for v in profiles[n].values()) for n in names}
    master = max(names, key=lambda n: mean_sc[n])
    others = [n for n in names if n != master]
    mean_ef = {n: _mean(v['EF'] for v in profiles[n].values()) for n in others}
    aux = max(others, key=lambda n: mean_ef[n])
    aux_prof = profiles[aux]
    return dict(master=master, auxiliary=aux, inject_stride=injection_stride({s: v['EF'] for s, v in aux_prof.items()}))


def explain_selection(profiles: Mapping[str, Mapping[int, Mapping[str, float]]], selection: Mapping) -> dict:
    """Why :func:`select_pair` chose what it chose: the rankings and the margins of each choice.

    Args:
        profiles (Mapping): encoder name -> stride -> metrics (at least ``SC`` and ``EF``).
        selection (Mapping): a :func:`select_pair` result.

    Returns:
        dict: ``sc_ranking`` / ``ef_ranking`` (``[name, mean]`` pairs, best first, over all encoders),
        ``master_margin`` (the master's mean SC minus the next encoder's), ``auxiliary_margin`` (the auxiliary's mean
        EF minus the next non-master encoder's; None when it is the only one), ``stride_margin`` (EF_aux(s*) minus
        its second-best stride's; None with one stride).
    """
    mean = {key: {n: _mean(v[key] for v in p.values()) for n, p in profiles.items()} for key in ('SC', 'EF')}
    rank = {key: sorted(vals.items(), key=lambda kv: -kv[1]) for key, vals in mean.items()}
    master, aux = selection['master'], selection['auxiliary']

    def margin(ranking, name, exclude=()):
        rest = [v for n, v in ranking if n not in (name, *exclude)]
        return dict(ranking)[name] - rest[0] if rest else None

    ef_aux = sorted((float(v['EF']) for v in profiles[aux].values()), reverse=True)
    return dict(sc_ranking=[list(kv) for kv in rank['SC']], ef_ranking=[list(kv) for kv in rank['EF']],
                master_margin=margin(rank['SC'], master), auxiliary_margin=margin(rank['EF'], aux, (master, )),
                stride_margin=ef_aux[0] - ef_aux[1] if len(ef_aux) > 1 else None)


def auxiliary_plan(profiles: Mapping[str, Mapping[int, Mapping[str, float]]], master: str) -> dict[int, str]:
    """Several auxiliaries (beyond the paper): per stride, the encoder whose EF most exceeds the master's there.

    A stride where no other encoder beats the master's EF keeps the master's map and is left out.

    Args:
        profiles (Mapping): encoder name -> stride -> metrics (at least ``EF``).
        master (str): the master encoder's name.

    Returns:
        dict[int, str]: stride -> auxiliary encoder, ordered by stride.
    """
    if master not in profiles:
        raise ValueError(f'master {master!r} is not profiled (encoders: {sorted(profiles)}).')
    plan = {}
    for stride in sorted(profiles[master], key=int):
        base = float(profiles[master][stride]['EF'])
        gains = {n: float(p[stride]['EF']) - base for n, p in profiles.items() if n != master and stride in p}
        best = max(gains, key=gains.get, default=None)
        if best is not None and gains[best] > 0:
            plan[int(stride)] = best
    return plan


def injection_stride(ef: Mapping[int, float]) -> int:
    """The injection stride s* = argmax_s EF_aux(s) (SPEC §4); a tie goes to the finer stride.

    Args:
        ef (Mapping): stride -> the auxiliary's EF.

    Returns:
        int: s*.
    """
    if not ef:
        raise ValueError('injection_stride needs the auxiliary EF at one stride at least')
    return int(max(sorted(ef, key=int), key=lambda s: float(ef[s])))


def save_profile(path: str, profiles: Mapping[str, Mapping[int, Mapping[str, float]]], selection: Mapping | None = None,
                 meta: Mapping | None = None) -> dict:
    """Write profiles as JSON.

    Schema (read by ``MetricGuidedNeck(inject_stride='auto')`` and the SC/EF hook)::

        {"encoders": {name: {"strides": [4, 8, 16, 32], "SC": [...], "EF": [...], "SFC": [...], "SCS": [...],
                             "EC": [...], "NC": [...], "FC": [...], "SP": [...], "r_tau": [...]}},
         "selection": {"master": name, "auxiliary": name, "inject_stride": int} or null,
         "meta": {...}}

    Args:
        path (str): output file; parent folders are created.
        profiles (Mapping): encoder -> stride -> metrics.
        selection (Mapping, optional): a :func:`select_pair` result; computed when None and there are at least two
            encoders, else null.
        meta (Mapping, optional): free-form JSON-serialisable information (images, size, device...).

    Returns:
        dict: the written document.
    """
    if selection is None and len(profiles) >= 2:
        selection = select_pair(profiles)
    encoders = {}
    for name, prof in profiles.items():
        strides = sorted(int(s) for s in prof)
        by_int = {int(s): v for s, v in prof.items()}
        entry = {'strides': strides}
        for key in ('SC', 'EF', 'SFC', 'SCS', 'EC', 'NC', 'FC', 'SP', 'r_tau'):
            if all(key in by_int[s] for s in strides):
                entry[key] = [float(by_int[s][key]) for s in strides]
        encoders[name] = entry
    doc = {'encoders': encoders, 'selection': dict(selection) if selection else None, 'meta': dict(meta or {})}
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, 'w') as f:
        json.dump(doc, f, indent=2)
    return doc


def load_profile(path: str) -> dict:
    """Read a profile JSON written by :func:`save_profile`.

    Args:
        path (str): the JSON file.

    Returns:
        dict: ``profiles`` (encoder -> stride (int) -> metrics), ``selection`` (dict or None), ``meta`` (dict).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'profile file not found: {path}; run tools/analysis/profile_vfm.py to create it.')
    with open(path) as f:
        doc = json.load(f)
    if not isinstance(doc, dict) or 'encoders' not in doc:
        raise ValueError(f'{path} is not a profile JSON (no "encoders" key).')
    profiles = {}
    for name, entry in doc['encoders'].items():
        strides = [int(s) for s in entry['strides']]
        keys = [k for k in entry if k != 'strides']
        profiles[name] = {s: {k: float(entry[k][i]) for k in keys} for i, s in enumerate(strides)}
    return dict(profiles=profiles, selection=doc.get('selection'), meta=doc.get('meta') or {})


def save_profile_csv(path: str, profiles: Mapping[str, Mapping[int, Mapping[str, float]]]) -> None:
    """Write one CSV row per encoder x stride: ``encoder, stride`` then :data:`METRIC_KEYS` (empty if missing).

    Args:
        path (str): output file; parent folders are created.
        profiles (Mapping): encoder -> stride -> metrics.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['encoder', 'stride', *METRIC_KEYS])
        for name, prof in profiles.items():
            for stride in sorted(prof, key=int):
                vals = prof[stride]
                writer.writerow([name, int(stride), *[f'{vals[k]:.6g}' if k in vals else '' for k in METRIC_KEYS]])
