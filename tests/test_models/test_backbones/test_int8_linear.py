"""FrozenInt8Linear: int8 weights per output channel behind a float state dict."""
import copy

import pytest
import torch

from mmfusion.models.backbones.int8_linear import FrozenInt8Linear, quantise_linears_


def _linear(out_features=6, in_features=16, bias=True, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Linear(in_features, out_features, bias=bias)


def test_weights_are_int8_per_output_channel_with_scale_max_over_127():
    linear = _linear()
    weight, bias = FrozenInt8Linear.from_linear(linear).dequantised()
    w = linear.weight.detach()
    scale = w.abs().amax(dim=1, keepdim=True) / 127  # by hand
    torch.testing.assert_close(weight, (w / scale).round().clamp(-128, 127) * scale)
    assert torch.equal(bias, linear.bias.detach())
    assert ((weight / scale).round().abs().amax(dim=1) == 127).all()  # each row's largest weight is +-127


def test_forward_is_close_to_the_float_layer_and_has_no_parameters():
    linear = _linear(out_features=32, in_features=64)
    int8 = FrozenInt8Linear.from_linear(linear)
    x = torch.randn(2, 5, 7, 64)
    want, got = linear(x).detach(), int8(x)
    assert got.shape == want.shape == (2, 5, 7, 32)
    assert 1e-5 < ((got - want).norm() / want.norm()).item() < 0.05  # quantised: close, not equal
    assert list(int8.parameters()) == [] and list(int8.buffers()) == []


def test_state_dict_is_the_float_layout_and_a_round_trip_changes_nothing():
    linear = _linear()
    int8 = FrozenInt8Linear.from_linear(linear)
    state = int8.state_dict()
    assert {k: (v.dtype, tuple(v.shape)) for k, v in state.items()} == {
        k: (v.dtype, tuple(v.shape)) for k, v in linear.state_dict().items()}
    again = FrozenInt8Linear.from_linear(_linear(seed=1))
    again.load_state_dict(state)
    x = torch.randn(3, 16)
    assert torch.equal(again(x), int8(x))
    assert all(torch.equal(a, b) for a, b in zip(again.dequantised(), int8.dequantised()))
    plain = _linear(seed=2)
    plain.load_state_dict(state)  # and into a float layer
    torch.testing.assert_close(plain.weight.detach(), int8.dequantised()[0])


def test_loading_float_weights_requantises_them():
    int8 = FrozenInt8Linear.from_linear(_linear(seed=0))
    other = _linear(seed=1)
    x = torch.randn(4, 16)
    before = int8(x)
    int8.load_state_dict(other.state_dict())
    assert not torch.allclose(int8(x), before)
    assert torch.equal(int8(x), FrozenInt8Linear.from_linear(other)(x))


def test_load_reports_missing_unexpected_and_wrong_shapes():
    int8 = FrozenInt8Linear.from_linear(_linear())
    with pytest.raises(RuntimeError, match='Missing key.*bias'):
        int8.load_state_dict({'weight': torch.zeros(6, 16)})
    with pytest.raises(RuntimeError, match='size mismatch for weight'):
        int8.load_state_dict({'weight': torch.zeros(6, 8), 'bias': torch.zeros(6)})
    no_bias = FrozenInt8Linear.from_linear(_linear(bias=False))
    with pytest.raises(RuntimeError, match='Unexpected key.*bias'):
        no_bias.load_state_dict({'weight': torch.zeros(6, 16), 'bias': torch.zeros(6)})
    result = no_bias.load_state_dict({'weight': torch.ones(6, 16)}, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(no_bias.dequantised()[0], torch.ones(6, 16))


def test_weight_and_bias_read_as_float_copies():
    linear = _linear()
    int8 = FrozenInt8Linear.from_linear(linear)
    assert int8.weight.dtype == torch.float32 and torch.equal(int8.weight, int8.dequantised()[0])
    assert torch.equal(int8.bias, linear.bias.detach())
    x = torch.randn(2, 16)
    before = int8(x)
    int8.weight.add_(1.0)
    int8.bias.add_(1.0)
    assert torch.equal(int8(x), before)  # copies: the packed weights are untouched
    assert FrozenInt8Linear.from_linear(_linear(bias=False)).bias is None


def test_deep_copy_is_independent():
    int8 = FrozenInt8Linear.from_linear(_linear())
    twin = copy.deepcopy(int8)
    x = torch.randn(2, 16)
    assert torch.equal(twin(x), int8(x))
    twin.load_state_dict(_linear(seed=3).state_dict())
    assert not torch.equal(twin(x), int8(x))


def test_refuses_non_cpu_inputs_and_unloaded_weights():
    int8 = FrozenInt8Linear.from_linear(_linear())
    with pytest.raises(RuntimeError, match="CPU only.*aux_dtype='bfloat16'"):
        int8(torch.empty(2, 16, device='meta'))
    with pytest.raises(ValueError, match='meta device'):
        FrozenInt8Linear(torch.empty(6, 16, device='meta'))


def test_quantise_linears_replaces_plain_linears_only():
    class Custom(torch.nn.Linear):
        pass

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(),
                                torch.nn.Sequential(torch.nn.Linear(8, 8), Custom(8, 2)), torch.nn.LayerNorm(2))
    x = torch.randn(3, 4)
    want = model(x).detach()
    assert quantise_linears_(model) == 2
    assert [type(m).__name__ for m in (model[0], model[2][0], model[2][1])] == ['FrozenInt8Linear',
                                                                               'FrozenInt8Linear', 'Custom']
    torch.testing.assert_close(model(x), want, rtol=0.1, atol=0.05)
