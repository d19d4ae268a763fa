"""profile_vfm.py ranks any number of encoders, Hugging Face folders among them (``--encoder NAME=hf:FOLDER``), and
explains its recommendation with the rankings and margins."""
import json

import numpy as np
import pytest
from PIL import Image

import tests._stubs  # noqa: F401  (registers StubPyramid)
from mmfusion.metrics import explain_selection, select_pair
from tests._tools import load_tool
from tests.test_models.test_backbones.hf_utils import tiny_hf_config


@pytest.fixture(scope='module')
def tool():
    return load_tool('analysis/profile_vfm.py')


def _hf_folder(path, model_type):
    from transformers import AutoConfig, AutoModel
    fields = tiny_hf_config(model_type)
    config = AutoConfig.for_model(fields.pop('model_type'), **fields)
    AutoModel.from_config(config).save_pretrained(path)
    return str(path)


def test_explain_selection_ranks_and_gives_margins():
    profiles = {'a': {8: dict(SC=0.7, EF=1.0), 16: dict(SC=0.5, EF=2.0)},
                'b': {8: dict(SC=0.2, EF=6.0), 16: dict(SC=0.2, EF=9.0)},
                'c': {8: dict(SC=0.4, EF=3.0), 16: dict(SC=0.4, EF=4.0)}}
    why = explain_selection(profiles, select_pair(profiles))
    assert [n for n, _ in why['sc_ranking']] == ['a', 'c', 'b']
    assert [n for n, _ in why['ef_ranking']] == ['b', 'c', 'a']
    assert why['master_margin'] == pytest.approx(0.6 - 0.4)
    assert why['auxiliary_margin'] == pytest.approx(7.5 - 3.5)
    assert why['stride_margin'] == pytest.approx(9.0 - 6.0)


@pytest.mark.slow
def test_profiles_three_encoders_two_of_them_hugging_face_folders(tool, tmp_path, capsys):
    images = tmp_path / 'images'
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        img = rng.integers(0, 40, (64, 128, 3), dtype=np.uint8)
        img[10:50, 20 + 20 * i:90] = rng.integers(60, 255, 3)
        Image.fromarray(img).save(images / f'{i}.png')
    vit = _hf_folder(tmp_path / 'dinov2', 'dinov2_with_registers')
    swin = _hf_folder(tmp_path / 'swin', 'swin')
    out = tmp_path / 'out'
    tool.main(['--images', str(images), '--size', '64', '128', '--device', 'cpu', '--threads', '1', '--num-vis', '0',
               '--out-dir', str(out), '--encoder', f'vit=hf:{vit}', '--encoder', f'swin=hf:{swin}', '--encoder',
               'stub=mmfusion.StubPyramid', '--cfg-options', 'vit.out_strides=[4,8]', 'swin.out_strides=[4,8]',
               'stub.out_strides=[4,8]'])
    doc = json.loads((out / 'profile.json').read_text())
    assert set(doc['encoders']) == {'vit', 'swin', 'stub'}
    # the plain ViT is profiled without random projections; the staged encoder with its own stages
    assert doc['meta']['encoders']['vit']['pyramid'] == dict(type='paper', project=False)
    assert 'pyramid' not in doc['meta']['encoders']['swin']
    ranking = doc['meta']['ranking']
    means = {n: np.mean(e['SC']) for n, e in doc['encoders'].items()}
    assert [n for n, _ in ranking['sc_ranking']] == sorted(means, key=lambda n: -means[n])
    printed = capsys.readouterr().out
    assert f"master = {doc['selection']['master']}" in printed and 'ahead by' in printed


def test_library_errors_state_the_problem_and_the_tool_adds_the_flag(tool, tmp_path, capsys):
    from mmfusion.apis.profiling import ProfileError, list_images
    with pytest.raises(ProfileError) as err:
        list_images(str(tmp_path / 'absent'))
    assert '--' not in str(err.value) and '--images' in err.value.advice
    with pytest.raises(SystemExit):
        tool.main(['--images', str(tmp_path / 'absent'), '--encoder', 'a=mmfusion.StubPyramid'])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == f'profile_vfm.py: error: image folder not found: {tmp_path / "absent"}; pass an existing folder ' \
                   'to --images'
