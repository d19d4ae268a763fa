"""benchmarks/bench_deploy.py's split of the time per part of the model: which part a node or module belongs to, and
what each part's time holds (a fake clock, so the figures are exact)."""
import pytest
from torch import nn

from tests._tools import load_script


@pytest.fixture(scope='module')
def bench():
    return load_script('benchmarks/bench_deploy.py')


@pytest.mark.parametrize('node, part', [
    ('/backbone/master/layer.3/attention/MatMul', 'master'),
    ('/backbone/auxiliary/blocks.2/attn/Softmax', 'auxiliary'),
    ('/neck/Concat', 'neck'),
    ('/decode_head/pixel_decoder/encoder/layers.0/GridSample', 'pixel decoder'),
    ('/decode_head/transformer_decoder/layers.1/Add', 'rest of head'),
    ('/decode_head/Einsum', 'rest of head'),
    ('/backbone/master_proj/MatMul', 'other'),  # a prefix only up to a module boundary
    ('Gelu_token_1811', 'other'),  # renamed by ONNX Runtime's fusions
])
def test_onnx_node_names_map_to_parts(bench, node, part):
    assert bench._part_of(node) == part


class _Clock:
    now = 0.0

    def __call__(self):
        return self.now


class _Costs(nn.Module):
    """Advances the fake clock by ``cost`` seconds, then runs its children."""

    def __init__(self, clock, cost, **children):
        super().__init__()
        self.clock, self.cost = clock, cost
        for name, child in children.items():
            self.add_module(name, child)

    def forward(self, x):
        self.clock.now += self.cost
        for child in self.children():
            x = child(x)
        return x


def test_torch_parts_split_one_run(bench, monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(bench.time, 'perf_counter', clock)
    model = _Costs(clock, 0.5,  # glue outside every part: 'other'
                   backbone=_Costs(clock, 0.25, master=_Costs(clock, 3.0), auxiliary=_Costs(clock, 2.0)),
                   neck=_Costs(clock, 0.0),
                   decode_head=_Costs(clock, 0.75, pixel_decoder=_Costs(clock, 1.5)))
    parts = bench._torch_parts(model, model, 0)
    assert parts == {'master': 3.0, 'auxiliary': 2.0, 'neck': 0.0, 'pixel decoder': 1.5, 'rest of head': 0.75,
                     'other': 0.75}  # the backbone's own 0.25 and the model's 0.5
    assert sum(parts.values()) == clock.now
