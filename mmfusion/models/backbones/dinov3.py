"""DINOv3 ViT as a multi-stride backbone, on top of ``transformers``' ``DINOv3ViTModel``.

The ViT itself is ``transformers``' model (embeddings, RoPE, blocks, final norm); this module pads the input, runs
the blocks it needs, and turns the stride-16 patch tokens into a pyramid with one of the named builders of
:mod:`.vit_pyramids` (``'paper'``, SPEC §5's reference pyramid; ``'simple_fpn'``, ViTDet's; ``'multilayer'``, one
block per level, each normed with the final norm as transformers' backbone does).

This class reads Meta's official DINOv3 ``.pth`` as well as Hugging Face folders (converting Meta's key layout, see
:mod:`.checkpoint_io`); :class:`~mmfusion.models.backbones.HFBackbone` reads Hugging Face folders only, of any
family, with the same pyramids.
"""
from __future__ import annotations

import dataclasses
import itertools
import os.path as osp
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torch import Tensor
from transformers import DINOv3ViTConfig, DINOv3ViTModel

from mmfusion.registry import MODELS
from mmfusion.utils.images import IMAGENET_MEAN, IMAGENET_STD

from .base_vfm import VFMBackbone, check_skip_strides, check_strides, crop_to_stride, pad_to_multiple
from .checkpoint_io import (
    LoadReport,
    dinov3_to_hf,
    load_into,
    read_hf_folder,
    resolve_checkpoint,
    safe_load_file,
    unwrap_state_dict,
)
from .vit_pyramids import build_pyramid

# Released DINOv3 ViTs (LVD-1689M pretraining), as DINOv3ViTConfig fields; the rest stay at transformers' defaults
# (patch 16, LayerScale 1.0, LayerNorm eps 1e-5, RoPE theta 100, query/value bias, no key bias), which are the
# released values.
DINOV3_ARCHS: Dict[str, dict] = {
    'vits16': dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=12, num_attention_heads=6,
                   num_register_tokens=4),
    'vits16plus': dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=12, num_attention_heads=6,
                       num_register_tokens=4, use_gated_mlp=True, hidden_act='silu'),
    'vitb16': dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                   num_register_tokens=4),
    'vitl16': dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                   num_register_tokens=4),
    'vith16plus': dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                       num_register_tokens=4, use_gated_mlp=True, hidden_act='silu'),
    'vit7b16': dict(hidden_size=4096, intermediate_size=8192, num_hidden_layers=40, num_attention_heads=32,
                    num_register_tokens=4, use_gated_mlp=True, hidden_act='silu', query_bias=False,
                    value_bias=False),
}

# Where each preset's weights come from (for the not-found message).
_HUB_IDS = {name: f'facebook/dinov3-{name}-pretrain-lvd1689m' for name in DINOV3_ARCHS}
_META_FILES = {
    'vits16': 'dinov3_vits16_pretrain_lvd1689m-08c60483.pth',
    'vits16plus': 'dinov3_vits16plus_pretrain_lvd1689m-4057cbaa.pth',
    'vitb16': 'dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth',
    'vitl16': 'dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth',
    'vith16plus': 'dinov3_vith16plus_pretrain_lvd1689m-7c1da9a5.pth',
    'vit7b16': 'dinov3_vit7b16_pretrain_lvd1689m-a955f4ea.pth',
}

# Config fields that change the computation: a checkpoint folder's config.json must agree with ``arch`` on these.
_FORWARD_FIELDS = ('patch_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads',
                   'hidden_act', 'layer_norm_eps', 'rope_theta', 'query_bias', 'key_bias', 'value_bias', 'proj_bias',
                   'mlp_bias', 'use_gated_mlp', 'num_register_tokens')


