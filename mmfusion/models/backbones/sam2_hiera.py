"""SAM2 / SAM2.1 Hiera image encoder as a multi-stride backbone, on top of ``sam2``'s own modules.

The trunk is ``sam2.modeling.backbones.hieradet.Hiera`` and the optional neck ``sam2``'s ``FpnNeck``; this module
pads the input, runs the trunk's own patch embedding, positional embedding and blocks, but only up to the last stage
it has to return (an auxiliary injected at OS16 never runs stage 4, and stage 4's blocks are not even built).
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple, Union

from sam2.modeling.backbones.hieradet import Hiera
from sam2.modeling.backbones.image_encoder import FpnNeck
from sam2.modeling.position_encoding import PositionEmbeddingSine
from torch import Tensor
from torch.utils.checkpoint import checkpoint as grad_checkpoint

from mmfusion.metrics import DEFAULT_STRIDES
from mmfusion.registry import MODELS
from mmfusion.utils.images import IMAGENET_MEAN, IMAGENET_STD

from .base_vfm import VFMBackbone, check_skip_strides, check_strides, crop_to_stride, pad_to_multiple
from .checkpoint_io import LoadReport, load_into, read_state_dict, sam2_image_encoder

# SAM2.1's trunk configs (sam2/configs/sam2.1/sam2.1_hiera_*.yaml), every field spelled out.
SAM2_ARCHS: Dict[str, dict] = {
    'tiny': dict(embed_dim=96, num_heads=1, stages=(1, 2, 7, 2), global_att_blocks=(5, 7, 9),
                 window_spec=(8, 4, 14, 7), window_pos_embed_bkg_spatial_size=(7, 7), q_pool=3),
    'small': dict(embed_dim=96, num_heads=1, stages=(1, 2, 11, 2), global_att_blocks=(7, 10, 13),
                  window_spec=(8, 4, 14, 7), window_pos_embed_bkg_spatial_size=(7, 7), q_pool=3),
    'base_plus': dict(embed_dim=112, num_heads=2, stages=(2, 3, 16, 3), global_att_blocks=(12, 16, 20),
                      window_spec=(8, 4, 14, 7), window_pos_embed_bkg_spatial_size=(14, 14), q_pool=3),
    'large': dict(embed_dim=144, num_heads=2, stages=(2, 6, 36, 4), global_att_blocks=(23, 33, 43),
                  window_spec=(8, 4, 16, 8), window_pos_embed_bkg_spatial_size=(7, 7), q_pool=3),
}
# The image encoder's FpnNeck, identical in the four SAM2.1 configs.
SAM2_NECK = dict(d_model=256, fpn_top_down_levels=(2, 3), fpn_interp_model='nearest', fuse_type='sum')

_CHECKPOINT_FILES = {name: f'sam2.1_hiera_{name}.pt' for name in SAM2_ARCHS}
_HUB_IDS = {name: f'facebook/sam2.1-hiera-{name.replace("_", "-")}' for name in SAM2_ARCHS}

# sam2's PatchEmbed: 7x7 conv, stride 4.
_PATCH_STRIDE = 4


@MODELS.register_module()
class SAM2Hiera(VFMBackbone):
    """SAM2 / SAM2.1 Hiera trunk (``sam2``'s ``Hiera`` inside, as ``self.trunk``), optionally with its FPN neck.

    ``output='trunk'`` (default) returns the raw trunk stages, the maps the reference fuses (Hiera-B+: 112 / 224 /
    448 / 896 channels at OS 4 / 8 / 16 / 32). ``output='neck'`` returns sam2's ``FpnNeck`` outputs (256 channels;
    top-down only into the two coarsest levels, as in SAM2.1) and needs every stage.

    Why a class of its own beside :class:`~mmfusion.models.backbones.HFBackbone` (which runs ``transformers``' SAM2
    Hiera from Hugging Face folders): this one runs ``sam2``'s own modules on the official SAM2 / SAM2.1 ``.pt``
    checkpoints the paper uses, which are not Hugging Face folders, and offers SAM2's FPN neck.

    The input (ImageNet-normalised, any size) is zero-padded at the bottom/right to a multiple of 32 (more if the
    first window size asks for it, so the tiled window positional embedding fits); outputs are cropped back to
    ``ceil(H / s) x ceil(W / s)``.

    Args:
        arch (str | dict): ``'tiny'``, ``'small'``, ``'base_plus'``, ``'large'`` (SAM2.1 configs), or a dict of
            ``Hiera`` arguments, optionally with ``preset=`` to start from (e.g. ``dict(preset='base_plus',
            drop_path_rate=0.1)``). Defaults to ``'base_plus'``.
        out_strides (Sequence[int]): Strides to return, a subset of the stage strides (4, 8, 16, 32). The trunk
            stops after the last stage needed. Defaults to ``(4, 8, 16, 32)``.
        skip_strides (Sequence[int]): Entries of ``out_strides`` not to return (None in the output); the trunk
            still runs a skipped stage when a later one needs it. Defaults to ().
        checkpoint (str, optional): Official SAM2 / SAM2.1 checkpoint (``{'model': {'image_encoder.trunk.*',
            'image_encoder.neck.*', ...}}``), loaded by ``init_weights``; relative paths are also looked up in the
            repository root. None: random weights, with a warning. Defaults to None.
        frozen (bool): No gradients, eval mode kept through ``train()``, forward under ``no_grad`` (trunk and neck
            are all pretrained). Defaults to True (the auxiliary's setting in the paper).
        output (str): ``'trunk'`` or ``'neck'``. Defaults to ``'trunk'``.
        neck_cfg (dict, optional): Overrides of the ``FpnNeck`` arguments in :data:`SAM2_NECK`. Defaults to None.
        with_cp (bool): Gradient checkpointing per block when training (refused with ``frozen=True``). Defaults to
            False.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=PATH)``, the same as ``checkpoint=PATH``.
            Defaults to None.

    Attributes:
        out_strides (tuple[int, ...]): Strides of the outputs.
        out_channels (tuple[int, ...]): Channels of the outputs.
        stage_strides (tuple[int, ...]): Strides of all trunk stages.
        pad_multiple (int): The input is padded to a multiple of this.

    Example:
        >>> import torch
        >>> from mmfusion.registry import MODELS
        >>> aux = MODELS.build(dict(type='mmfusion.SAM2Hiera', arch='base_plus', out_strides=(16, ),
        ...                         checkpoint='checkpoints/sam2.1_hiera_base_plus.pt'))  # reads no file
        >>> aux.init_weights()  # doctest: +SKIP
        >>> aux.out_channels, [tuple(f.shape) for f in aux(torch.randn(1, 3, 512, 1024))]
        ((448,), [(1, 448, 32, 64)])
    """

    def __init__(self,
                 arch: Union[str, dict] = 'base_plus',
                 out_strides: Sequence[int] = DEFAULT_STRIDES,
                 skip_strides: Sequence[int] = (),
                 checkpoint: Optional[str] = None,
                 frozen: bool = True,
                 output: str = 'trunk',
                 neck_cfg: Optional[dict] = None,
                 with_cp: bool = False,
                 init_cfg=None):
        super().__init__(frozen=frozen, checkpoint=checkpoint, init_cfg=init_cfg)
        self._check_with_cp(with_cp)
        self.arch = arch if isinstance(arch, str) else arch.get('preset')
        trunk_cfg = self._trunk_cfg(arch)
        if output not in ('trunk', 'neck'):
            raise ValueError(f"output must be 'trunk' or 'neck', got {output!r}")
        self.output = output
        self.with_cp = with_cp
        self.trunk = Hiera(**trunk_cfg)

        q_stride = self.trunk.q_stride[0]
        num_stages = len(self.trunk.stage_ends)
        q_pool = len(self.trunk.q_pool_blocks)
        self.stage_strides = tuple(_PATCH_STRIDE * q_stride**min(i, q_pool) for i in range(num_stages))
        if len(set(self.stage_strides)) != num_stages:
            raise ValueError(f'stages share strides {self.stage_strides}; out_strides cannot name a stage')
        stage_channels = tuple(self.trunk.blocks[e].dim_out for e in self.trunk.stage_ends)
        self.out_strides = check_strides(out_strides, self.stage_strides)
        self.skip_strides = check_skip_strides(skip_strides, self.out_strides)
        self._out_stages = tuple(self.stage_strides.index(s) for s in self.out_strides)
        # The stride-4 grid must tile the first window of the positional embedding, and each q-pool halves it.
        self.pad_multiple = math.lcm(self.stage_strides[-1], _PATCH_STRIDE * self.trunk.window_spec[0])

        if output == 'neck':
            cfg = {**SAM2_NECK, **(neck_cfg or {})}
            self.neck = FpnNeck(
                position_encoding=PositionEmbeddingSine(num_pos_feats=cfg['d_model'], normalize=True, scale=None,
                                                        temperature=10000),
                backbone_channel_list=list(stage_channels[::-1]),
                d_model=cfg['d_model'],
                fpn_top_down_levels=list(cfg['fpn_top_down_levels']),
                fpn_interp_model=cfg['fpn_interp_model'],
                fuse_type=cfg['fuse_type'])
            self.out_channels = (cfg['d_model'], ) * len(self.out_strides)
            last_stage = num_stages - 1  # the FPN's top-down path starts at the coarsest stage
        else:
            if neck_cfg is not None:
                raise ValueError("neck_cfg is only used with output='neck'")
            self.neck = None
            self.out_channels = tuple(stage_channels[i] for i in self._out_stages)
            last_stage = max(i for i, s in zip(self._out_stages, self.out_strides) if s not in self.skip_strides)
        # Blocks after the last needed stage never run: do not keep them (memory, DDP unused parameters).
        self._num_blocks = self.trunk.stage_ends[last_stage] + 1
        self.trunk.blocks = self.trunk.blocks[:self._num_blocks]
        self._stage_ends = {end: i for i, end in enumerate(self.trunk.stage_ends[:last_stage + 1])}

        self._warn_if_random(self._how_to_get())
        self._set_frozen()

    pretrained_modules = ('trunk', 'neck')
    # SAM2 was trained on ImageNet-normalised images (SPEC §5); the data preprocessor must give them.
    input_mean, input_std = IMAGENET_MEAN, IMAGENET_STD

    @staticmethod
    def _trunk_cfg(arch: Union[str, dict]) -> dict:
        if isinstance(arch, str):
            if arch not in SAM2_ARCHS:
                raise KeyError(f'Unknown SAM2 Hiera arch {arch!r}; presets: {sorted(SAM2_ARCHS)}, or pass a dict of '
                               'Hiera arguments')
            return dict(SAM2_ARCHS[arch])
        cfg = dict(arch)
        preset = cfg.pop('preset', None)
        if preset is not None:
            cfg = {**SAM2Hiera._trunk_cfg(preset), **cfg}
        if 'weights_path' in cfg:
            raise ValueError('weights_path would make sam2 load weights unsafely; use checkpoint=')
        return cfg

    def _how_to_get(self) -> str:
        if self.arch in _CHECKPOINT_FILES:
            name = _CHECKPOINT_FILES[self.arch]
            return (f'SAM2.1 weights (Apache-2.0): download https://dl.fbaipublicfiles.com/segment_anything_2/092824/'
                    f'{name} into checkpoints/ (or `huggingface-cli download {_HUB_IDS[self.arch]} {name} '
                    '--local-dir checkpoints`).')
        return 'Pass an official SAM2 / SAM2.1 checkpoint (https://github.com/facebookresearch/sam2).'

    def load_checkpoint(self, checkpoint: str) -> LoadReport:
        """Load the trunk (and neck, if used) from an official SAM2 / SAM2.1 checkpoint.

        Args:
            checkpoint (str): Path of the ``.pt``.

        Returns:
            LoadReport: Keys loaded, unexpected, and skipped (blocks never run, the neck when unused).

        Raises:
            FileNotFoundError: The path does not exist; the message says how to get the weights.
            CheckpointMismatchError: Not a SAM2 checkpoint, or trunk/neck keys missing or mis-shaped; all named.
        """
        state = sam2_image_encoder(read_state_dict(checkpoint, self._how_to_get()))
        kept = self._num_blocks

        def unused(key: str) -> bool:
            parts = key.split('.')
            if key.startswith('trunk.blocks.') and parts[2].isdigit():
                return int(parts[2]) >= kept
            return key.startswith('neck.') and self.neck is None

        return load_into(self, state, source=checkpoint, skip=unused)

    def get_num_layers(self) -> int:
        """Number of Hiera blocks kept (for layer-wise learning-rate decay)."""
        return len(self.trunk.blocks)

    def get_layer_id(self, name: str) -> int:
        """Depth of a parameter for layer-wise lr decay (sam2's own rule for the trunk, the top for the neck).

        Args:
            name (str): Parameter name relative to this module (``'trunk.blocks.3.mlp.layers.0.weight'``).
        """
        if name.startswith('trunk.'):
            return self.trunk.get_layer_id(name[len('trunk.'):])
        return self.get_num_layers() + 1

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Stages (or FPN levels) of ``x``.

        Args:
            x (Tensor): (B, 3, H, W), ImageNet-normalised.

        Returns:
            tuple[Tensor, ...]: One (B, C_i, ceil(H / s_i), ceil(W / s_i)) map per ``out_strides`` entry (None for
            ``skip_strides``).
        """
        size = tuple(x.shape[-2:])
        with self._grad_context():
            stages = self.stage_maps(pad_to_multiple(x, self.pad_multiple))
            if self.neck is not None:
                stages = self.neck(stages)[0]
            return tuple(None if s in self.skip_strides else crop_to_stride(stages[i], size, s)
                         for i, s in zip(self._out_stages, self.out_strides))

    def stage_maps(self, x: Tensor) -> list:
        """Trunk stage outputs (B, C, H / s, W / s), finest first, up to the last kept stage.

        Args:
            x (Tensor): (B, 3, H, W) with H, W multiples of :attr:`pad_multiple`.
        """
        trunk = self.trunk
        h = trunk.patch_embed(x)
        h = h + trunk._get_pos_embed(h.shape[1:3])
        use_cp = self.with_cp and self.training and h.requires_grad
        stages = []
        for i, block in enumerate(trunk.blocks):
            h = grad_checkpoint(block, h, use_reentrant=False) if use_cp else block(h)
            if i in self._stage_ends:
                stages.append(h.permute(0, 3, 1, 2))
        return stages
