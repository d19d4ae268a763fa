"""Reading the released weights of the visual foundation models, offline and safely.

One place for every checkpoint layout the backbones accept:

- a local Hugging Face folder (``save_pretrained`` layout: ``config.json`` plus ``model.safetensors``, sharded
  safetensors with an index, or ``pytorch_model.bin``);
- Meta's official DINOv3 ``.pth`` (keys ``patch_embed.proj.*``, ``cls_token``, ``storage_tokens``,
  ``blocks.N.attn.qkv.*``, ``blocks.N.ls1.gamma``, ``blocks.N.mlp.fc1.*``, ``norm.*``, ...), converted here to the
  key layout of ``transformers``' ``DINOv3ViTModel``;
- an official SAM2 / SAM2.1 ``.pt`` (``{'model': state_dict}`` with ``image_encoder.trunk.*`` and
  ``image_encoder.neck.*``).

Pickled files are read with ``torch.load(weights_only=True)`` (tensors only, no code runs), safetensors with
``safetensors``. :func:`load_into` compares the converted keys with the module's, raises
:class:`CheckpointMismatchError` naming every essential key that is missing or has the wrong shape, and logs the
keys it did not use.

The default place for checkpoints is ``checkpoints/`` in the repository root (git-ignored); a relative path is looked
up in the working directory first, then there.

Example:
    >>> from mmfusion.models.backbones.checkpoint_io import read_state_dict, dinov3_to_hf
    >>> sd = dinov3_to_hf(read_state_dict(  # doctest: +SKIP
    ...     'checkpoints/dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth'))
"""
from __future__ import annotations

import json
import logging
import os.path as osp
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import torch
from mmengine.logging import print_log

StateDict = Dict[str, torch.Tensor]

#: ``checkpoints/`` beside the ``mmfusion`` package, i.e. in the repository root of a source checkout.
CHECKPOINT_DIR = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))), 'checkpoints')

_HF_WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin')
_HF_INDEX_FILES = ('model.safetensors.index.json', 'pytorch_model.bin.index.json')


