"""Per-stride profiles, the master/auxiliary/s* rule (SPEC §4) and the profile files."""
import ast
import csv
import json
import os.path as osp

import pytest
import torch

from mmfusion.metrics import (
    METRIC_KEYS,
    PreparedFeatures,
    ProfileAccumulator,
    edge_fidelity,
    load_profile,
    metrics_per_image,
    prepare_features,
    profile_features,
    save_profile,
    save_profile_csv,
    select_pair,
    structural_clustering_score,
    structural_coherence,
    structured_feature_contrast,
)

# SPEC §4, the published profile.
PAPER = {
    'DINOv3': {
        4: dict(SC=0.73, EF=1.27),
        8: dict(SC=0.71, EF=1.64),
        16: dict(SC=0.65, EF=2.33),
        32: dict(SC=0.53, EF=5.88)
    },
    'SAM2': {
        4: dict(SC=0.49, EF=6.60),
        8: dict(SC=0.44, EF=8.59),
        16: dict(SC=0.11, EF=17.13),
        32: dict(SC=0.41, EF=12.47)
    },
}


def pyramid(b=2, seed=0, strides=(4, 8, 16, 32), size=(64, 64)):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(b, 4 * s // 4, size[0] // s, size[1] // s, generator=g) for s in strides]


def images(b=2, seed=0):
    return torch.randint(0, 256, (b, 3, 64, 64), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_select_pair_on_the_published_profile():
    assert select_pair(PAPER) == dict(master='DINOv3', auxiliary='SAM2', inject_stride=16)


def test_select_pair_master_and_auxiliary_differ_even_when_one_encoder_wins_both():
    profiles = {'a': {8: dict(SC=0.9, EF=30.0)}, 'b': {8: dict(SC=0.2, EF=1.0)}, 'c': {8: dict(SC=0.1, EF=2.0)}}
    assert select_pair(profiles) == dict(master='a', auxiliary='c', inject_stride=8)


def test_select_pair_needs_two_encoders():
    with pytest.raises(ValueError, match='at least 2 encoders'):
        select_pair({'DINOv3': PAPER['DINOv3']})
    with pytest.raises(ValueError, match='lacks SC or EF'):
        select_pair({'a': {4: dict(SC=1.0)}, 'b': {4: dict(SC=1.0, EF=1.0)}})


def test_profile_features_returns_the_batch_mean_per_stride():
    feats, imgs = pyramid(), images()
    prof = profile_features(feats, imgs)
    assert list(prof) == [4, 8, 16, 32]
    assert all(set(v) == set(METRIC_KEYS) for v in prof.values())
    first = profile_features([f[:1] for f in feats], imgs[:1])
    second = profile_features([f[1:] for f in feats], imgs[1:])
    for s in prof:
        for k in METRIC_KEYS:
            assert prof[s][k] == pytest.approx((first[s][k] + second[s][k]) / 2, abs=1e-5)


def test_accumulator_over_batches_equals_one_big_batch():
    feats, imgs = pyramid(b=3, seed=1), images(b=3, seed=1)
    acc = ProfileAccumulator()
    acc.update([f[:2] for f in feats], imgs[:2])
    acc.update({s: f[2:] for s, f in zip((4, 8, 16, 32), feats)}, imgs[2:])
    assert acc.count == 3
    whole = profile_features(feats, imgs)
    got = acc.compute()
    assert all(got[s][k] == pytest.approx(whole[s][k], abs=1e-5) for s in whole for k in METRIC_KEYS)
    acc.reset()
    with pytest.raises(ValueError, match='before any update'):
        acc.compute()


def test_profile_routes_options_and_rejects_unknown_ones():
    feats, imgs = pyramid(b=1, strides=(8, 16)), images(b=1)
    base = profile_features(feats, imgs, strides=(8, 16))
    opts = profile_features(feats, imgs, strides=(8, 16), cell=4, alpha=1.0)
    assert opts[8]['EF'] == pytest.approx(base[8]['EF'] / 100, rel=1e-5)
    assert opts[8]['SFC'] != pytest.approx(base[8]['SFC'])
    with pytest.raises(TypeError, match='unknown metric option'):
        profile_features(feats, imgs, strides=(8, 16), alhpa=1.0)
    with pytest.raises(ValueError, match='strides'):
        profile_features(feats, imgs)  # 2 maps, 4 default strides


def test_save_and_load_profile_round_trip_with_the_documented_schema(tmp_path):
    path = str(tmp_path / 'sub' / 'profile.json')
    doc = save_profile(path, PAPER, meta={'images': 3})
    raw = json.load(open(path))
    assert raw == doc
    assert raw['encoders']['SAM2']['strides'] == [4, 8, 16, 32]
    assert raw['encoders']['SAM2']['EF'] == [6.60, 8.59, 17.13, 12.47]
    assert raw['selection'] == dict(master='DINOv3', auxiliary='SAM2', inject_stride=16)
    loaded = load_profile(path)
    assert loaded['profiles'] == PAPER and loaded['meta'] == {'images': 3}
    assert loaded['selection']['inject_stride'] == 16


def test_save_profile_of_one_encoder_has_no_selection(tmp_path):
    path = str(tmp_path / 'one.json')
    save_profile(path, {'DINOv3': PAPER['DINOv3']})
    assert json.load(open(path))['selection'] is None
    with pytest.raises(FileNotFoundError, match='profile_vfm'):
        load_profile(str(tmp_path / 'missing.json'))


def test_profile_csv_has_one_row_per_encoder_and_stride(tmp_path):
    path = str(tmp_path / 'profile.csv')
    save_profile_csv(path, PAPER)
    rows = list(csv.DictReader(open(path)))
    assert len(rows) == 8
    assert rows[6]['encoder'] == 'SAM2' and rows[6]['stride'] == '16' and float(rows[6]['EF']) == 17.13
    assert rows[0]['SFC'] == ''  # not in the published table


def test_metrics_package_imports_nothing_from_openmmlab():
    pkg = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'mmfusion', 'metrics')
    import glob
    for path in glob.glob(osp.join(pkg, '*.py')):
        tree = ast.parse(open(path).read())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or '']
            for name in names:
                assert name.split('.')[0] not in {'mmengine', 'mmcv', 'mmdet', 'mmseg', 'mmpretrain'}, (path, name)


