"""Any Hugging Face vision encoder as a multi-stride backbone, built by `transformers
<https://huggingface.co/docs/transformers>`_ from a local ``save_pretrained`` folder or from a config alone.

One class, :class:`HFBackbone`, so that any foundation encoder ``transformers`` ships can be profiled and fused
(master or auxiliary of :class:`~mmfusion.models.backbones.MasterAuxBackbone`) without new code:

- **Hierarchical encoders** (stages at increasing strides: Swin, ConvNeXt, DINOv3 ConvNeXt, Hiera, SAM2's Hiera)
  return their own stages: ``out_strides`` picks among the stage strides.
- **Plain ViTs** (every block at the patch stride: DINOv2, DINOv3 ViT, CLIP, SigLIP, SigLIP2, SAM) go through one of
  the pyramids of :mod:`.vit_pyramids` (``'paper'``, ``'simple_fpn'``, ``'multilayer'``), the same as
  :class:`~mmfusion.models.backbones.DINOv3ViT`'s.

The model is ``transformers``' own: its ``AutoBackbone`` (DINOv2, DINOv3 ViT and ConvNeXt, Swin, and, unverified,
any other backbone type), otherwise its vision model (``AutoModel`` of the ``vision_config``: CLIP, SigLIP, SigLIP2,
SAM, SAM2, Hiera), run block by block up to the deepest block or stage the outputs need. A meta-device forward
(shapes only, no memory) measures the stride and width of every block or stage at build time: strides and channels
are read from the model, not from a table.
"""
from __future__ import annotations

import copy
import logging
import math
import os.path as osp
import re
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from torch import Tensor
from transformers import AutoBackbone, AutoConfig, AutoModel, PretrainedConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_BACKBONE_MAPPING_NAMES
from transformers.models.hiera.modeling_hiera import unroll as hiera_unroll
from transformers.utils.constants import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
)

from mmfusion.metrics import DEFAULT_STRIDES
from mmfusion.registry import MODELS
from mmfusion.utils.images import IMAGENET_MEAN, IMAGENET_STD

from .base_vfm import VFMBackbone, check_skip_strides, check_strides, crop_to_stride, pad_to_multiple
from .checkpoint_io import CheckpointMismatchError, LoadReport, load_into, resolve_checkpoint
from .vit_pyramids import LayerNorm2d, build_pyramid

# Fields of a config that do not change the forward of a trained model (training-only rates, bookkeeping, which
# backbone stages are returned), left out when a given ``config`` is compared with a folder's config.json.
_IGNORED_FIELDS = re.compile(r'dropout|drop_path|layerdrop|_prob$|^initializer_|^out_features$|^out_indices$|'
                             r'^stage_names$|^vision_use_head$|^output_|^return_dict$|^use_cache$|^tie_|dtype$|'
                             r'label|^problem_type$|^architectures$|^transformers_version$')


def _set_submodule(root: nn.Module, path: str, module: Optional[nn.Module]) -> None:
    parent, _, name = path.rpartition('.')
    setattr(root.get_submodule(parent) if parent else root, name, module)


# ----------------------------------------------------------------------------------------------------------------
# Runners: how to call each family's transformers model and read one map per unit (a block or a stage)
# ----------------------------------------------------------------------------------------------------------------

class _Runner:
    """Builds one family's ``transformers`` model and returns the maps of its units.

    A unit is a block of a plain ViT (all at the patch stride) or a stage of a hierarchical encoder. Units are
    numbered from 0, in order of depth.

    Attributes:
        units (str, optional): Dotted path of the ``nn.ModuleList`` that holds the units, for truncation. None:
            found as the only ModuleList with one entry per unit (no truncation when there is none or several).
        drop (tuple[str]): Submodules never used for the maps (a pooling head, a final norm of the class token
            only, a neck); replaced by ``nn.Identity`` so that they hold no parameter.
        mean, std (tuple[float]): Normalisation the family was trained with, for pixels in [0, 1].
        fixed_size (bool): The model runs at its config's ``image_size`` only (inputs are padded to it).
    """
    units: Optional[str] = None
    drop: Tuple[str, ...] = ()
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN
    std: Sequence[float] = IMAGENET_DEFAULT_STD
    fixed_size = False

    def __init__(self, config: PretrainedConfig):
        self.config = config

    def build(self, units: Sequence[int]) -> nn.Module:
        """The model, returning at least ``units`` (builds on the current default device)."""
        return AutoModel.from_config(self.config)

    def pad_multiple(self) -> int:
        """Besides the strides of the units, what the input size must be a multiple of."""
        return 1

    def unit_list(self, model: nn.Module, num_units: int) -> Optional[Tuple[str, nn.ModuleList]]:
        """``(path, ModuleList)`` of the units, or None when not found."""
        if self.units is not None:
            return self.units, model.get_submodule(self.units)
        found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == num_units]
        return found[0] if len(found) == 1 else None

    def truncate(self, model: nn.Module, keep: int, num_units: int) -> List[str]:
        """Drop the units from ``keep`` on; return the state-dict prefixes removed."""
        found = self.unit_list(model, num_units)
        if found is None or keep >= num_units:
            return []
        path, units = found
        _set_submodule(model, path, units[:keep])
        return [f'{path}.{i}.' for i in range(keep, num_units)]

    def forward(self, model: nn.Module, x: Tensor, units: Sequence[int]) -> Dict[int, Tensor]:
        """Unit index -> (B, C, H / s, W / s) for each of ``units``."""
        raise NotImplementedError

    def unit_index(self, model: nn.Module, name: str, prefix: Optional[str]) -> Optional[int]:
        """The unit holding parameter ``name`` of ``model`` (``prefix``: the units' list path + '.'), or None for a
        parameter outside the units."""
        if prefix is not None and name.startswith(prefix):
            return int(name[len(prefix):].split('.', 1)[0])
        return None