class CheckpointMismatchError(KeyError):
    """A checkpoint lacks essential keys of the module, or holds them with the wrong shape.

    A :class:`KeyError`, so that ``except KeyError`` catches it; ``str()`` gives the plain message (KeyError would
    otherwise quote it).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ''


@dataclass
class LoadReport:
    """What :func:`load_into` did with a state dict.

    Attributes:
        loaded (list[str]): Module keys set from the checkpoint.
        missing (list[str]): Module keys the checkpoint lacks that were allowed to be missing.
        unexpected (list[str]): Checkpoint keys the module has no use for.
        skipped (list[str]): Checkpoint keys left out on purpose (e.g. blocks the backbone never runs).
    """
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------------------
# Locating and reading files
# --------------------------------------------------------------------------------------------------------------

def resolve_checkpoint(path: str, how_to_get: str = '') -> str:
    """The existing file or folder that ``path`` names.

    A relative path is tried in the working directory first, then under the repository root (so
    ``'checkpoints/x.pt'`` works from anywhere in a source checkout).

    Args:
        path (str): File or folder, ``~`` expanded.
        how_to_get (str): Text appended to the error, saying how to obtain the weights. Defaults to ''.

    Returns:
        str: The path that exists.

    Raises:
        FileNotFoundError: Neither place has it; the message lists where we looked.
    """
    path = osp.expanduser(str(path))
    tried = [osp.abspath(path)]
    if osp.exists(path):
        return path
    if not osp.isabs(path):
        in_repo = osp.join(osp.dirname(CHECKPOINT_DIR), path)
        tried.append(in_repo)
        if osp.exists(in_repo):
            return in_repo
    where = ' or '.join(repr(t) for t in dict.fromkeys(tried))
    raise FileNotFoundError(f'Checkpoint {path!r} not found (looked at {where}). The default place for '
                            f'checkpoints is {CHECKPOINT_DIR!r}. {how_to_get}'.rstrip())


def safe_load_file(path: str) -> dict:
    """Read one weights file without executing pickled code.

    Args:
        path (str): A ``.safetensors`` file, or a torch pickle (``.pth``, ``.pt``, ``.bin``, ...).

    Returns:
        dict: The file's top-level object (a state dict, or a dict wrapping one).
    """
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        return load_file(path, device='cpu')
    # weights_only: a checkpoint is data; refuse anything that would run code while unpickling.
    obj = torch.load(path, map_location='cpu', weights_only=True, mmap=_is_zip(path))
    if not isinstance(obj, Mapping):
        raise TypeError(f'{path!r} holds a {type(obj).__name__}, not a state dict')
    return dict(obj)


def _is_zip(path: str) -> bool:
    # mmap only works for the zip format of torch >= 1.6; old pickles must be read fully.
    import zipfile
    return zipfile.is_zipfile(path)


def read_hf_folder(folder: str) -> Tuple[StateDict, dict]:
    """The weights and ``config.json`` of a ``save_pretrained`` folder.

    Args:
        folder (str): A folder with ``model.safetensors`` (or sharded safetensors with
            ``model.safetensors.index.json``, or ``pytorch_model.bin``) and, usually, ``config.json``.

    Returns:
        tuple[dict, dict]: The state dict and the config (empty when the folder has no ``config.json``).
    """
    config = {}
    if osp.isfile(osp.join(folder, 'config.json')):
        with open(osp.join(folder, 'config.json'), encoding='utf-8') as f:
            config = json.load(f)
    for name in _HF_WEIGHT_FILES:
        if osp.isfile(osp.join(folder, name)):
            return safe_load_file(osp.join(folder, name)), config
    for name in _HF_INDEX_FILES:
        if osp.isfile(osp.join(folder, name)):
            with open(osp.join(folder, name), encoding='utf-8') as f:
                shards = sorted(set(json.load(f)['weight_map'].values()))
            state: StateDict = {}
            for shard in shards:
                state.update(safe_load_file(osp.join(folder, shard)))
            return state, config
    raise FileNotFoundError(f'{folder!r} is a folder but holds none of {_HF_WEIGHT_FILES + _HF_INDEX_FILES}; '
                            'expected a Hugging Face save_pretrained folder')


def unwrap_state_dict(obj: Mapping, wrappers: Iterable[str] = ('model', 'state_dict', 'teacher')) -> StateDict:
    """The tensor dict inside a training checkpoint (``{'model': ...}``, ``{'state_dict': ...}``, ...).

    Args:
        obj (Mapping): What :func:`safe_load_file` returned.
        wrappers (Iterable[str]): Keys that may hold the state dict, tried in order. Defaults to
            ``('model', 'state_dict', 'teacher')``.

    Returns:
        dict[str, Tensor]: Only the tensor entries.
    """
    for key in wrappers:
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def read_state_dict(path: str, how_to_get: str = '') -> StateDict:
    """Resolve ``path`` and read its tensors (an HF folder, a safetensors file or a torch pickle).

    Args:
        path (str): See :func:`resolve_checkpoint`.
        how_to_get (str): Appended to the not-found error. Defaults to ''.

    Returns:
        dict[str, Tensor]: The state dict, unwrapped from ``{'model': ...}`` and the like.
    """
    path = resolve_checkpoint(path, how_to_get)
    if osp.isdir(path):
        return read_hf_folder(path)[0]
    return unwrap_state_dict(safe_load_file(path))


# --------------------------------------------------------------------------------------------------------------
# DINOv3: Meta's layout and older Hugging Face layouts -> transformers' DINOv3ViTModel
# --------------------------------------------------------------------------------------------------------------

# Meta's key (after the qkv split below) -> transformers' key. Our own table, written from the two codebases:
# the attention projection is ``o_proj``, layer scales ``lambda1``, the plain MLP ``up_proj``/``down_proj`` and
# the SwiGLU MLP (w1, w2, w3) = (gate, up, down) since Meta computes w3(silu(w1 x) * w2 x).
_DINOV3_META_RULES: Tuple[Tuple[str, str], ...] = (
    (r'^cls_token$', 'embeddings.cls_token'),
    (r'^mask_token$', 'embeddings.mask_token'),
    (r'^storage_tokens$', 'embeddings.register_tokens'),
    (r'^patch_embed\.proj\.', 'embeddings.patch_embeddings.'),
    (r'^blocks\.(\d+)\.norm(\d)\.', r'model.layer.\1.norm\2.'),
    (r'^blocks\.(\d+)\.attn\.proj\.', r'model.layer.\1.attention.o_proj.'),
    (r'^blocks\.(\d+)\.attn\.(q|k|v)_proj\.', r'model.layer.\1.attention.\2_proj.'),
    (r'^blocks\.(\d+)\.ls(\d)\.gamma$', r'model.layer.\1.layer_scale\2.lambda1'),
    (r'^blocks\.(\d+)\.mlp\.fc1\.', r'model.layer.\1.mlp.up_proj.'),
    (r'^blocks\.(\d+)\.mlp\.fc2\.', r'model.layer.\1.mlp.down_proj.'),
    (r'^blocks\.(\d+)\.mlp\.w1\.', r'model.layer.\1.mlp.gate_proj.'),
    (r'^blocks\.(\d+)\.mlp\.w2\.', r'model.layer.\1.mlp.up_proj.'),
    (r'^blocks\.(\d+)\.mlp\.w3\.', r'model.layer.\1.mlp.down_proj.'),
    (r'^norm\.', 'norm.'),
)
# Meta keys with no counterpart in transformers' model: the RoPE periods are recomputed from rope_theta, and the
# qkv bias mask only zeroes the key bias (transformers has no key bias at all).
_DINOV3_META_DROP = (r'^rope_embed\.periods$', r'\.attn\.qkv\.bias_mask$', r'^local_cls_norm\.', r'^projectors\.')


def is_dinov3_meta_layout(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state_dict`` uses Meta's DINOv3 key layout (``blocks.N.attn.qkv``, ``patch_embed.proj``)."""
    return any(k.startswith('patch_embed.proj.') for k in state_dict) or any('.attn.qkv.' in k for k in state_dict)


