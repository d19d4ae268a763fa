"""mmfusion.apis.validity: rank correlations, the hyper-parameter grid, ground-truth segments, the one-pass scoring
of default and variants, and the three analyses (SC vs SC_GT, sensitivity, EF vs downstream gain)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

import tests._stubs  # noqa: F401  (registers StubPyramid)
from mmfusion.apis import profiling as P
from mmfusion.apis import validity as V
from mmfusion.datasets.synthetic_cityscapes import generate_synthetic_cityscapes
from mmfusion.metrics import metrics_per_image, structural_coherence_gt


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- rank correlation -------------------------------------------------------------------------------------------


def test_rank_correlation_of_a_hand_made_ranking():
    # ranks of x: 1 2 3 4 5; ranks of y: 2 1 4 3 5 -> d^2 = 1+1+1+1+0 = 4, rho = 1 - 6*4 / (5*24) = 0.8;
    # of the 10 pairs, (1,2) and (3,4) are discordant -> tau = (8 - 2) / 10 = 0.6.
    x = [0.1, 0.5, 0.7, 2.0, 3.0]
    y = [20.0, 10.0, 45.0, 30.0, 50.0]
    out = V.rank_correlation(x, y)
    assert out['spearman_rho'] == pytest.approx(0.8)
    assert out['kendall_tau'] == pytest.approx(0.6)
    assert out['n'] == 5


def test_rank_correlation_is_undefined_for_a_constant_ranking():
    out = V.rank_correlation([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])
    assert out == dict(spearman_rho=None, kendall_tau=None, n=3)


# --- grid ---------------------------------------------------------------------------------------------------


def test_parse_grid_gives_values_the_type_of_their_default():
    grid = V.parse_grid(['cell=4,16', 'ks=4+6+8,6', 'tau=1,0.3', 'size=64x128'])
    assert grid == {'cell': [4, 16], 'ks': [(4, 6, 8), (6, )], 'tau': [1.0, 0.3], 'size': [(64, 128)]}
    assert isinstance(grid['tau'][0], float)


def test_parse_grid_rejects_an_unknown_name_in_one_line():
    with pytest.raises(V.ValidityError) as exc:
        V.parse_grid(['cel=4'])
    msg = str(exc.value)
    assert "unknown hyper-parameter 'cel'" in msg and 'cell' in msg and '\n' not in msg


def test_make_variants_marks_the_default_values():
    grid = V.parse_grid(['cell=4,8', 'q=0.4', 'size=64x64,32x64'])
    variants = V.make_variants(grid, (64, 64))
    assert [(v.name, v.is_default) for v in variants] == [('cell=4', False), ('cell=8', True), ('q=0.4', True),
                                                          ('size=64x64', True), ('size=32x64', False)]
    assert variants[0].opts == {'cell': 4} and variants[0].size == (64, 64)
    assert variants[4].opts == {} and variants[4].size == (32, 64)


def test_check_variants_names_the_variant_a_metric_rejects():
    variants = V.make_variants(V.parse_grid(['fc_map=l2,bogus']), (64, 64))
    with pytest.raises(V.ValidityError, match=r'--grid fc_map=bogus: .*fc_map'):
        V.check_variants(variants)


def test_check_variants_applies_the_metrics_range_check():
    variants = V.make_variants(V.parse_grid(['cell=4', 'q=0.2,1.5']), (64, 64))
    with pytest.raises(V.ValidityError) as exc:
        V.check_variants(variants)
    assert str(exc.value).startswith('--grid q=1.5: q=1.5 is not valid')


# --- ground truth -------------------------------------------------------------------------------------------


def test_cityscapes_gt_path_maps_an_image_to_its_gtfine_file():
    img = '/d/cs/leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png'
    assert V.cityscapes_gt_path(img, 'labelTrainIds.png') == \
        '/d/cs/gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelTrainIds.png'
    assert V.cityscapes_gt_path('/d/images/a.png', 'labelTrainIds.png') is None


@pytest.fixture(scope='module')
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('synthetic')
    generate_synthetic_cityscapes(str(root), num_train=0, num_val=2, height=64, width=128, seed=1, panoptic=False)
    return root


def _write_config(path, text):
    path.write_text(text)
    return str(path)


def test_instance_segments_of_a_cityscapes_dataset(synthetic_root, tmp_path):
    cfg = _write_config(tmp_path / 'det.py', f"""default_scope = 'mmdet'
