"""benchmarks/bench_metrics.py runs end to end and reports what it claims (on small maps, so it stays fast)."""
import os.path as osp
import re

import pytest
import torch

from tests._tools import load_script

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.fixture()
def bench(monkeypatch):
    mod = load_script('benchmarks/bench_metrics.py')
    # A 128x256 scene: OS4 32x64 ... OS32 4x8, few channels.
    monkeypatch.setattr(mod, 'SIZE', (128, 256))
    monkeypatch.setattr(mod, 'ENCODERS', {
        'a': ((16, 24, 32, 40), 0.5, 0.6, 0.8),
        'b': ((8, 16, 24, 32), 1.5, 0.3, 0.3),
    })
    return mod


def test_bench_metrics_prints_totals_ratio_and_scs_agreement(bench, capsys):
    bench.main(['--threads', '1', '--breakdown'])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if re.match(r'^[ab]\s+\d+\s', line)]
    assert len(rows) == 8  # 2 encoders x 4 strides
    total = re.search(r'^total: mmfusion (\d+) ms, sklearn path (\d+) ms, speed-up ([\d.]+)\u00d7, '
                      r'max \|\u0394SCS\| ([\d.]+)$', out, re.M)
    assert total is not None, out
    ours, ref, ratio, diff = int(total[1]), int(total[2]), float(total[3]), float(total[4])
    assert ours > 0 and ref > 0
    assert ratio == pytest.approx(ref / ours, rel=0.1, abs=0.1)
    assert diff <= 0.02  # SCS of both paths on the same points
    ceiling = re.search(r'ceiling with free k-means ([\d.]+)x, with a free SCS ([\d.]+)x', out)
    assert ceiling is not None and float(ceiling[2]) >= float(ceiling[1]) > 0


def test_stage_times_cover_both_paths(bench):
    image, labels = bench.synthetic_scene(0)
    feat = bench.synthetic_features(labels, (16, 24, 32, 40), 0.5, 0.6, 0.8, 0)[0]
    times = bench.stage_times(feat, image, repeats=1, threads=1)
    assert set(times) == {'prep+SFC', 'EF', 'PCA', 'k-means', 'silhouette', 'skl PCA', 'skl KMeans',
                          'skl silhouette'}
    assert all(v > 0 for v in times.values())
    assert torch.is_tensor(feat) and feat.shape == (1, 16, 32, 64)