class _BackboneRunner(_Runner):
    """``transformers``' ``AutoBackbone``: unit ``i`` is ``stage_names[i + 1]`` (the stem is not a unit).

    Its feature maps are what ``transformers`` returns for detection and segmentation heads: ViT tokens normed by
    the final norm and reshaped (DINOv2, DINOv3), or stage outputs (ConvNeXt, DINOv3 ConvNeXt, Swin). The new
    per-stage LayerNorms some backbones add (``hidden_states_norms``: Swin) are replaced by identities, so the stages
    come out raw; ``stage_norms`` of :class:`HFBackbone` adds such norms outside the pretrained model.
    """

    def build(self, units: Sequence[int]) -> nn.Module:
        config = copy.deepcopy(self.config)
        config.out_indices = [u + 1 for u in sorted(units)]
        return AutoBackbone.from_config(config)

    def forward(self, model: nn.Module, x: Tensor, units: Sequence[int]) -> Dict[int, Tensor]:
        return dict(zip(sorted(units), model(pixel_values=x).feature_maps))


class _SwinRunner(_BackboneRunner):
    """Swin: the final norm only serves classification, and the last kept stage needs no patch merging."""
    units = 'swin.encoder.layers'
    drop = ('swin.layernorm', )

    def truncate(self, model: nn.Module, keep: int, num_units: int) -> List[str]:
        dropped = super().truncate(model, keep, num_units)
        last = model.get_submodule(self.units)[keep - 1]
        if last.downsample is not None:
            last.downsample = None  # the backbone reads each stage before its patch merging
            dropped.append(f'{self.units}.{keep - 1}.downsample.')
        return dropped


class _HieraRunner(_Runner):
    """Hiera (MAE-pretrained), run as ``transformers``' ``HieraModel`` runs it: the tokens are unrolled once (mask
    units contiguous) and every stage is rerolled to (B, H, W, C). ``transformers``' ``HieraBackbone`` (5.x) skips
    the unroll, so its stages come out scrambled. Mask-unit attention is laid out for the config's ``image_size``.
    """
    units = 'encoder.stages'
    drop = ('pooler', )
    fixed_size = True

    def forward(self, model: nn.Module, x: Tensor, units: Sequence[int]) -> Dict[int, Tensor]:
        embeddings = model.embeddings(x, interpolate_pos_encoding=False)[0]
        hidden = hiera_unroll(embeddings, image_shape=tuple(x.shape[-2:]), patch_stride=self.config.patch_stride,
                              schedule=model.unroll_schedule)
        wanted, maps = set(units), {}
        for i, stage in enumerate(model.encoder.stages):
            hidden = stage(hidden)[0]
            if i in wanted:
                maps[i] = model.encoder.reroll(hidden, stage_idx=i).permute(0, 3, 1, 2).contiguous()
        return maps