def dinov3_meta_to_hf(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Convert Meta's DINOv3 ViT state dict to ``transformers``' ``DINOv3ViTModel`` keys.

    ``qkv`` is split into ``q_proj``/``k_proj``/``v_proj`` (the key bias is dropped: Meta masks it to zero with
    ``bias_mask``, transformers has none), ``mask_token`` gains the token axis (``(1, D)`` -> ``(1, 1, D)``).

    Args:
        state_dict (Mapping[str, Tensor]): Meta's keys, optionally under ``backbone.`` (training checkpoints).

    Returns:
        dict[str, Tensor]: The converted state dict. Keys with no known counterpart keep their name, so that
        :func:`load_into` reports them as unexpected.
    """
    state = {(k[len('backbone.'):] if k.startswith('backbone.') else k): v for k, v in state_dict.items()}
    out: StateDict = {}
    for key, value in state.items():
        if any(re.search(p, key) for p in _DINOV3_META_DROP):
            continue
        qkv = re.match(r'^(blocks\.\d+\.attn\.)qkv\.(weight|bias)$', key)
        if qkv:
            q, k, v = value.chunk(3, dim=0)
            prefix, kind = qkv.groups()
            parts = {'q': q, 'v': v}
            if kind == 'weight':
                parts['k'] = k
            elif (prefix + 'qkv.bias_mask') not in state and k.abs().max() > 0:
                # Without a mask Meta would add this bias; transformers cannot, so the features would differ.
                print_log(f'DINOv3 checkpoint: {key} has a non-zero key bias and no bias_mask; transformers\' '
                          'DINOv3 has no key bias, so it is dropped', logger='current', level=logging.WARNING)
            for name, tensor in parts.items():
                out[_rename(f'{prefix}{name}_proj.{kind}')] = tensor
            continue
        new = _rename(key)
        if new is None:
            out[key] = value
            continue
        if new == 'embeddings.mask_token' and value.dim() == 2:
            value = value.unsqueeze(1)
        out[new] = value
    return out


def _rename(key: str) -> Optional[str]:
    for pattern, repl in _DINOV3_META_RULES:
        if re.search(pattern, key):
            return re.sub(pattern, repl, key)
    return None


def dinov3_to_hf(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Any supported DINOv3 layout -> ``transformers`` 5's ``DINOv3ViTModel`` keys.

    Accepts Meta's layout (see :func:`dinov3_meta_to_hf`), the Hub's ``save_pretrained`` layout of transformers 4
    (``layer.N.*`` at the top level) and transformers 5's (``model.layer.N.*``).

    Args:
        state_dict (Mapping[str, Tensor]): The checkpoint's tensors.

    Returns:
        dict[str, Tensor]: The converted state dict.
    """
    if is_dinov3_meta_layout(state_dict):
        return dinov3_meta_to_hf(state_dict)
    # transformers 4 saved the encoder blocks as ``layer.N``; transformers 5 nests them as ``model.layer.N``.
    return {(('model.' + k) if k.startswith('layer.') else k): v for k, v in state_dict.items()}


# --------------------------------------------------------------------------------------------------------------
# SAM2
# --------------------------------------------------------------------------------------------------------------

def sam2_image_encoder(state_dict: Mapping[str, torch.Tensor], prefix: str = 'image_encoder.') -> StateDict:
    """The image-encoder part of an official SAM2 / SAM2.1 state dict, with ``prefix`` removed.

    Args:
        state_dict (Mapping[str, Tensor]): ``checkpoint['model']`` (see :func:`unwrap_state_dict`).
        prefix (str): Where the encoder lives. Defaults to ``'image_encoder.'``.

    Returns:
        dict[str, Tensor]: Keys ``trunk.*`` and ``neck.*``.

    Raises:
        CheckpointMismatchError: No key starts with ``prefix`` (not a SAM2 checkpoint).
    """
    out = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not out:
        sample = ', '.join(list(state_dict)[:5])
        raise CheckpointMismatchError(f'No key starts with {prefix!r}: not an official SAM2 checkpoint '
                                      f"({{'model': {{'image_encoder.trunk.*', ...}}}}); its first keys are: {sample}")
    return out


# --------------------------------------------------------------------------------------------------------------
# Loading with a report
# --------------------------------------------------------------------------------------------------------------

def load_into(module: torch.nn.Module,
              state_dict: Mapping[str, torch.Tensor],
              source: str,
              optional: Callable[[str], bool] = lambda key: False,
              skip: Callable[[str], bool] = lambda key: False) -> LoadReport:
    """Copy ``state_dict`` into ``module``, refusing to leave essential weights at random.

    Args:
        module (nn.Module): Target; its ``state_dict()`` keys are the reference.
        state_dict (Mapping[str, Tensor]): Already converted to the module's key names.
        source (str): Where the weights came from, for messages.
        optional (Callable[[str], bool]): Module keys that may be missing (reported as a warning). Defaults to
            none.
        skip (Callable[[str], bool]): Checkpoint keys to leave out on purpose (logged at INFO). Defaults to none.

    Returns:
        LoadReport: What was loaded, missing, unexpected and skipped.

    Raises:
        CheckpointMismatchError: Essential keys are missing or have another shape; every one is named.
    """
    own = module.state_dict()
    report = LoadReport()
    report.skipped = sorted(k for k in state_dict if k not in own and skip(k))
    report.unexpected = sorted(k for k in state_dict if k not in own and not skip(k))
    absent = [k for k in own if k not in state_dict]
    essential = [k for k in absent if not optional(k)]
    report.missing = [k for k in absent if optional(k)]
    wrong_shape = [f'{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}'
                   for k, v in own.items() if k in state_dict and state_dict[k].shape != v.shape]
    if essential or wrong_shape:
        lines = [f'{source} does not fit {type(module).__name__}.']
        if essential:
            lines.append(f'Missing {len(essential)} essential key(s): {", ".join(essential)}.')
        if wrong_shape:
            lines.append(f'Wrong shape for {len(wrong_shape)} key(s): {"; ".join(wrong_shape)}.')
        if report.unexpected:
            lines.append(f'Keys the model does not have ({len(report.unexpected)}): '
                         f'{", ".join(report.unexpected[:40])}{" ..." if len(report.unexpected) > 40 else ""}.')
        raise CheckpointMismatchError(' '.join(lines))
    report.loaded = [k for k in own if k in state_dict]
    module.load_state_dict({k: state_dict[k] for k in report.loaded}, strict=False)
    print_log(f'Loaded {len(report.loaded)} tensors into {type(module).__name__} from {source}', logger='current')
    if report.missing:
        print_log(f'{source}: {len(report.missing)} non-essential key(s) missing, left as initialised: '
                  f'{", ".join(report.missing)}', logger='current', level=logging.WARNING)
    if report.unexpected:
        print_log(f'{source}: {len(report.unexpected)} key(s) not used by {type(module).__name__}: '
                  f'{", ".join(report.unexpected)}', logger='current', level=logging.WARNING)
    if report.skipped:
        print_log(f'{source}: {len(report.skipped)} key(s) left out on purpose (modules this backbone never runs)',
                  logger='current', level=logging.INFO)
    return report
