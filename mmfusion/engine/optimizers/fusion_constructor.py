"""The fused model's optimizer constructor: MMEngine's default rules, plus weight decay 0 on every norm and embedding
whatever custom key matched it, frozen parameters left out, and optional layer-wise lr decay."""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor

from mmfusion.registry import OPTIM_WRAPPER_CONSTRUCTORS


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class FusionOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """MMEngine's default constructor, with the no-decay rules applied everywhere, frozen parameters left out, and
    optional layer-wise lr decay.

    Everything ``DefaultOptimWrapperConstructor`` does with ``paramwise_cfg`` is kept (``custom_keys``,
    ``norm_decay_mult``, ``bias_decay_mult``, ...; e.g. Mask2Former's ``backbone`` lr_mult 0.1 and decay_mult 0 for
    ``query_embed``/``query_feat``/``level_embed``). MMEngine gives a parameter matched by a custom key only that
    key's multipliers, so under ``backbone`` its ``norm_decay_mult`` never reaches the encoders' LayerNorms and a
    ``cls_token`` key without ``lr_mult`` would silently get the full lr. Here the decay rules compose instead:

    - ``norm_decay_mult`` applies to the parameters of every norm layer (any module whose class name contains
      "Norm": BatchNorm, GroupNorm, LayerNorm, transformers' and sam2's norms), after the custom keys;
    - every ``nn.Embedding`` gets weight decay 0 (detectron2 Mask2Former's rule: the query, level and pixel-decoder
      level embeddings, found by type, not by name);
    - ``no_decay_keys`` (Sequence[str], extra ``paramwise_cfg`` key): parameters whose name contains one of these
      (tokens, position/level/query embeddings) get weight decay 0, whatever else matched them; their lr is left to
      the other rules (so a backbone token keeps the backbone's lr_mult).

    - Layer-wise lr decay (BEiT / ViTDet): every submodule that has ``get_layer_id(name)`` and
      ``get_num_layers()`` (the outermost one, e.g. :class:`~mmfusion.models.backbones.DINOv3ViT` or
      :class:`~mmfusion.models.backbones.SAM2Hiera`) has its parameters' lr multiplied by
      ``layer_decay_rate ** (num_layers + 1 - layer_id)``: the embeddings (id 0) get the smallest lr, block ``i`` id
      ``i + 1``, the final norm and pyramid (id ``num_layers + 1``) the full lr. The factor multiplies whatever lr the
      default rules gave (so it compounds with the backbone's lr_mult).
    - Parameters with ``requires_grad=False`` (a frozen auxiliary) are left out of the optimizer entirely. MMEngine
      only does this when ``paramwise_cfg`` is non-empty (otherwise it passes ``model.parameters()``, frozen ones
      included) and warns once per parameter; here whole frozen submodules are skipped quietly and counted once.

    Extra ``paramwise_cfg`` keys:

    - ``layer_decay_rate`` (float): Defaults to 1.0 (no decay).
    - ``layer_decay_prefixes`` (Sequence[str], optional): Only decay the modules whose full name starts with one of
      these (e.g. ``['backbone.master']`` when a fine-tuned auxiliary should keep its lr); refused with
      ``layer_decay_rate`` 1, where it selects nothing. Defaults to all.
    - ``no_decay_keys`` (Sequence[str]): See above. Defaults to ().

    ``configs/ablations/mask2former_d3s2_layer_decay_cityscapes.py`` uses the layer decay (beyond the paper).

    Example:
        >>> optim_wrapper = dict(
        ...     type='OptimWrapper',
        ...     constructor='mmfusion.FusionOptimWrapperConstructor',
        ...     optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
        ...     paramwise_cfg=dict(
        ...         custom_keys={'backbone': dict(lr_mult=0.1, decay_mult=1.0),
        ...                      'query_embed': dict(lr_mult=1.0, decay_mult=0.0),
        ...                      'query_feat': dict(lr_mult=1.0, decay_mult=0.0),
        ...                      'level_embed': dict(lr_mult=1.0, decay_mult=0.0)},
        ...         norm_decay_mult=0.0, no_decay_keys=('cls_token', 'pos_embed'), layer_decay_rate=0.7))

    Args:
        optim_wrapper_cfg (dict): As for ``DefaultOptimWrapperConstructor``.
        paramwise_cfg (dict, optional): As for ``DefaultOptimWrapperConstructor`` plus the keys above. Defaults to
            None.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None):
        paramwise_cfg = dict(paramwise_cfg or {})
        # Always present, so that MMEngine builds parameter groups via add_params (where frozen ones are dropped)
        # instead of handing model.parameters() to the optimizer.
        paramwise_cfg.setdefault('layer_decay_rate', 1.0)
        self.no_decay_keys = tuple(paramwise_cfg.pop('no_decay_keys', ()))
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        self.layer_decay_rate = float(self.paramwise_cfg['layer_decay_rate'])
        prefixes = self.paramwise_cfg.get('layer_decay_prefixes')
        self.layer_decay_prefixes: Optional[Tuple[str, ...]] = None if prefixes is None else tuple(prefixes)
        if not 0 < self.layer_decay_rate <= 1:
            raise ValueError(f'layer_decay_rate must be in (0, 1], got {self.layer_decay_rate}')
        if self.layer_decay_rate != 1 and self.base_lr is None:
            raise ValueError('layer_decay_rate needs optimizer.lr')
        if self.layer_decay_prefixes is not None and self.layer_decay_rate == 1:
            raise ValueError(f'layer_decay_prefixes={list(self.layer_decay_prefixes)} selects modules for layer-wise '
                             'lr decay, but layer_decay_rate is 1 (no decay): set paramwise_cfg.layer_decay_rate < 1 '
                             'or drop layer_decay_prefixes')
        self._frozen_skipped = 0

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '', is_dcn_module=None) -> None:
        """Like MMEngine's, minus fully frozen submodules; the top-level call then applies the layer decay."""
        if not any(p.requires_grad for p in module.parameters()):
            self._frozen_skipped += sum(1 for _ in module.parameters())
            return
        if prefix:
            super().add_params(params, module, prefix, is_dcn_module)
            return
        self._frozen_skipped = 0
        groups: List[dict] = []
        super().add_params(groups, module, prefix, is_dcn_module)
        self._apply_no_decay(groups, module)
        self._apply_layer_decay(groups, module)
        params.extend(groups)
        if self._frozen_skipped:
            print_log(f'{type(self).__name__}: {self._frozen_skipped} frozen parameters (requires_grad=False) left '
                      'out of the optimizer', logger='current', level=logging.INFO)

    def _apply_no_decay(self, groups: List[dict], model: nn.Module) -> None:
        norm_mult = self.paramwise_cfg.get('norm_decay_mult')
        if self.base_wd is None:
            return
        # 'norm' or 'embedding' per parameter, found by module type: nn.Embedding gets no decay whatever the other
        # keys say (detectron2 Mask2Former's WEIGHT_DECAY_EMBED = 0: mmdet's query, level and pixel-decoder level
        # embeddings, whatever their names); norms follow norm_decay_mult.
        kinds: Dict[int, Tuple[str, Optional[str]]] = {}
        for mod_name, mod in model.named_modules():
            kind = 'embedding' if isinstance(mod, nn.Embedding) else \
                'norm' if 'norm' in type(mod).__name__.lower() else None
            for pname, param in mod.named_parameters(recurse=False):
                kinds[id(param)] = (f'{mod_name}.{pname}' if mod_name else pname, kind)
        for group in groups:
            (param, ) = group['params']
            name, kind = kinds[id(param)]
            if kind == 'embedding' or any(key in name for key in self.no_decay_keys):
                group['weight_decay'] = 0.0
            elif kind == 'norm' and norm_mult is not None:
                group['weight_decay'] = self.base_wd * norm_mult

    def _apply_layer_decay(self, groups: List[dict], model: nn.Module) -> None:
        if self.layer_decay_rate == 1:
            return
        scales = self._layer_scales(model)
        for group in groups:
            (param, ) = group['params']  # the default constructor makes one group per parameter
            scale = scales.get(id(param))
            if scale is not None and scale != 1:
                group['lr'] = group.get('lr', self.base_lr) * scale
                group['lr_scale'] = scale

    def _layer_scales(self, model: nn.Module) -> Dict[int, float]:
        """``id(param) -> decay factor`` for parameters of modules that report layer ids."""
        scales: Dict[int, float] = {}
        owners: List[str] = []
        for name, mod in model.named_modules():
            if not (hasattr(mod, 'get_layer_id') and hasattr(mod, 'get_num_layers')):
                continue
            if any(o == '' or name == o or name.startswith(o + '.') for o in owners):
                continue  # only the outermost: its get_layer_id already covers the inner ones
            if not self._selected(name):
                continue
            owners.append(name)
            num_layers = mod.get_num_layers()
            for pname, param in mod.named_parameters():
                layer_id = mod.get_layer_id(pname)
                scales[id(param)] = self.layer_decay_rate**(num_layers + 1 - layer_id)
        return scales

    def _selected(self, name: str) -> bool:
        prefixes: Sequence[str] = self.layer_decay_prefixes or ()
        return self.layer_decay_prefixes is None or any(name == p or name.startswith(p + '.') for p in prefixes)
