"""tools/analysis/metric_validity.py end to end on the synthetic Cityscapes-format dataset with tiny DINOv3 and SAM2
encoders (random weights), and its one-line errors."""
import json

import pytest
import torch
from PIL import Image
from scipy import stats

from mmfusion.datasets.synthetic_cityscapes import generate_synthetic_cityscapes
from tests._tools import load_tool
from tests.test_models.test_backbones.vfm_utils import TINY_HIERA, TINY_VIT

STRIDES = (8, 16)


@pytest.fixture(scope='module')
def tool():
    return load_tool('analysis/metric_validity.py')


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """Two synthetic val scenes, an mmdet Cityscapes config reading them, and a file of two tiny encoders."""
    root = tmp_path_factory.mktemp('validity')
    data = root / 'data'
    generate_synthetic_cityscapes(str(data), num_train=0, num_val=2, height=128, width=256, seed=2, panoptic=False)
    (root / 'dataset.py').write_text(f"""default_scope = 'mmdet'
val_dataloader = dict(dataset=dict(type='CityscapesDataset', data_root='{data}',
    ann_file='annotations/instancesonly_filtered_gtFine_val.json', data_prefix=dict(img='leftImg8bit/val/'),
    test_mode=True))
""")
    (root / 'encoders.py').write_text(
        f"dino = dict(type='mmfusion.DINOv3ViT', arch={TINY_VIT!r}, out_strides={STRIDES!r})\n"
        f"sam = dict(type='mmfusion.SAM2Hiera', arch={TINY_HIERA!r}, out_strides={STRIDES!r})\n")
    return root


def args_for(setup, out, *extra):
    enc = setup / 'encoders.py'
    return ['--dataset-config', str(setup / 'dataset.py'), '--num-images', '1', '--size', '128', '256', '--device',
            'cpu', '--threads', '2', '--encoder', f'dino={enc}:dino', '--encoder', f'sam={enc}:sam', '--out-dir',
            str(out), *extra]


def test_study_end_to_end(tool, setup, tmp_path, capsys):
    results = tmp_path / 'ablation.csv'
    results.write_text('stride,score\nOS8,34.2\n16,39.1\nnone,35.6\n')
    out = tmp_path / 'out'
    tool.main(args_for(setup, out, '--grid', 'cell=4', 'q=0.6', 'size=96x192', '--results', str(results),
                       '--aux-encoder', 'sam'))
    doc = json.loads((out / 'validity.json').read_text())

    # 1. SC vs SC_GT for every (encoder, stride), correlations equal to scipy's on those values
    gt = doc['sc_vs_sc_gt']
    assert [(r['encoder'], r['stride']) for r in gt['items']] == [(e, s) for e in ('dino', 'sam') for s in STRIDES]
    for r in gt['items']:
        assert 0 <= r['SC'] <= 1 and 0 <= r['SC_GT'] <= 1
        assert r['SC'] == pytest.approx(doc['profiles'][r['encoder']][str(r['stride'])]['SC'])
    sc, sc_gt = [r['SC'] for r in gt['items']], [r['SC_GT'] for r in gt['items']]
    assert gt['spearman_rho'] == pytest.approx(stats.spearmanr(sc, sc_gt)[0])
    assert gt['kendall_tau'] == pytest.approx(stats.kendalltau(sc, sc_gt)[0])

    # 2. every variant with a decision and rank correlations with the default
    sens = doc['sensitivity']
    assert [v['name'] for v in sens['variants']] == ['cell=4', 'q=0.6', 'size=96x192']
    for v in sens['variants']:
        assert set(v['selection']) == {'master', 'auxiliary', 'inject_stride'}
        assert v['selection']['inject_stride'] in STRIDES
        assert isinstance(v['same_decision'], bool)
        for key in ('SC', 'EF'):
            assert -1 <= v['rank_correlation'][key]['spearman_rho'] <= 1
    # q changes EF only and cell SC only: the other ranking is the default's
    assert sens['variants'][0]['rank_correlation']['EF']['spearman_rho'] == pytest.approx(1.0)
    assert sens['variants'][1]['rank_correlation']['SC']['spearman_rho'] == pytest.approx(1.0)

    # 3. EF of the auxiliary against the gain over the baseline
    res = doc['results']
    ef = [doc['profiles']['sam'][str(s)]['EF'] for s in STRIDES]
    assert res['auxiliary'] == 'sam' and [r['gain'] for r in res['rows']] == pytest.approx([34.2 - 35.6,
                                                                                             39.1 - 35.6])
    assert res['spearman_rho'] == pytest.approx(stats.spearmanr(ef, [-1.4, 3.5])[0])

    for name in ('sc_vs_sc_gt.png', 'sensitivity.png', 'ef_vs_gain.png', 'profile.png'):
        assert Image.open(out / name).format == 'PNG'
    printed, err = capsys.readouterr()
    assert 'Spearman rho' in printed and 'size=96x192' in printed and 'OS16' in printed
    assert 'metric validity' in err and 'RANDOM WEIGHTS' in err  # progress bar, and random weights said


def run_error(tool, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        tool.main(argv)
    assert exc.value.code == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line]
    return err[-1]


def test_empty_image_folder_is_a_one_line_error(tool, setup, tmp_path, capsys):
    (tmp_path / 'empty').mkdir()
    argv = ['--images', str(tmp_path / 'empty')] + args_for(setup, tmp_path / 'o')[2:]
    msg = run_error(tool, argv, capsys)
    from mmfusion.utils.images import IMAGE_EXTS
    assert msg.startswith(f'metric_validity.py: error: no {"/".join(IMAGE_EXTS)} images in') and 'empty' in msg


def test_results_strides_that_do_not_match_are_a_one_line_error(tool, setup, tmp_path, capsys):
    results = tmp_path / 'r.json'
    results.write_text(json.dumps({'8': 34.2, '32': 35.3, 'none': 35.6}))
    msg = run_error(tool, args_for(setup, tmp_path / 'o', '--results', str(results), '--aux-encoder', 'sam'),
                    capsys)
    assert msg == ('metric_validity.py: error: the results strides [8, 32] do not match the profiled strides '
                   '[8, 16] of sam; give scores for profiled strides only')
    assert not (tmp_path / 'o' / 'validity.json').exists()


def test_unknown_grid_name_is_a_one_line_error(tool, setup, tmp_path, capsys):
    msg = run_error(tool, args_for(setup, tmp_path / 'o', '--grid', 'cell=4', 'kk=4+6'), capsys)
    assert msg.startswith("metric_validity.py: error: unknown hyper-parameter 'kk' in --grid; choose from size, ")