class _TokenRunner(_Runner):
    """A plain ViT run block by block (``transformers``' layers checkpoint themselves under ``with_cp``)."""
    #: Final norm applied to every block's tokens (the model applies it to all tokens of the last block).
    norm: Optional[str] = None

    def patch_size(self) -> int:
        patch = self.config.patch_size
        return int(patch if isinstance(patch, int) else patch[0])

    def pad_multiple(self) -> int:
        return self.patch_size()

    def embed(self, model: nn.Module, x: Tensor) -> Tensor:
        raise NotImplementedError

    def run_block(self, block: nn.Module, hidden: Tensor) -> Tensor:
        return block(hidden, None)

    def to_map(self, model: nn.Module, hidden: Tensor, grid: Tuple[int, int]) -> Tensor:
        tokens = hidden[:, hidden.shape[1] - grid[0] * grid[1]:]  # patch tokens follow the class/register tokens
        if self.norm is not None:
            tokens = model.get_submodule(self.norm)(tokens)
        # contiguous: a transposed view is channels-last, which slows down the pyramid's convs.
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *grid).contiguous()

    def forward(self, model: nn.Module, x: Tensor, units: Sequence[int]) -> Dict[int, Tensor]:
        grid = (x.shape[-2] // self.patch_size(), x.shape[-1] // self.patch_size())
        hidden = self.embed(model, x)
        wanted, maps = set(units), {}
        for i, block in enumerate(model.get_submodule(self.units)):
            hidden = self.run_block(block, hidden)
            if i in wanted:
                maps[i] = self.to_map(model, hidden, grid)
        return maps


class _CLIPRunner(_TokenRunner):
    """CLIP: pre-norm, then blocks; the final norm only normalises the class token, so maps are the raw tokens."""
    units = 'encoder.layers'
    drop = ('post_layernorm', )
    mean, std = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    def embed(self, model: nn.Module, x: Tensor) -> Tensor:
        return model.pre_layrnorm(model.embeddings(x, interpolate_pos_encoding=True))


class _SigLIPRunner(_TokenRunner):
    """SigLIP: no class token, final norm over all tokens; the attention-pooling head is not built."""
    units = 'encoder.layers'
    norm = 'post_layernorm'
    mean, std = IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD

    def __init__(self, config: PretrainedConfig):
        config = copy.deepcopy(config)
        config.vision_use_head = False
        super().__init__(config)

    def embed(self, model: nn.Module, x: Tensor) -> Tensor:
        return model.embeddings(x, interpolate_pos_encoding=True)


class _SigLIP2Runner(_SigLIPRunner):
    """SigLIP2 (NaFlex): takes flattened patches plus the patch grid, resizing its position embeddings to it."""

    def embed(self, model: nn.Module, x: Tensor) -> Tensor:
        p = self.patch_size()
        b, c, h, w = x.shape
        # (B, C, H, W) -> (B, h * w, p * p * C), each patch flattened as (row, column, channel), the processor's order.
        patches = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(b, -1, p * p * c)
        shapes = torch.tensor([[h // p, w // p]] * b, dtype=torch.long)
        return model.embeddings(patches, shapes)


class _SAMRunner(_TokenRunner):
    """SAM's ViT: absolute position embeddings resized to the token grid (transformers' SAM accepts only its
    pretraining size), windowed and global blocks on a (B, H, W, C) grid; the neck is not used."""
    units = 'vision_encoder.layers'
    drop = ('vision_encoder.neck', )

    def embed(self, model: nn.Module, x: Tensor) -> Tensor:
        encoder = model.vision_encoder
        hidden = encoder.patch_embed.projection(x).permute(0, 2, 3, 1)
        pos = encoder.pos_embed
        if pos is None:
            return hidden
        if pos.shape[1:3] != hidden.shape[1:3]:
            pos = F.interpolate(pos.permute(0, 3, 1, 2), size=hidden.shape[1:3], mode='bicubic',
                                align_corners=False).permute(0, 2, 3, 1)
        return hidden + pos

    def run_block(self, block: nn.Module, hidden: Tensor) -> Tensor:
        return block(hidden)

    def to_map(self, model: nn.Module, hidden: Tensor, grid: Tuple[int, int]) -> Tensor:
        return hidden.permute(0, 3, 1, 2).contiguous()


class _SAM2Runner(_Runner):
    """SAM2's Hiera (``Sam2VisionModel.backbone``): one unit per stage; the FPN neck is not used."""
    drop = ('neck', )

    def pad_multiple(self) -> int:
        # The tiled window position embedding needs the stride-4 grid to be a multiple of the first window.
        backbone = self.config.backbone_config
        stride = backbone.patch_stride
        return int(stride if isinstance(stride, int) else stride[0]) * int(backbone.window_size_per_stage[0])

    def unit_list(self, model: nn.Module, num_units: int):
        return None  # units are stages; blocks are cut in truncate

    def truncate(self, model: nn.Module, keep: int, num_units: int) -> List[str]:
        blocks = model.backbone.blocks
        last = model.backbone.stage_ends[keep - 1] + 1
        model.backbone.blocks = blocks[:last]
        return [f'backbone.blocks.{i}.' for i in range(last, len(blocks))]

    def forward(self, model: nn.Module, x: Tensor, units: Sequence[int]) -> Dict[int, Tensor]:
        stages = model.backbone(pixel_values=x).intermediate_hidden_states
        return {u: stages[u].permute(0, 3, 1, 2).contiguous() for u in units}

    def unit_index(self, model: nn.Module, name: str, prefix: Optional[str]) -> Optional[int]:
        if not name.startswith('backbone.blocks.'):
            return None
        block = int(name.split('.')[2])
        return sum(end < block for end in model.backbone.stage_ends)  # stage i ends with block stage_ends[i]


# model_type -> runner, for the families tested in tests/test_models/test_backbones/test_hf_backbone.py. Other
# AutoBackbone families run through _BackboneRunner, unverified.
_RUNNERS = {
    'dinov2': _BackboneRunner,
    'dinov2_with_registers': _BackboneRunner,
    'dinov3_vit': _BackboneRunner,
    'dinov3_convnext': _BackboneRunner,
    'swin': _SwinRunner,
    'hiera': _HieraRunner,
    'clip_vision_model': _CLIPRunner,
    'siglip_vision_model': _SigLIPRunner,
    'siglip2_vision_model': _SigLIP2Runner,
    'sam_vision_model': _SAMRunner,
    'sam2_vision_model': _SAM2Runner,
}


def _vision_config(config: PretrainedConfig) -> PretrainedConfig:
    """The image encoder's config: composite models (CLIP, SigLIP, SAM, ...) keep it in ``vision_config``."""
    if config.model_type not in _RUNNERS and getattr(config, 'vision_config', None) is not None:
        return config.vision_config
    return config


def _runner_for(config: PretrainedConfig, source: str) -> _Runner:
    kind = _RUNNERS.get(config.model_type)
    if kind is None and config.model_type in MODEL_FOR_BACKBONE_MAPPING_NAMES:
        print_log(f'HFBackbone: {config.model_type!r} runs through transformers\' AutoBackbone; mmfusion has not '
                  f'verified it (verified: {", ".join(sorted(_RUNNERS))})', logger='current', level=logging.WARNING)
        kind = _BackboneRunner
    if kind is None:
        raise ValueError(f'{source}: model_type {config.model_type!r} has no vision encoder HFBackbone can run; use '
                         f'a vision model (e.g. {", ".join(sorted(_RUNNERS))}, or any AutoBackbone type)')
    return kind(config)


def _config_from_dict(fields: dict) -> PretrainedConfig:
    fields = dict(fields)
    model_type = fields.pop('model_type', None)
    if model_type is None:
        raise ValueError("config needs model_type, e.g. config=dict(model_type='dinov2', hidden_size=384, ...)")
    try:
        config = AutoConfig.for_model(model_type)
    except ValueError:
        raise ValueError(f'config model_type {model_type!r} is not a transformers model type; pick a vision model '
                         f'such as {", ".join(sorted(_RUNNERS))}') from None
    # transformers keeps unknown kwargs as attributes, so a typo would go unnoticed.
    unknown = sorted(set(fields) - set(config.to_dict()))
    if unknown:
        raise KeyError(f'Not {type(config).__name__} fields: {unknown}')
    return AutoConfig.for_model(model_type, **fields)


def _config_conflicts(ours: PretrainedConfig, theirs: PretrainedConfig) -> List[str]:
    """Fields of the same config class on which two configs disagree, training-only fields left out."""
    if type(ours) is not type(theirs):
        return [f'model_type: config has {ours.model_type!r}, the folder {theirs.model_type!r}']
    return _dict_conflicts(ours.to_dict(), theirs.to_dict(), type(ours)().to_dict())


def _dict_conflicts(ours: dict, theirs: dict, defaults: dict, prefix: str = '') -> List[str]:
    out = []
    for key, default in sorted(defaults.items()):
        if not isinstance(key, str) or key.startswith('_') or _IGNORED_FIELDS.search(key):
            continue
        a, b = ours.get(key, default), theirs.get(key, default)
        if isinstance(default, dict) and isinstance(a, dict) and isinstance(b, dict):
            out += _dict_conflicts(a, b, default, f'{prefix}{key}.')  # a sub-config, e.g. SAM2's backbone_config
        elif _plain(a) != _plain(b):
            out.append(f'{prefix}{key}: config has {a!r}, the folder {b!r}')
    return out


def _plain(value):
    # config.json stores tuples as lists.
    return tuple(_plain(v) for v in value) if isinstance(value, (list, tuple)) else value


def _folder_normalisation(folder: str) -> Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]]:
    """``(mean, std)`` for [0, 1] pixels from a folder's ``preprocessor_config.json``, or None without one."""
    import json
    path = osp.join(folder, 'preprocessor_config.json')
    if not osp.isfile(path):
        return None
    with open(path, encoding='utf-8') as f:
        cfg = json.load(f)
    if cfg.get('do_normalize') is False:
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if 'image_mean' not in cfg or 'image_std' not in cfg:
        return None
    return tuple(float(v) for v in cfg['image_mean']), tuple(float(v) for v in cfg['image_std'])


def _hf_folder(path: str, how_to_get: str) -> str:
    folder = resolve_checkpoint(path, how_to_get)
    if not osp.isdir(folder) or not osp.isfile(osp.join(folder, 'config.json')):
        raise ValueError(f'{folder!r} is not a Hugging Face model folder (no config.json); pass a save_pretrained '
                         'folder (e.g. `huggingface-cli download facebook/dinov2-with-registers-base --local-dir '
                         'checkpoints/dinov2-with-registers-base`) or config=dict(model_type=...) for random weights')
    return folder


# ----------------------------------------------------------------------------------------------------------------
# The backbone
# ----------------------------------------------------------------------------------------------------------------

@MODELS.register_module()
class HFBackbone(VFMBackbone):
    """A Hugging Face vision encoder (``transformers``' model inside, as ``self.model``) with multi-stride outputs.

    The architecture comes from ``config`` when given (building reads no file), otherwise from the ``config.json``
    of the ``checkpoint`` folder (read at build time; the weights themselves are read by :meth:`init_weights`).
    Composite folders (CLIP, SigLIP, SAM, SAM2 with their text encoder or mask decoder) give their vision encoder.

    Outputs: a hierarchical encoder returns its own stages (``out_strides`` among the stage strides; the deepest
    stage of a stride when several share it); a plain ViT returns the maps of ``pyramid`` (see :mod:`.vit_pyramids`).
    Each output is ``(B, C, ceil(H / s), ceil(W / s))``: the input is zero-padded at the bottom/right to a multiple
    of the patch size and of the deepest stride needed (to the pretraining size for Hiera, which runs at it only),
    then cropped back. Blocks and stages past the deepest one needed are dropped at build time, as are modules that
    never reach an output (pooling heads, necks, class-token norms), so DDP sees no unused parameter; a mask token
    (masked-image pretraining only) stays with ``requires_grad=False``. Levels in ``skip_strides`` are not returned
    (None) and have no pyramid layers.

    Normalisation: inputs arrive normalised by the model's data preprocessor with ``input_mean``/``input_std``
    (ImageNet's by default, as every shipped config's; a built model whose preprocessor differs is refused, see
    :mod:`mmfusion.utils.normalisation`); they are renormalised to the mean/std the encoder was trained with:
    ``image_mean``/``image_std`` when given, else the checkpoint folder's ``preprocessor_config.json`` (when the
    architecture is read from the folder), else the family's (CLIP: OpenAI's CLIP mean/std; SigLIP/SigLIP2: 0.5/0.5;
    others: ImageNet's). Position embeddings are interpolated to the input's token grid (DINOv2, CLIP, SigLIP, SAM's
    absolute embedding; SigLIP2 resizes its own; DINOv3 uses RoPE).

    ``frozen`` freezes ``self.model`` (no_grad, eval mode kept through ``train()``); pyramid layers and stage norms
    (``stage_norms=True``) are new layers and always train.

    Families verified by the tests: DINOv2 (with and without registers), DINOv3 ViT, DINOv3 ConvNeXt,
    Swin, Hiera, CLIP, SigLIP, SigLIP2, SAM, SAM2. Other ``AutoBackbone`` model types run unverified (with a
    warning).

    Args:
        checkpoint (str, optional): A local Hugging Face ``save_pretrained`` folder (``config.json`` plus weights);
            relative paths are also looked up in the repository root. Loaded by ``init_weights`` through
            ``transformers``' ``from_pretrained(local_files_only=True)``; missing weights stop the load. None: random
            weights (with a warning). Defaults to None.
        config (dict, optional): The architecture as ``transformers`` config fields with ``model_type`` (e.g.
            ``dict(model_type='dinov2', hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
            patch_size=14)``); for composite types, ``vision_config=dict(...)``. With ``checkpoint``, the folder's
            config.json must agree on every field that changes the forward (checked at load). Defaults to None.
        out_strides (Sequence[int]): Output strides, strictly increasing. Defaults to ``(4, 8, 16, 32)``.
        skip_strides (Sequence[int]): Entries of ``out_strides`` not to compute (None in the output). Defaults to ().
        pyramid (str | dict, optional): For plain ViTs, a pyramid of :mod:`.vit_pyramids` (``'paper'``,
            ``'simple_fpn'``, ``'multilayer'``, or a dict with ``type=`` and its options, e.g.
            ``dict(type='paper', project=False)`` for a parameter-free one). Must be None for hierarchical encoders.
            Defaults to None, i.e. ``'paper'`` for plain ViTs.
        stage_norms (bool): Hierarchical encoders: a new LayerNorm over the channels of each returned stage (as
            mmdet's Swin and ``transformers``' backbones add for dense heads), trained even when frozen. Defaults to
            False (the raw stages, parameter-free, as a frozen auxiliary needs).
        image_mean (Sequence[float], optional): Mean the encoder expects, for pixels in [0, 1]. Defaults to None
            (see above).
        image_std (Sequence[float], optional): Std the encoder expects, for pixels in [0, 1]. Defaults to None.
        input_mean (Sequence[float], optional): Mean the data preprocessor normalises with (0-255 scale, RGB: the
            config's ``model.data_preprocessor.mean``). Defaults to None: ImageNet's (123.675, 116.28, 103.53).
        input_std (Sequence[float], optional): Std the data preprocessor normalises with (0-255 scale). Defaults to
            None: ImageNet's (58.395, 57.12, 57.375).
        frozen (bool): Freeze the pretrained model. Defaults to False.
        with_cp (bool): ``transformers``' gradient checkpointing of the blocks (training only); refused with
            ``frozen=True``. Defaults to False.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=PATH)``, the same as ``checkpoint=PATH``.
            Defaults to None.

    Attributes:
        model_type (str): ``transformers`` model type of the encoder.
        plain (bool): Every unit at one stride (a plain ViT, read through a pyramid).
        unit_strides (tuple[int]): Stride of each block (plain ViT) or stage, as built (before truncation).
        unit_channels (tuple[int]): Width of each block or stage.
        units (tuple[int]): The blocks or stages the outputs read (the model keeps units up to the deepest).
        out_strides (tuple[int]): Strides of the outputs.
        out_channels (tuple[int]): Channels of the outputs.

    Example:
        >>> import torch
        >>> from mmfusion.registry import MODELS
        >>> # A small DINOv2 stated in config= (building reads no file; checkpoint=FOLDER loads weights in init_weights)
        >>> backbone = MODELS.build(dict(
        ...     type='mmfusion.HFBackbone',
        ...     config=dict(model_type='dinov2', hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
        ...                 patch_size=14),
        ...     pyramid=dict(type='paper', channels=(128, 256, 512, 1024))))
        >>> [tuple(f.shape) for f in backbone(torch.randn(1, 3, 64, 128))]
        [(1, 128, 16, 32), (1, 256, 8, 16), (1, 512, 4, 8), (1, 1024, 2, 4)]
    """

    pretrained_modules = ('model', )

    def __init__(self,
                 checkpoint: Optional[str] = None,
                 config: Optional[dict] = None,
                 out_strides: Sequence[int] = DEFAULT_STRIDES,
                 skip_strides: Sequence[int] = (),
                 pyramid: Union[str, dict, None] = None,
                 stage_norms: bool = False,
                 image_mean: Optional[Sequence[float]] = None,
                 image_std: Optional[Sequence[float]] = None,
                 input_mean: Optional[Sequence[float]] = None,
                 input_std: Optional[Sequence[float]] = None,
                 frozen: bool = False,
                 with_cp: bool = False,
                 init_cfg=None):
        super().__init__(frozen=frozen, checkpoint=checkpoint, init_cfg=init_cfg)
        self._check_with_cp(with_cp)
        if config is None and self.checkpoint is None:
            raise ValueError('HFBackbone needs checkpoint=<Hugging Face folder> or config=dict(model_type=...)')
        folder_norm = None
        if config is not None:
            hf_config = _vision_config(_config_from_dict(config))
        else:
            folder = _hf_folder(self.checkpoint, self._how_to_get())
            hf_config = _vision_config(AutoConfig.from_pretrained(folder, local_files_only=True))
            folder_norm = _folder_normalisation(folder)
        self.model_type = hf_config.model_type
        runner = _runner_for(hf_config, self.checkpoint or 'config')
        self._runner = runner
        self.hf_config = runner.config
        self.out_strides = check_strides(out_strides)
        self.skip_strides = check_skip_strides(skip_strides, self.out_strides)

        self.unit_strides, self.unit_channels = _probe(runner)
        self.plain = len(set(self.unit_strides)) == 1
        num_units = len(self.unit_strides)
        if self.plain:
            self.pyramid = build_pyramid('paper' if pyramid is None else pyramid, embed_dim=self.unit_channels[0],
                                         num_layers=num_units, patch_size=self.unit_strides[0],
                                         out_strides=self.out_strides, skip=self.skip_strides)
            self.out_channels = tuple(self.pyramid.out_channels)
            self.units = tuple(sorted(set(self.pyramid.taps)))
            self._stride_units = ()
            self.norms = None
            if stage_norms:
                raise ValueError(f'stage_norms is for encoders with stages; {self.model_type} is a plain ViT: use a '
                                 "pyramid with norms (e.g. pyramid='simple_fpn') or stage_norms=False")
        else:
            if pyramid is not None:
                raise ValueError(f'{self.model_type} has its own stages at strides {self._native()}; pyramid= is for '
                                 'plain ViTs: drop it')
            self.pyramid = None
            missing = [s for s in self.out_strides if s not in self.unit_strides]
            if missing:
                raise ValueError(f'out_strides {tuple(missing)} not available: {self.model_type} gives strides '
                                 f'{self._native()}; choose out_strides among them')
            # The deepest unit of each stride, should several stages share one.
            self._stride_units = tuple(max(i for i, t in enumerate(self.unit_strides) if t == s)
                                       for s in self.out_strides)
            self.out_channels = tuple(self.unit_channels[u] for u in self._stride_units)
            self.units = tuple(u for u, s in zip(self._stride_units, self.out_strides) if s not in self.skip_strides)
            self.norms = nn.ModuleList(
                nn.Identity() if s in self.skip_strides else LayerNorm2d(c)
                for s, c in zip(self.out_strides, self.out_channels)) if stage_norms else None

        self.model = runner.build(self.units)
        found = runner.unit_list(self.model, num_units)
        self._unit_prefix = found[0] + '.' if found else None  # for layer-wise lr decay
        self._dropped = list(runner.drop)
        for path in runner.drop:
            _set_submodule(self.model, path, nn.Identity())
        keep = max(self.units) + 1
        self._dropped += runner.truncate(self.model, keep, num_units)
        norms = getattr(self.model, 'hidden_states_norms', None)
        if isinstance(norms, nn.ModuleDict):
            # New layers of transformers' backbones, not in pretrained weights: HFBackbone's own stage_norms instead.
            for name in list(norms):
                norms[name] = nn.Identity()
            self._dropped.append('hidden_states_norms.')
        for name, param in self.model.named_parameters():
            if name.endswith('mask_token'):
                param.requires_grad_(False)  # masked-image pretraining only: an unused parameter under DDP

        kept_strides = [self.unit_strides[u] for u in range(keep)]
        self.pad_multiple = math.lcm(max(kept_strides), runner.pad_multiple())
        self._fixed_size = self._image_size() if runner.fixed_size else None
        mean, std = self._normalisation(image_mean, image_std, folder_norm)
        self.image_mean, self.image_std = mean, std
        # What the data preprocessor gives: (pixel - input_mean) / input_std, pixels on the 0-255 scale.
        self.input_mean, self.input_std = self._input_normalisation(input_mean, input_std)
        in_mean, in_std = torch.tensor(self.input_mean) / 255, torch.tensor(self.input_std) / 255
        scale, shift = in_std / torch.tensor(std), (in_mean - torch.tensor(mean)) / torch.tensor(std)
        self._renormalise = not (torch.allclose(scale, torch.ones(3)) and torch.allclose(shift, torch.zeros(3)))
        # Not in the state dict: derived from the arguments (and the folder) at every build.
        self.register_buffer('input_scale', scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer('input_shift', shift.view(1, 3, 1, 1), persistent=False)

        if with_cp:
            if not getattr(self.model, 'supports_gradient_checkpointing', False):
                raise ValueError(f'transformers\' {type(self.model).__name__} has no gradient checkpointing; set '
                                 'with_cp=False')
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs=dict(use_reentrant=False))
        self._warn_if_random(self._how_to_get())
        self._set_frozen()

    # ------------------------------------------------------------------------------------------------ building

    def _native(self) -> Tuple[int, ...]:
        return tuple(sorted(set(self.unit_strides)))

    def _image_size(self) -> Tuple[int, int]:
        size = self.hf_config.image_size
        return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))

    def _normalisation(self, mean, std, folder_norm) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
        if (mean is None) != (std is None):
            raise ValueError('set both image_mean and image_std, or neither')
        if mean is None:
            mean, std = folder_norm or (self._runner.mean, self._runner.std)
        mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f'image_mean/image_std must be 3 values each, std > 0; got {mean}, {std}')
        return mean, std

    @staticmethod
    def _input_normalisation(mean, std) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
        if (mean is None) != (std is None):
            raise ValueError('set both input_mean and input_std (the data preprocessor\'s mean/std), or neither '
                             '(ImageNet\'s)')
        if mean is None:
            return tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)
        mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f'input_mean/input_std must be 3 values each (0-255 scale, as '
                             f'model.data_preprocessor.mean/std), std > 0; got {mean}, {std}')
        return mean, std

    def _how_to_get(self) -> str:
        return ('Pass a local Hugging Face folder, e.g. `huggingface-cli download facebook/dinov2-with-registers-base '
                '--local-dir checkpoints/dinov2-with-registers-base` (nothing is downloaded at run time).')

    # ------------------------------------------------------------------------------------------------ loading

    def load_checkpoint(self, checkpoint: str) -> LoadReport:
        """Load a Hugging Face folder into ``self.model``.

        ``transformers`` reads it (``from_pretrained(local_files_only=True)``: safetensors, or ``torch.load`` with
        ``weights_only=True``; its own renaming of older layouts; the vision part of composite models) into a
        model of the same config, which is then copied into ``self.model`` by :func:`.checkpoint_io.load_into`
        (blocks and modules dropped at build time left out on purpose).

        Args:
            checkpoint (str): Path of the folder.

        Returns:
            LoadReport: Keys loaded and skipped.

        Raises:
            FileNotFoundError: The path does not exist; the message says how to get the weights.
            ValueError: Not a Hugging Face folder, or its config.json disagrees with ``config``.
            CheckpointMismatchError: The folder lacks weights of the encoder; all are named.
        """
        folder = _hf_folder(checkpoint, self._how_to_get())
        folder_config = AutoConfig.from_pretrained(folder, local_files_only=True)
        theirs = _runner_for(_vision_config(folder_config), folder).config
        conflicts = _config_conflicts(self.hf_config, theirs)
        if conflicts:
            raise ValueError(f'{folder}/config.json does not match config=: {"; ".join(conflicts)}. Drop config= to '
                             'build from the folder, or make them agree')
        norm = _folder_normalisation(folder)
        if norm is not None and not (_close(norm[0], self.image_mean) and _close(norm[1], self.image_std)):
            print_log(f'HFBackbone: {folder} preprocesses with mean {norm[0]} std {norm[1]}, this backbone uses '
                      f'{self.image_mean} {self.image_std}; set image_mean/image_std to match', logger='current',
                      level=logging.WARNING)
        state, missing, mismatched = self._read_folder(folder, composite=folder_config.model_type != self.model_type)
        if missing or mismatched:
            lines = [f'{folder} does not fit {type(self.model).__name__}.']
            if missing:
                lines.append(f'Missing {len(missing)} essential key(s): {", ".join(missing)}.')
            if mismatched:
                lines.append(f'Wrong shape: {", ".join(str(k) for k in mismatched)}.')
            raise CheckpointMismatchError(' '.join(lines))
        own = set(self.model.state_dict())
        dropped = tuple(p if p.endswith('.') else p + '.' for p in self._dropped)
        return load_into(self.model, state, source=folder, skip=lambda k: k not in own and k.startswith(dropped))

    def _read_folder(self, folder: str, composite: bool) -> Tuple[Dict[str, Tensor], List[str], list]:
        """The encoder's weights in a folder, read by ``transformers``; with the essential keys it lacks."""
        with torch.device('cpu'):
            reference, info = type(self.model).from_pretrained(
                folder, config=copy.deepcopy(self.model.config), local_files_only=True, output_loading_info=True)
            missing = sorted(k for k in info['missing_keys'] if not self._optional(k))
            if not missing or not composite:
                return reference.state_dict(), missing, list(info.get('mismatched_keys') or ())
            # Some composite models (e.g. SAM2) keep the image encoder under a name the encoder class does not
            # know: read the whole model and take the submodule of the encoder's class.
            full, info = AutoModel.from_pretrained(folder, local_files_only=True, output_loading_info=True)
        prefix = next((n for n, m in full.named_modules() if type(m) is type(self.model)), None)
        if prefix is None:
            return reference.state_dict(), missing, list(info.get('mismatched_keys') or ())
        missing = sorted(k[len(prefix) + 1:] for k in info['missing_keys']
                         if k.startswith(prefix + '.') and not self._optional(k[len(prefix) + 1:]))
        return full.get_submodule(prefix).state_dict(), missing, list(info.get('mismatched_keys') or ())

    @staticmethod
    def _optional(key: str) -> bool:
        # Per-stage norms are new layers of transformers' backbones (not in a pretrained model's weights).
        return key.startswith('hidden_states_norms.')

    # ------------------------------------------------------------------------------------------------ forward

    def get_num_layers(self) -> int:
        """Number of units kept, the depth unit of layer-wise lr decay: blocks of a plain ViT, stages of a
        hierarchical encoder (stage-wise decay, as mmseg's ConvNeXt recipe)."""
        return max(self.units) + 1

    def get_layer_id(self, name: str) -> int:
        """Depth of a parameter for layer-wise lr decay: ``i + 1`` for unit ``i``, 0 for what the model runs before
        the units (embeddings, a pre-norm), ``num_layers + 1`` for the rest (final norms, pyramid, stage norms).

        Args:
            name (str): Parameter name relative to this module (``'model.encoder.layer.3.mlp.fc1.weight'``).

        Raises:
            ValueError: The family's units could not be located (an unverified AutoBackbone type).
        """
        ids = getattr(self, '_layer_ids', None)
        if ids is None:
            # transformers registers submodules in the order they run: what precedes the units is the stem
            ids, seen = {}, False
            for pname, _ in self.model.named_parameters():
                unit = self._runner.unit_index(self.model, pname, self._unit_prefix)
                seen = seen or unit is not None
                ids[pname] = unit + 1 if unit is not None else (self.get_num_layers() + 1 if seen else 0)
            if not seen:
                raise ValueError(f'layer-wise lr decay: HFBackbone cannot tell the depth of the {self.model_type} '
                                 "parameters (its blocks were not found); leave it out with the optimizer's "
                                 'layer_decay_prefixes or set layer_decay_rate=1')
            self._layer_ids = ids
        if not name.startswith('model.'):
            return self.get_num_layers() + 1
        return ids[name[len('model.'):]]

    def forward(self, x: Tensor) -> Tuple[Optional[Tensor], ...]:
        """Multi-stride maps of ``x``.

        Args:
            x (Tensor): (B, 3, H, W), normalised with ``input_mean``/``input_std``.

        Returns:
            tuple[Tensor, ...]: One (B, C_i, ceil(H / s_i), ceil(W / s_i)) map per ``out_strides`` entry (None for
            ``skip_strides``).
        """
        size = tuple(x.shape[-2:])
        padded = self._pad(x)
        if self._renormalise:
            padded = padded * self.input_scale + self.input_shift
        with self._grad_context():
            maps = self.unit_maps(padded)
        if self.pyramid is not None:
            outs = self.pyramid(maps, tuple(padded.shape[-2:]))
        else:
            outs = [None if s in self.skip_strides else maps[u] if self.norms is None else self.norms[i](maps[u])
                    for i, (s, u) in enumerate(zip(self.out_strides, self._stride_units))]
        return tuple(None if o is None else crop_to_stride(o, size, s) for o, s in zip(outs, self.out_strides))

    def _pad(self, x: Tensor) -> Tensor:
        if self._fixed_size is None:
            return pad_to_multiple(x, self.pad_multiple)
        (h, w), (fh, fw) = x.shape[-2:], self._fixed_size
        if h > fh or w > fw:
            raise ValueError(f'{self.model_type} runs at its config image_size {self._fixed_size} only and the input '
                             f'is {h}x{w}; use inputs up to that size, or an encoder that takes any size')
        return F.pad(x, (0, fw - w, 0, fh - h))

    def unit_maps(self, x: Tensor) -> Dict[int, Tensor]:
        """The maps of the blocks (plain ViT) or stages the outputs read.

        Args:
            x (Tensor): (B, 3, H, W), padded and normalised as the encoder expects.

        Returns:
            dict[int, Tensor]: Unit index -> (B, C, H / s, W / s).
        """
        return self._runner.forward(self.model, x.to(next(self.model.parameters()).dtype), self.units)