def test_prepared_features_give_the_same_metrics_as_the_tensor():
    feat = torch.randn(2, 6, 16, 24, generator=torch.Generator().manual_seed(3)).double()
    img = images(2)[..., :32, :48]
    prep = prepare_features(feat)
    assert isinstance(prep, PreparedFeatures) and prepare_features(prep) is prep
    assert prep.feat.dtype == torch.float32 and tuple(prep.shape) == (2, 6, 16, 24)
    for got, ref in ((structural_coherence(prep), structural_coherence(feat)),
                     (edge_fidelity(prep, img), edge_fidelity(feat, img)),
                     (dict(v=structured_feature_contrast(prep)), dict(v=structured_feature_contrast(feat))),
                     (dict(v=structural_clustering_score(prep)), dict(v=structural_clustering_score(feat)))):
        assert all(torch.equal(got[k], ref[k]) for k in ref)
    both = metrics_per_image(feat, img)
    assert all(torch.equal(both[k], {**structural_coherence(feat), **edge_fidelity(feat, img)}[k]) for k in both)


def test_prepared_features_statistics():
    feat = torch.randn(2, 4, 5, 7, generator=torch.Generator().manual_seed(4)) * 3 + 1
    prep = prepare_features(feat)
    x = feat.flatten(2)
    assert torch.allclose(prep.channel_stats()[0], x.mean(-1, keepdim=True), atol=1e-5)
    assert torch.allclose(prep.channel_std(unbiased=True), x.std(-1, keepdim=True), rtol=1e-5)
    assert torch.allclose(prep.channel_std(unbiased=False), x.std(-1, unbiased=False, keepdim=True), rtol=1e-5)
    assert torch.allclose(prep.norm_map(), feat.norm(dim=1), rtol=1e-5)
    assert prep.norm_map() is prep.norm_map()  # computed once


def test_prepared_features_warn_once_about_non_finite_values():
    feat = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))  # large enough for every metric
    feat[1, 0, 2, 2] = float('nan')
    with pytest.warns(RuntimeWarning, match='NaN') as record:
        out = metrics_per_image(feat, images(2))
    assert len(record) == 1
    assert all(out[k][1].item() == 0.0 for k in out) and out['SCS'][0].item() > 0


def test_auxiliary_plan_takes_per_stride_the_largest_ef_gain_over_the_master():
    from mmfusion.metrics import auxiliary_plan
    profiles = {
        'master': {4: dict(EF=1.0), 8: dict(EF=2.0), 16: dict(EF=3.0), 32: dict(EF=9.0)},
        'a': {4: dict(EF=1.5), 8: dict(EF=5.0), 16: dict(EF=4.0), 32: dict(EF=2.0)},
        'b': {4: dict(EF=3.0), 8: dict(EF=4.0), 16: dict(EF=8.0), 32: dict(EF=8.5)},
    }
    # OS32: nobody beats the master's 9.0, so it keeps its own map.
    assert auxiliary_plan(profiles, 'master') == {4: 'b', 8: 'a', 16: 'b'}