def dinov3_config(arch: Union[str, dict]) -> DINOv3ViTConfig:
    """The ``DINOv3ViTConfig`` for a preset name or a dict of config fields.

    Args:
        arch (str | dict): A key of :data:`DINOV3_ARCHS`, or ``DINOv3ViTConfig`` fields; a dict may name a preset
            to start from with ``preset='vitb16'`` (e.g. ``dict(preset='vitl16', drop_path_rate=0.2)``).

    Returns:
        DINOv3ViTConfig: The config.
    """
    if isinstance(arch, str):
        if arch not in DINOV3_ARCHS:
            raise KeyError(f'Unknown DINOv3 arch {arch!r}; presets: {sorted(DINOV3_ARCHS)}, or pass a dict of '
                           'DINOv3ViTConfig fields')
        fields = dict(DINOV3_ARCHS[arch])
    else:
        fields = dict(arch)
        preset = fields.pop('preset', None)
        if preset is not None:
            if preset not in DINOV3_ARCHS:
                raise KeyError(f'Unknown DINOv3 preset {preset!r}; presets: {sorted(DINOV3_ARCHS)}')
            fields = {**DINOV3_ARCHS[preset], **fields}
    known = {f.name for f in dataclasses.fields(DINOv3ViTConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        # DINOv3ViTConfig silently keeps unknown kwargs, so a typo would otherwise go unnoticed.
        raise KeyError(f'Not DINOv3ViTConfig fields: {unknown}')
    return DINOv3ViTConfig(**fields)


@MODELS.register_module()
class DINOv3ViT(VFMBackbone):
    """DINOv3 ViT with a multi-stride pyramid (``transformers``' ``DINOv3ViTModel`` inside, as ``self.vit``).

    The input is the ImageNet-normalised image (B, 3, H, W) of any size: it is zero-padded at the bottom/right to a
    multiple of the patch size (the reference instead resized to the next multiple of 16 and added 16 px when the
    size was already divisible), and every output is cropped back to ``ceil(H / s) x ceil(W / s)``.

    Only the blocks the pyramid reads are kept (a ``multilayer`` pyramid tapping block 8 of 12 drops blocks 9-11);
    the checkpoint's keys for dropped blocks are left out on purpose. Levels in ``skip_strides`` are not computed
    (None in the output) and hold no parameters: a fused backbone skips the levels its auxiliary replaces.

    ``frozen`` freezes the ViT (``self.vit``, the pretrained part); the pyramid's new layers always train. Weights are
    loaded by ``init_weights`` (building reads no file).

    Why a class of its own beside :class:`~mmfusion.models.backbones.HFBackbone` (which also runs DINOv3 ViTs, from
    Hugging Face folders): this one reads Meta's official ``.pth`` too (converted on load), has the paper's presets
    (``arch='vitb16'``...) and layer ids for layer-wise lr decay. Both use the pyramids of :mod:`.vit_pyramids`.

    RoPE: in training mode transformers' DINOv3 rescales the RoPE coordinates at random (``pos_embed_rescale=2.0``,
    the released config, as in DINOv3's pretraining), so a fine-tuned master gets this augmentation; pass
    ``arch=dict(preset=..., pos_embed_rescale=None)`` to turn it off. A frozen backbone stays in eval mode, so it
    never jitters.

    Large masters (``arch='vit7b16'``, 6.7B parameters): ``init_device='meta'`` builds the ViT without allocating or
    initialising its weights (shapes only; the pyramid is built as usual). ``init_weights`` then gives it the
    checkpoint's tensors without copying them (``load_state_dict(assign=True)``, cast to the ViT's dtype) and
    initialises only what the checkpoint lacks (the mask token, RoPE's frequencies) the way transformers does; a
    trained checkpoint loaded into the model (testing without ``init_weights``) is assigned the same way. Random
    weights are not available on the meta device: without ``checkpoint`` ``init_weights`` stops with an error.

    Args:
        arch (str | dict): Preset (``'vits16'``, ``'vits16plus'``, ``'vitb16'``, ``'vitl16'``, ``'vith16plus'``,
            ``'vit7b16'``) or a dict of ``DINOv3ViTConfig`` fields, optionally with ``preset=``. Defaults to
            ``'vitb16'``.
        pyramid (str | dict): ``'paper'``, ``'simple_fpn'`` or ``'multilayer'``, or a dict with ``type=`` one of
            those plus its options (``channels``; ``project`` for paper; ``layers`` for multilayer). Defaults to
            ``'paper'``.
        out_strides (Sequence[int]): Output strides, strictly increasing. Defaults to ``(4, 8, 16, 32)``.
        skip_strides (Sequence[int]): Entries of ``out_strides`` not to compute. Defaults to ().
        checkpoint (str, optional): A local Hugging Face folder (``save_pretrained`` layout) or Meta's DINOv3
            ``.pth``, loaded by ``init_weights``; relative paths are also looked up in the repository root. None:
            random weights, with a warning. Defaults to None.
        frozen (bool): Freeze the ViT: no gradients (``requires_grad=False``, forward under ``no_grad``), eval mode
            kept through ``train()``. Defaults to False.
        with_cp (bool): Gradient checkpointing of the ViT blocks (transformers' own) in training; refused with
            ``frozen=True``. Defaults to False.
        init_device (str): Where the ViT is built: ``'cpu'`` (random weights until ``init_weights``) or ``'meta'``
            (no memory; ``init_weights`` assigns the checkpoint's tensors). Defaults to ``'cpu'``.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=PATH)``, the same as ``checkpoint=PATH``.
            Defaults to None.

    Attributes:
        out_strides (tuple[int, ...]): Strides of the outputs.
        out_channels (tuple[int, ...]): Channels of the outputs.
        embed_dim (int): ViT width.
        patch_size (int): ViT patch size.

    Example:
        >>> import torch
        >>> from mmfusion.registry import MODELS
        >>> backbone = MODELS.build(dict(type='mmfusion.DINOv3ViT', arch='vitb16', pyramid='paper',
        ...                              checkpoint='checkpoints/dinov3-vitb16-pretrain-lvd1689m'))  # reads no file
        >>> backbone.init_weights()  # doctest: +SKIP
        >>> [tuple(f.shape) for f in backbone(torch.randn(1, 3, 500, 750))]
        [(1, 128, 125, 188), (1, 256, 63, 94), (1, 512, 32, 47), (1, 1024, 16, 24)]
    """

    def __init__(self,
                 arch: Union[str, dict] = 'vitb16',
                 pyramid: Union[str, dict] = 'paper',
                 out_strides: Sequence[int] = (4, 8, 16, 32),
                 skip_strides: Sequence[int] = (),
                 checkpoint: Optional[str] = None,
                 frozen: bool = False,
                 with_cp: bool = False,
                 init_device: str = 'cpu',
                 init_cfg=None):
        super().__init__(frozen=frozen, checkpoint=checkpoint, init_cfg=init_cfg)
        self._check_with_cp(with_cp)
        if init_device not in ('cpu', 'meta'):
            raise ValueError(f"init_device must be 'cpu' or 'meta', got {init_device!r}")
        self.arch = arch if isinstance(arch, str) else arch.get('preset')
        config = dinov3_config(arch)
        self.config = config
        self.embed_dim = config.hidden_size
        patch = config.patch_size
        if not isinstance(patch, int):
            if len(set(patch)) != 1:
                raise ValueError(f'Only square patches are supported, got patch_size={patch}')
            patch = patch[0]
        self.patch_size = int(patch)
        self.out_strides = check_strides(out_strides)
        self.skip_strides = check_skip_strides(skip_strides, self.out_strides)
        with torch.device(init_device):  # 'meta': shapes only, nothing allocated or initialised
            self.vit = DINOv3ViTModel(config)
        self._built_on_meta = init_device == 'meta'
        self.pyramid = self._build_pyramid(pyramid, config)
        self.out_channels = tuple(self.pyramid.out_channels)
        self._taps = frozenset(self.pyramid.taps)
        self._num_prefix = 1 + config.num_register_tokens
        # The mask token only serves masked-image pretraining; it would be an unused parameter under DDP.
        self.vit.embeddings.mask_token.requires_grad_(False)
        # Blocks past the deepest tap never run: drop them (no dead weights, no unused parameters under DDP).
        self._num_blocks = max(self._taps) + 1
        if self._num_blocks < config.num_hidden_layers:
            self.vit.model.layer = self.vit.model.layer[:self._num_blocks]

        if init_device != 'meta':  # on meta, init_weights refuses to go on without a checkpoint
            self._warn_if_random(self._how_to_get())
        if with_cp:
            self.vit.gradient_checkpointing_enable(gradient_checkpointing_kwargs=dict(use_reentrant=False))
        self._set_frozen()
        # A state dict loaded into a model built on meta (a trained checkpoint, without init_weights) is assigned.
        self.register_load_state_dict_pre_hook(self._assign_if_meta)

    pretrained_modules = ('vit', )
    # DINOv3 was pretrained on ImageNet-normalised images (SPEC §5); the data preprocessor must give them.
    input_mean, input_std = IMAGENET_MEAN, IMAGENET_STD

    @property
    def on_meta(self) -> bool:
        """Whether some ViT weight is still on the meta device (built with ``init_device='meta'``, not loaded)."""
        # parameters()/buffers(), not state_dict(): inside an FSDP wrapper state_dict() would gather the weights.
        tensors = itertools.chain(self.vit.parameters(), self.vit.buffers())
        return self._built_on_meta and any(t.is_meta for t in tensors)

    def init_weights(self) -> None:
        """Load ``checkpoint`` into the ViT (see :class:`VFMBackbone`); on the meta device a checkpoint is
        required."""
        if self.checkpoint is None and self.on_meta:
            raise ValueError(f"{type(self).__name__}(arch={self.arch or 'dict'!r}) was built with init_device='meta', "
                             'which has no random weights, and checkpoint=None gives it none to load; pass '
                             "checkpoint=PATH, or init_device='cpu' for random weights")
        super().init_weights()

    def materialize(self, state: Optional[Mapping[str, Tensor]] = None) -> None:
        """Give the ViT built on the meta device real (CPU) tensors.

        Entries of ``state`` (ViT keys, e.g. a converted checkpoint) with the right shape become the weights without a
        copy (``load_state_dict(assign=True)``, cast to the ViT's dtype). Every tensor still on meta afterwards is
        allocated and initialised as transformers initialises its module (other tensors of that module are kept).
        The parameters stay the same objects (their contents are swapped in): MMEngine's ``init_weights`` bookkeeping,
        optimizers and wrappers refer to them.

        Args:
            state (Mapping[str, Tensor], optional): Tensors to assign. Defaults to None (initialise everything).
        """
        vit = self.vit
        own = vit.state_dict()
        assigned = {k: v.to(own[k].dtype) for k, v in (state or {}).items()
                    if k in own and own[k].is_meta and tuple(v.shape) == tuple(own[k].shape)}
        swap = torch.__future__.get_swap_module_params_on_conversion()
        torch.__future__.set_swap_module_params_on_conversion(True)  # assign and to_empty keep Parameter objects
        try:
            if assigned:
                vit.load_state_dict(assigned, strict=False, assign=True)
            self._init_remaining_meta()
        finally:
            torch.__future__.set_swap_module_params_on_conversion(swap)
        self._built_on_meta = False

    def _init_remaining_meta(self) -> None:
        vit = self.vit
        for module in vit.modules():
            local = dict(module.named_parameters(recurse=False))
            local.update(module.named_buffers(recurse=False))
            if not any(t.is_meta for t in local.values()):
                continue
            # detach(): to_empty swaps a CPU parameter's data in place; the detached view keeps the given values.
            keep = {n: t.detach() for n, t in local.items() if not t.is_meta}
            module.to_empty(device='cpu', recurse=False)
            vit._init_weights(module)  # transformers' own initialisation (RoPE frequencies, zero mask token, ...)
            with torch.no_grad():
                for name, tensor in keep.items():
                    getattr(module, name).copy_(tensor)

    def _assign_if_meta(self, module, state_dict, prefix, *args) -> None:
        if self.on_meta:
            vit = prefix + 'vit.'
            self.materialize({k[len(vit):]: v for k, v in state_dict.items() if k.startswith(vit)})

    def _build_pyramid(self, pyramid: Union[str, dict], config: DINOv3ViTConfig) -> nn.Module:
        return build_pyramid(pyramid, embed_dim=config.hidden_size, num_layers=config.num_hidden_layers,
                             patch_size=self.patch_size, out_strides=self.out_strides, skip=self.skip_strides)

    def _how_to_get(self) -> str:
        if self.arch in _HUB_IDS:
            hub = _HUB_IDS[self.arch]
            return (f'DINOv3 weights are gated (DINOv3 License): accept the terms at https://huggingface.co/{hub} '
                    f'and run `huggingface-cli download {hub} --local-dir checkpoints/{hub.split("/")[1]}` (a Hugging '
                    f'Face folder), or put Meta\'s {_META_FILES[self.arch]} (https://github.com/facebookresearch/'
                    'dinov3, link sent after accepting the licence) in checkpoints/; a .pth is converted on load.')
        return ('Pass a DINOv3 checkpoint: a Hugging Face save_pretrained folder or Meta\'s .pth (see '
                'https://github.com/facebookresearch/dinov3).')

    def load_checkpoint(self, checkpoint: str) -> LoadReport:
        """Load a Hugging Face folder or Meta's ``.pth`` into ``self.vit`` (see :mod:`.checkpoint_io`).

        Args:
            checkpoint (str): Path of the folder or file.

        Returns:
            LoadReport: Keys loaded, missing (allowed), unexpected and skipped.

        Raises:
            FileNotFoundError: The path does not exist; the message says how to get the weights.
            CheckpointMismatchError: Essential keys are missing or mis-shaped; all are named.
            ValueError: The folder's ``config.json`` disagrees with ``arch`` on a field that changes the forward.
        """
        path = resolve_checkpoint(checkpoint, self._how_to_get())
        if osp.isdir(path):
            state, hf_config = read_hf_folder(path)
            self._check_hf_config(hf_config, path)
        else:
            state = unwrap_state_dict(safe_load_file(path))
        state = dinov3_to_hf(state)
        own = self.vit.state_dict()
        kept = self._num_blocks

        def dropped_block(key: str) -> bool:
            parts = key.split('.')
            return key.startswith('model.layer.') and parts[2].isdigit() and int(parts[2]) >= kept

        if self.on_meta:
            self.materialize(state)  # load_into's copy is then a copy of each tensor onto itself (free)
        # The mask token only serves masked-image pretraining; an empty register-token tensor has nothing to load.
        return load_into(self.vit, state, source=path, skip=dropped_block,
                  optional=lambda k: k == 'embeddings.mask_token' or own[k].numel() == 0)

    def _check_hf_config(self, hf_config: dict, path: str) -> None:
        if not hf_config:
            return
        if hf_config.get('model_type', 'dinov3_vit') != 'dinov3_vit':
            raise ValueError(f'{path} holds a {hf_config["model_type"]!r} model, not dinov3_vit')
        ours = self.config.to_dict()
        defaults = DINOv3ViTConfig().to_dict()
        diff = [f'{k}: arch has {ours[k]!r}, config.json has {hf_config.get(k, defaults[k])!r}'
                for k in _FORWARD_FIELDS if _norm(hf_config.get(k, defaults[k])) != _norm(ours[k])]
        if diff:
            raise ValueError(f'{path}/config.json does not match arch={self.arch or "dict"}: ' + '; '.join(diff))

    def get_num_layers(self) -> int:
        """Number of ViT blocks kept (for layer-wise learning-rate decay)."""
        return len(self.vit.model.layer)

    def get_layer_id(self, name: str) -> int:
        """Depth of a parameter for layer-wise lr decay: 0 for the embeddings, ``i + 1`` for block ``i``, and
        ``num_layers + 1`` for the rest (final norm, pyramid).

        Args:
            name (str): Parameter name relative to this module (``'vit.model.layer.3.mlp.up_proj.weight'``).
        """
        if name.startswith('vit.embeddings.'):
            return 0
        if name.startswith('vit.model.layer.'):
            return int(name.split('.')[3]) + 1
        return self.get_num_layers() + 1

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Pyramid of ``x``.

        Args:
            x (Tensor): (B, 3, H, W), ImageNet-normalised.

        Returns:
            tuple[Tensor, ...]: One (B, C_i, ceil(H / s_i), ceil(W / s_i)) map per ``out_strides`` entry (None for
            ``skip_strides``).
        """
        if self.on_meta:
            raise RuntimeError(f"{type(self).__name__} was built with init_device='meta' and has no weights yet: call "
                               'init_weights() (loads checkpoint) or load a trained checkpoint before running it')
        size = tuple(x.shape[-2:])
        padded = pad_to_multiple(x, self.patch_size)
        with self._grad_context():
            maps = self.block_maps(padded)
        outs = self.pyramid(maps, tuple(padded.shape[-2:]))
        return tuple(None if o is None else crop_to_stride(o, size, s) for o, s in zip(outs, self.out_strides))

    def block_maps(self, x: Tensor) -> Dict[int, Tensor]:
        """The final-norm patch-token maps of the blocks the pyramid reads.

        Args:
            x (Tensor): (B, 3, H, W) with H, W multiples of the patch size.

        Returns:
            dict[int, Tensor]: Block index -> (B, embed_dim, H / patch, W / patch).
        """
        vit = self.vit
        x = x.to(vit.embeddings.patch_embeddings.weight.dtype)
        hidden = vit.embeddings(x)
        rope = vit.rope_embeddings(x)
        b, h, w = x.shape[0], x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        maps = {}
        for i, layer in enumerate(vit.model.layer):
            hidden = layer(hidden, position_embeddings=rope)
            if i in self._taps:
                tokens = vit.norm(hidden)[:, self._num_prefix:]
                # contiguous: the transposed view is channels-last, which halves the speed of the pyramid's convs.
                maps[i] = tokens.transpose(1, 2).reshape(b, -1, h, w).contiguous()
        return maps


def _norm(value):
    # config.json stores tuples as lists.
    return tuple(value) if isinstance(value, (list, tuple)) else value