# (runner class, config JSON) -> (unit strides, unit widths): one probe per architecture and process.
_PROBED: Dict[Tuple[type, str], Tuple[Tuple[int, ...], Tuple[int, ...]]] = {}


def _probe(runner: _Runner) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """Stride and width of every unit, from a forward on the meta device (shapes only, no memory)."""
    key = (type(runner), runner.config.to_json_string(use_diff=False))
    if key not in _PROBED:
        num = _num_units(runner)
        with torch.device('meta'):
            model = runner.build(range(num))
        # The pretraining size, where the model has one: position embeddings need no interpolation there, which
        # is the slowest part of a meta-device forward.
        size = getattr(runner.config, 'image_size', None) or 256
        size = (size, size) if isinstance(size, int) else tuple(size[:2])
        multiple = runner.pad_multiple()
        size = tuple(math.ceil(int(s) / multiple) * multiple for s in size)
        with torch.no_grad():
            maps = runner.forward(model, torch.empty(1, 3, *size, device='meta'), range(num))
        maps = [maps[i] for i in sorted(maps)]
        _PROBED[key] = (tuple(int(round(size[0] / m.shape[-2])) for m in maps), tuple(int(m.shape[1]) for m in maps))
    return _PROBED[key]


def _num_units(runner: _Runner) -> int:
    """Blocks of a plain ViT or stages of a hierarchical encoder, from the config."""
    config = runner.config
    if isinstance(runner, _BackboneRunner):
        return len(config.stage_names) - 1
    if isinstance(runner, _SAM2Runner):
        return len(config.backbone_config.blocks_per_stage)
    if isinstance(runner, _HieraRunner):
        return len(config.depths)
    return int(config.num_hidden_layers)


def _close(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(abs(x - y) < 1e-6 for x, y in zip(a, b))
