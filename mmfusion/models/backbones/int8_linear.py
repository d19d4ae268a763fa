"""Int8 storage for a frozen encoder's Linear layers (``MasterAuxBackbone(aux_dtype='qint8')``).

A frozen auxiliary only runs forward, so its ``nn.Linear`` layers (most of a ViT's or Hiera's weights and time) can
keep int8 weights and run PyTorch's dynamic int8 kernel (fbgemm/x86: activations quantised per call). The state dict
still speaks float: saving writes the dequantised weights under the usual ``weight`` / ``bias`` keys and loading
quantises what it is given, so checkpoints stay interchangeable with a float model.
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor


def _quantise(weight: Tensor) -> Tensor:
    """Symmetric int8 per output channel with scale max|w| / 127.

    That scale (not the observers' max|w| / 127.5) maps each row's largest weight to exactly +-127, so quantising
    the dequantised weights again gives the same integers: a save/load round trip changes nothing.
    """
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127).clamp_min(torch.finfo(torch.float32).tiny).double()
    with warnings.catch_warnings():  # torch's notice that quantised tensors are deprecated; this class is their user
        warnings.simplefilter('ignore')
        return torch.quantize_per_channel(w, scale, torch.zeros_like(scale, dtype=torch.long), 0, torch.qint8)


class FrozenInt8Linear(nn.Module):
    """Forward-only stand-in for a frozen ``nn.Linear`` with int8 weights (CPU).

    It holds no parameters (so no gradient, optimizer state or DDP bucket); ``state_dict`` / ``load_state_dict``
    convert from and to float ``weight`` / ``bias``, with the usual missing-key and shape reports. Having no
    parameters or buffers, its weights are not broadcast by DDP: every rank gets them from the checkpoint it loads
    (``init_weights`` or a trained checkpoint), as a frozen pretrained encoder does.

    Args:
        weight (Tensor): Float weight of shape (out_features, in_features).
        bias (Tensor, optional): Float bias of shape (out_features, ). Default: None.

    Examples:
        >>> import torch
        >>> linear = torch.nn.Linear(8, 4)
        >>> int8 = FrozenInt8Linear.from_linear(linear)
        >>> int8(torch.rand(2, 8)).shape
        torch.Size([2, 4])
        >>> int8.state_dict()['weight'].shape  # float, as nn.Linear saves it
        torch.Size([4, 8])
    """

    def __init__(self, weight: Tensor, bias: Optional[Tensor] = None) -> None:
        super().__init__()
        if weight.dim() != 2:
            raise ValueError(f'FrozenInt8Linear needs a 2-D weight (out_features, in_features), got '
                             f'{tuple(weight.shape)}')
        if weight.is_meta:
            raise ValueError('FrozenInt8Linear quantises real weights; this one is on the meta device (not yet '
                             'loaded): build the encoder on cpu')
        self.out_features, self.in_features = weight.shape
        self.has_bias = bias is not None
        self._pack(weight, bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> FrozenInt8Linear:
        """Quantise ``linear``'s current weights."""
        return cls(linear.weight, linear.bias)

    def _pack(self, weight: Tensor, bias: Optional[Tensor]) -> None:
        bias = None if bias is None else bias.detach().float().contiguous()
        self._packed = torch.ops.quantized.linear_prepack(_quantise(weight), bias)

    @property
    def weight(self) -> Tensor:
        """The dequantised float32 weight, made on each access, for code that reads a Linear's weight (e.g. its
        dtype); writing to it changes nothing (load a state dict instead)."""
        return self.dequantised()[0]

    @property
    def bias(self) -> Optional[Tensor]:
        """The float32 bias (None without one), a copy as :attr:`weight` is."""
        bias = torch.ops.quantized.linear_unpack(self._packed)[1]
        return None if bias is None else bias.clone()  # unpack hands out the packed bias itself

    def numel(self) -> int:
        """Elements of the float layer it stands for (weight and bias), as ``nn.Linear``'s parameters count."""
        return self.out_features * (self.in_features + self.has_bias)

    def dequantised(self) -> tuple:
        """``(weight, bias)`` as new float32 tensors (bias None without one)."""
        return torch.ops.quantized.linear_unpack(self._packed)[0].dequantize(), self.bias

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != 'cpu':
            raise RuntimeError(f'FrozenInt8Linear runs on CPU only (int8 dynamic quantisation has no {x.device.type} '
                               "kernels); on a GPU keep the auxiliary in bf16 instead: aux_dtype='bfloat16'")
        # reduce_range: 7-bit activations, as torch's dynamic Linear uses on x86, so the int16 accumulations of
        # CPUs without VNNI cannot saturate.
        return torch.ops.quantized.linear_dynamic(x.float(), self._packed, True)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        weight, bias = self.dequantised()
        destination[prefix + 'weight'] = weight
        if self.has_bias:
            destination[prefix + 'bias'] = bias

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        names = ('weight', 'bias') if self.has_bias else ('weight', )
        given = {n: state_dict[prefix + n] for n in names if prefix + n in state_dict}
        missing_keys.extend(prefix + n for n in names if n not in given)
        if strict:  # as nn.Module does: a key of this module that it does not have
            unexpected_keys.extend(k for k in state_dict if k.startswith(prefix) and k[len(prefix):] not in names
                                   and '.' not in k[len(prefix):])
        if not given:
            return
        weight, bias = self.dequantised()
        shapes = dict(weight=(self.out_features, self.in_features), bias=(self.out_features, ))
        for name, value in given.items():
            if tuple(value.shape) != shapes[name]:
                error_msgs.append(f'size mismatch for {prefix}{name}: copying a param with shape '
                                  f'{tuple(value.shape)} from checkpoint, the shape in current model is '
                                  f'{shapes[name]}.')
                return
        self._pack(given.get('weight', weight), given.get('bias', bias))

    def extra_repr(self) -> str:
        return f'in_features={self.in_features}, out_features={self.out_features}, bias={self.has_bias}, int8'


def quantise_linears_(module: nn.Module) -> int:
    """Replace every plain ``nn.Linear`` inside ``module`` by a :class:`FrozenInt8Linear`; returns how many.

    Subclasses of ``nn.Linear`` (e.g. LoRA or quantisation-aware layers) are left alone: their forward is not a
    plain linear map.
    """
    targets = [(parent, name, child) for parent in module.modules() for name, child in parent.named_children()
               if type(child) is nn.Linear]
    for parent, name, child in targets:
        setattr(parent, name, FrozenInt8Linear.from_linear(child))
    return len(targets)
