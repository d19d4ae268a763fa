"""Who reads the fused pyramid, and with which channels: the one place that ``profile_vfm.py --emit-config`` (which
writes them) and the tools' build-time check (which refuses a mismatch) consult.

The fused backbone (:class:`~mmfusion.models.backbones.MasterAuxBackbone`) returns the master's and auxiliary's maps;
:class:`~mmfusion.models.necks.MetricGuidedNeck` assembles the fused pyramid (the master's channels at every stride).
What reads that pyramid depends on the model, and any mmdet/mmseg model works:

- ``neck=MetricGuidedNeck`` alone: the head reads it, ``panoptic_head.in_channels`` (mmdet Mask2Former) or
  ``decode_head.in_channels`` (mmseg: Mask2Former, UperNet, ...; with ``in_index``), and mmseg's
  ``auxiliary_head`` (its ``in_index`` level);
- ``neck=[MetricGuidedNeck, X]`` (MMEngine builds a list as a sequence): X reads it (mmdet's ``FPN`` for Mask R-CNN,
  ``ChannelMapper`` for DINO / Deformable DETR), through ``in_channels`` and, for FPN-like necks,
  ``start_level`` / ``end_level``.

Plain dicts in, plain values out: no OpenMMLab import.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

FUSION_NECK = 'MetricGuidedNeck'


def _kind(cfg: Any) -> str:
    kind = cfg.get('type', '') if isinstance(cfg, Mapping) else ''
    return kind.__name__ if isinstance(kind, type) else str(kind).split('.')[-1]


@dataclass
class Reader:
    """One module that reads the fused pyramid.

    Attributes:
        path (str): Its place in ``model``, e.g. ``'neck.1'`` or ``'decode_head'``.
        cfg (dict): Its config.
        levels (tuple[int]): Indices of the pyramid levels its ``in_channels`` describe, in their order.
        reads (tuple[int]): The levels it uses (FPN's ``start_level``..``end_level`` among ``levels``).
        single (bool): ``in_channels`` is one int (one level, e.g. mmseg's auxiliary FCN head), not a list.
        main (bool): The module the fused level must reach (auxiliary heads are not).
    """
    path: str
    cfg: Mapping
    levels: Tuple[int, ...]
    reads: Tuple[int, ...]
    single: bool = False
    main: bool = True

    def expected(self, channels: Sequence[int]) -> Union[int, List[int]]:
        """``in_channels`` it needs for a pyramid of ``channels``."""
        values = [int(channels[i]) for i in self.levels]
        return values[0] if self.single else values


class WiringError(ValueError):
    """The model's modules do not read the fused pyramid as built."""


def _levels_of(cfg: Mapping, num_levels: int) -> Tuple[Tuple[int, ...], Tuple[int, ...], bool]:
    """(levels its ``in_channels`` describe, levels it uses, one int?): mmseg's ``in_index`` selects both; mmdet's
    FPN takes every level's channels and uses ``start_level``..``end_level``."""
    if 'in_index' in cfg:
        index = cfg['in_index']
        if isinstance(index, int):
            return (index % num_levels, ), (index % num_levels, ), True
        levels = tuple(int(i) % num_levels for i in index)
        return levels, levels, False
    start = int(cfg.get('start_level', 0))
    end = cfg.get('end_level', -1)
    end = num_levels - 1 if end in (None, -1) else int(end)
    return tuple(range(num_levels)), tuple(range(start, end + 1)), False


def pyramid_readers(model: Mapping, num_levels: int) -> List[Reader]:
    """The modules of ``model`` that read the fused pyramid of ``num_levels`` levels.

    Raises:
        WiringError: no ``MetricGuidedNeck`` first in the neck (the fused pyramid would never be assembled), or a
            neck list with more than one reader of it.
    """
    neck = model.get('neck')
    necks = list(neck) if isinstance(neck, (list, tuple)) else [neck] if neck else []
    if not necks or _kind(necks[0]) != FUSION_NECK:
        found = [_kind(n) for n in necks] or 'none'
        raise WiringError(f'the fused backbone needs neck=dict(type=\'mmfusion.MetricGuidedNeck\') first (it '
                          f'assembles the fused pyramid), got neck {found}; put other necks after it: '
                          "neck=[dict(type='mmfusion.MetricGuidedNeck'), dict(type='FPN', ...)]")
    if len(necks) > 1:
        levels, reads, _ = _levels_of(necks[1], num_levels)
        return [Reader('neck.1', necks[1], levels, reads)]
    readers = []
    for key in ('panoptic_head', 'decode_head'):
        head = model.get(key)
        if isinstance(head, Mapping) and 'in_channels' in head:
            every = tuple(range(num_levels))
            levels, reads, single = _levels_of(head, num_levels) if key == 'decode_head' else (every, every, False)
            readers.append(Reader(key, head, levels, reads, single))
    aux_heads = model.get('auxiliary_head')
    for i, head in enumerate(aux_heads if isinstance(aux_heads, (list, tuple)) else [aux_heads]):
        if isinstance(head, Mapping) and 'in_channels' in head:
            levels, reads, single = _levels_of(head, num_levels)
            path = f'auxiliary_head.{i}' if isinstance(aux_heads, (list, tuple)) else 'auxiliary_head'
            readers.append(Reader(path, head, levels, reads, single, main=False))
    return readers


def check_wiring(model: Mapping, channels: Sequence[int], strides: Sequence[int],
                 inject_strides: Sequence[int]) -> None:
    """Refuse a model whose readers expect other channels than the fused pyramid has, or never read the fused level.

    Args:
        model (Mapping): The model config.
        channels (Sequence[int]): Channels of the fused pyramid per level (the master's).
        strides (Sequence[int]): Stride of each level.
        inject_strides (Sequence[int]): Strides where the auxiliary's maps are injected.

    Raises:
        WiringError: one line naming both channel lists (or the dropped level) and the key to change.
    """
    readers = pyramid_readers(model, len(channels))
    fused = [strides.index(s) for s in inject_strides if s in strides]
    for reader in readers:
        bad = [i for i in reader.reads if not 0 <= i < len(channels)]
        if bad:
            raise WiringError(f'model.{reader.path} ({_kind(reader.cfg)}) reads levels {list(reader.reads)}, but the '
                              f'fused pyramid has {len(channels)} (strides {list(strides)})')
        want, given = reader.expected(channels), reader.cfg.get('in_channels')
        given = list(given) if isinstance(given, (list, tuple)) else given
        if given != want:
            raise WiringError(f'model.{reader.path}.in_channels={given} does not match the fused pyramid: '
                              f'{_kind(reader.cfg)} takes levels {list(reader.levels)} (strides '
                              f'{[strides[i] for i in reader.levels]}) of channels {list(channels)}, so it needs '
                              f'in_channels={want}; set model.{reader.path}.in_channels={want} (profile_vfm.py '
                              '--emit-config writes it)')
    main = [r for r in readers if r.main]
    dropped = [strides[i] for i in fused if main and not any(i in r.reads for r in main)]
    if dropped:
        names = ', '.join(f'model.{r.path} ({_kind(r.cfg)}) reads strides {[strides[i] for i in r.reads]}'
                          for r in main)
        raise WiringError(f'the neck arrangement drops the fused level OS{dropped[0]} where the auxiliary is injected: '
                          f'{names}; read that level (e.g. start_level/in_index) or inject at a stride it reads')


def rewire(model: Mapping, channels: Sequence[int]) -> dict:
    """The model-config updates that make every reader take a pyramid of ``channels``: ``{'neck': [...]}`` (a neck
    list is replaced whole, as MMEngine replaces lists) and/or ``{'decode_head': {'in_channels': ...}, ...}``."""
    updates: dict = {}
    for reader in pyramid_readers(model, len(channels)):
        value = reader.expected(channels)
        if reader.path == 'neck.1':
            necks = [dict(n) for n in model['neck']]
            necks[1]['in_channels'] = value
            updates['neck'] = necks
        elif reader.path.startswith('auxiliary_head.'):
            heads = [dict(h) for h in model['auxiliary_head']]
            heads[int(reader.path.split('.')[1])]['in_channels'] = value
            updates['auxiliary_head'] = heads
        else:
            updates[reader.path] = {'in_channels': value}
    return updates


def master_out_strides(model_cfg: Mapping) -> Optional[Tuple[int, ...]]:
    """The strides the config's fused master states (``model.backbone.master.out_strides``), or None for its default."""
    master = (model_cfg.get('backbone') or {}).get('master') or {}
    strides = master.get('out_strides') if isinstance(master, Mapping) else None
    return None if strides is None else tuple(int(s) for s in strides)


def check_model_wiring(model_cfg: Mapping, model: Any) -> None:
    """:func:`check_wiring` for a built model (on the meta device is enough) whose backbone is a fused one; other
    backbones pass. The channels, strides and injected strides are the built fused backbone's."""
    backbone = getattr(model, 'backbone', None)
    if not all(hasattr(backbone, a) for a in ('strides', 'out_channels', 'inject_strides')):
        return
    check_wiring(model_cfg, backbone.out_channels, backbone.strides, backbone.inject_strides)