val_dataloader = dict(dataset=dict(type='CityscapesDataset', data_root='{synthetic_root}',
    ann_file='annotations/instancesonly_filtered_gtFine_val.json', data_prefix=dict(img='leftImg8bit/val/'),
    test_mode=True))
""")
    info = P.dataset_infos(cfg, 'val', 1)[0]
    seg = V.load_gt_segments(info, 'instance')
    gt = info['img_path'].replace('/leftImg8bit/', '/gtFine/').replace('_leftImg8bit.png', '_gtFine_')
    inst = np.array(Image.open(gt + 'instanceIds.png')).astype(np.int64)
    train = np.array(Image.open(gt + 'labelTrainIds.png'))
    expected = np.where(train == 255, -1, inst)
    assert seg.dtype == torch.int64 and np.array_equal(seg.numpy(), expected)
    assert (expected >= 1000).any()  # the scene has objects with instance ids


def test_semantic_segments_of_an_mmseg_dataset_resized_nearest(synthetic_root, tmp_path):
    cfg = _write_config(tmp_path / 'seg.py', f"""default_scope = 'mmseg'
val_dataloader = dict(dataset=dict(type='CityscapesDataset', data_root='{synthetic_root}',
    data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val')))
""")
    info = P.dataset_infos(cfg, 'val', 1)[0]
    assert info['seg_map_path'].endswith('_gtFine_labelTrainIds.png')
    train = np.array(Image.open(info['seg_map_path'])).astype(np.int64)
    seg = V.load_gt_segments(info, 'semantic', size=(32, 64))
    expected = np.where(train == 255, -1, train)[::2, ::2]  # nearest halving keeps the even rows and columns
    assert np.array_equal(seg.numpy(), expected)


def test_missing_ground_truth_is_a_one_line_error(tmp_path):
    with pytest.raises(V.ValidityError) as exc:
        V.load_gt_segments({'img_path': str(tmp_path / 'x.png')}, 'semantic')
    assert 'no semantic ground truth for' in str(exc.value) and '\n' not in str(exc.value)


# --- scoring ------------------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def stub_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp('images')
    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        img = np.zeros((96, 128, 3), dtype=np.uint8)
        img[8:60, 10 + 8 * i:90] = rng.integers(0, 255, 3)
        img += rng.integers(0, 30, img.shape, dtype=np.uint8)
        paths.append(str(folder / f'{i}.png'))
        Image.fromarray(img).save(paths[-1])
    return paths


def test_score_dataset_matches_scoring_each_map_directly(stub_images):
    encoders = {'a': dict(type='StubPyramid', out_strides=(4, 8)),
                'b': dict(type='StubPyramid', channels=(8, 8, 8, 8), out_strides=(4, 8))}
    variants = V.make_variants(V.parse_grid(['cell=4', 'pca_dim=4', 'q=0.2', 'size=64x128']), (96, 128))
    gen = torch.Generator().manual_seed(0)
    segments = [torch.randint(-1, 3, (96, 128), generator=gen) for _ in stub_images]
    out = V.score_dataset(V.build_encoders(encoders), stub_images, (96, 128), variants, segments, progress=False)

    for name, cfg in encoders.items():
        torch.manual_seed(0)
        model = P.build_encoder(name, cfg)
        for variant, size, opts in ((None, (96, 128), {}), ('cell=4', (96, 128), {'cell': 4}),
                                    ('pca_dim=4', (96, 128), {'pca_dim': 4}), ('q=0.2', (96, 128), {'q': 0.2}),
                                    ('size=64x128', (64, 128), {})):
            got = out['profiles'] if variant is None else out['variants'][variant]
            per_image = []
            for path, seg in zip(stub_images, segments):
                img = P.load_image(path, size)[None]
                feats = P.extract_features(model, img, (4, 8))
                vals = [metrics_per_image(f, img, **opts) for f in feats]
                if variant is None:
                    for v, f in zip(vals, feats):
                        v.update(structural_coherence_gt(f, seg[None]))
                per_image.append(vals)
            for j, stride in enumerate((4, 8)):
                for key, value in got[name][stride].items():
                    expected = np.mean([float(v[j][key]) for v in per_image])
                    assert value == pytest.approx(expected, abs=1e-5), (name, variant, stride, key)
    assert set(out['profiles']['a'][4]) >= {'SC', 'EF', 'SC_GT', 'SFC_GT', 'SCS_GT'}
    assert out['channels'] == {'a': {4: 4, 8: 8}, 'b': {4: 8, 8: 8}}


# --- analyses -----------------------------------------------------------------------------------------------


def _profiles(sc_a, ef_a, sc_b, ef_b, gt=None):
    prof = {'a': {s: dict(SC=sc, EF=ef) for s, sc, ef in zip((4, 8, 16), sc_a, ef_a)},
            'b': {s: dict(SC=sc, EF=ef) for s, sc, ef in zip((4, 8, 16), sc_b, ef_b)}}
    if gt is not None:
        for (enc, s), g in zip([(e, s) for e in 'ab' for s in (4, 8, 16)], gt):
            prof[enc][s].update(SC_GT=g, SFC=g, SFC_GT=g, SCS=g, SCS_GT=g)
    return prof


def test_sc_gt_agreement_ranks_all_encoder_strides():
    gt = [0.5, 0.4, 0.1, 0.3, 0.35, 0.2]
    prof = _profiles((0.9, 0.8, 0.6), (1, 2, 3), (0.3, 0.5, 0.4), (5, 9, 7), gt)
    out = V.sc_gt_agreement(prof)
    sc = [0.9, 0.8, 0.6, 0.3, 0.5, 0.4]
    assert [(r['encoder'], r['stride'], r['SC'], r['SC_GT']) for r in out['items']] == \
        [(e, s, c, g) for (e, s), c, g in zip([(e, s) for e in 'ab' for s in (4, 8, 16)], sc, gt)]
    assert out['spearman_rho'] == pytest.approx(stats.spearmanr(sc, gt)[0])
    assert out['kendall_tau'] == pytest.approx(stats.kendalltau(sc, gt)[0])
    assert out['per_encoder']['a']['spearman_rho'] == pytest.approx(1.0)  # 0.9>0.8>0.6 and 0.5>0.4>0.1


def test_sensitivity_reports_decision_changes_and_rank_correlations():
    default = _profiles((0.9, 0.8, 0.6), (1, 2, 3), (0.3, 0.5, 0.4), (5, 9, 7))
    moved = _profiles((0.9, 0.8, 0.6), (1, 2, 3), (0.3, 0.5, 0.4), (5, 7, 9))  # the auxiliary peaks at OS16 now
    variants = V.make_variants(V.parse_grid(['tau=0.3,0.7']), (64, 64))
    out = V.sensitivity(default, {'tau=0.3': default, 'tau=0.7': moved}, variants)
    assert out['default_selection'] == dict(master='a', auxiliary='b', inject_stride=8)
    same, changed = out['variants']
    assert same['same_decision'] is True and same['rank_correlation']['EF']['spearman_rho'] == pytest.approx(1.0)
    assert changed['selection'] == dict(master='a', auxiliary='b', inject_stride=16)
    assert (changed['same_master'], changed['same_auxiliary'], changed['same_inject_stride']) == (True, True, False)
    ef_default, ef_moved = [1, 2, 3, 5, 9, 7], [1, 2, 3, 5, 7, 9]
    assert changed['rank_correlation']['EF']['spearman_rho'] == pytest.approx(stats.spearmanr(ef_default,
                                                                                              ef_moved)[0])
    assert out['summary']['tau'] == dict(variants=2, same_decision=1, min_rho_SC=pytest.approx(1.0),
                                         min_rho_EF=pytest.approx(stats.spearmanr(ef_default, ef_moved)[0]))
    assert (out['stable'], out['total']) == (1, 2)


def test_sensitivity_marks_a_variant_that_allows_no_decision():
    default = _profiles((0.9, 0.8, 0.6), (1, 2, 3), (0.3, 0.5, 0.4), (5, 9, 7))
    flat = _profiles((0.9, 0.8, 0.6), (0, 0, 0), (0.3, 0.5, 0.4), (5, 9, 7))  # select_pair refuses EF = 0 everywhere
    variants = V.make_variants(V.parse_grid(['q=0.2']), (64, 64))
    row = V.sensitivity(default, {'q=0.2': flat}, variants)['variants'][0]
    assert row['selection'] is None and 'EF = 0 at every stride' in row['no_selection_reason']
    assert (row['same_master'], row['same_decision']) == (False, False)


def test_load_results_reads_csv_and_json(tmp_path):
    (tmp_path / 'r.csv').write_text('stride,score\nOS4,37.0\n8,34.2\nnone,35.6\n')
    (tmp_path / 'r.json').write_text(json.dumps([{'stride': 4, 'AP': 37.0}, {'stride': 'none', 'AP': 35.6}]))
    assert V.load_results(str(tmp_path / 'r.csv')) == {4: 37.0, 8: 34.2, None: 35.6}
    assert V.load_results(str(tmp_path / 'r.json'), score_key='AP') == {4: 37.0, None: 35.6}


def test_gain_correlation_against_the_stride_ablation():
    prof = _profiles((0.9, 0.8, 0.6), (1, 2, 3), (0.3, 0.5, 0.4), (6.6, 8.6, 17.1))
    results = {4: 37.0, 8: 34.2, 16: 39.1, None: 35.6}  # SPEC §8 stride ablation (OS32 left out)
    out = V.gain_correlation(prof, 'b', results)
    gains = [37.0 - 35.6, 34.2 - 35.6, 39.1 - 35.6]
    assert [r['gain'] for r in out['rows']] == pytest.approx(gains)
    assert out['spearman_rho'] == pytest.approx(stats.spearmanr([6.6, 8.6, 17.1], gains)[0])
    assert out['kendall_tau'] == pytest.approx(stats.kendalltau([6.6, 8.6, 17.1], gains)[0])
    assert out['pearson_r'] == pytest.approx(stats.pearsonr([6.6, 8.6, 17.1], gains)[0])
    assert (out['s_star_by_ef'], out['s_star_by_score'], out['agree']) == (16, 16, True)


def test_gain_correlation_rejects_strides_the_profile_lacks():
    prof = _profiles((0.9, 0.8, 0.6), (1, 2, 3), (0.3, 0.5, 0.4), (5, 9, 7))
    with pytest.raises(V.ValidityError) as exc:
        V.gain_correlation(prof, 'b', {8: 1.0, 32: 2.0}, baseline=0.5)
    assert 'results strides [8, 32] do not match the profiled strides [4, 8, 16]' in str(exc.value)


def test_gain_correlation_needs_a_baseline():
    prof = _profiles((0.9, 0.8, 0.6), (1, 2, 3), (0.3, 0.5, 0.4), (5, 9, 7))
    with pytest.raises(V.ValidityError, match='no master-only baseline'):
        V.gain_correlation(prof, 'b', {4: 1.0, 8: 2.0})
