"""tools/analysis/get_flops.py on shipped configs shrunk to tiny encoders and heads (mmdet and mmseg scopes)."""
import json
import os.path as osp

import pytest
from mmengine.config import Config

import mmfusion.registry  # noqa: F401  (compat fixes and registries, before anything builds)
from tests._fusion_cfg import shrink_fusion_model
from tools.analysis.get_flops import main

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = osp.join(ROOT, 'configs')


def _tiny(name: str, out_dir, test_scale=None) -> str:
    """A shipped config with tiny encoders and head, dumped to a file."""
    cfg = Config.fromfile(osp.join(CONFIGS, name))
    shrink_fusion_model(cfg.model)
    if test_scale is not None:
        for step in cfg.test_dataloader.dataset.pipeline:
            if step.type == 'Resize':
                step.scale = test_scale
    path = osp.join(str(out_dir), osp.basename(name))
    cfg.dump(path)
    return path


@pytest.fixture(scope='module')
def configs(tmp_path_factory):
    out = tmp_path_factory.mktemp('configs')
    return dict(
        fused=_tiny('mask2former_d3s2_cityscapes.py', out, test_scale=(96, 64)),
        baseline=_tiny('baselines/mask2former_d3_cityscapes.py', out),
        semantic=_tiny('mask2former_d3s2_cityscapes_semantic.py', out))


def _run(argv, tmp_path):
    out = str(tmp_path / 'flops.json')
    returned = main([*argv, '--json', out])
    with open(out) as f:
        written = json.load(f)
    assert written == json.loads(json.dumps(returned))
    return written


def _error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    # building may warn on stderr before; the error is the one last line
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith('get_flops.py: error: ')
    assert not any('error' in line for line in lines[:-1])
    return lines[-1]


def test_fused_mmdet_config_components_add_up(configs, tmp_path, capsys):
    result = _run([configs['fused'], '--shape', '64', '96'], tmp_path)
    comps = {c['key']: c for c in result['components']}
    assert list(comps)[:6] == ['master', 'auxiliary', 'neck', 'pixel_decoder', 'transformer_decoder', 'head_other']
    for field in ('params', 'trainable', 'frozen', 'flops'):
        assert sum(c[field] for c in comps.values()) == result['total'][field], field
    assert comps['auxiliary']['frozen'] == comps['auxiliary']['params'] > 0
    assert comps['auxiliary']['trainable'] == 0
    assert result['input_shape'] == [64, 96]
    printed = capsys.readouterr().out
    assert 'auxiliary encoder' in printed and 'Not counted' in printed


def test_default_shape_is_the_config_test_size(configs, tmp_path):
    result = _run([configs['fused']], tmp_path)
    assert result['input_shape'] == [64, 96]  # test pipeline Resize scale=(96, 64), (w, h)


def test_mmseg_config_runs(configs, tmp_path):
    result = _run([configs['semantic'], '--shape', '64', '64'], tmp_path)
    comps = {c['key']: c for c in result['components']}
    assert comps['pixel_decoder']['flops'] > 0 and comps['transformer_decoder']['flops'] > 0
    assert sum(c['flops'] for c in comps.values()) == result['total']['flops']


def test_compare_prints_ratios_of_the_totals(configs, tmp_path, capsys):
    result = _run([configs['fused'], '--compare', configs['baseline'], '--shape', '64', '96'], tmp_path)
    a, b = result['a']['total'], result['b']['total']
    total = result['comparison']['total']
    assert total['flops'] == dict(a=a['flops'], b=b['flops'], ratio=a['flops'] / b['flops'])
    assert total['params']['ratio'] == a['params'] / b['params']
    # the baseline's encoder faces the fused model's master
    assert result['comparison']['master']['name'] == 'master encoder / encoder'
    total_row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith('total '))
    cells = total_row.split()
    assert cells[3] == f'{a["params"] / b["params"]:.2f}x'
    assert cells[9] == f'{a["flops"] / b["flops"]:.2f}x'


def test_unknown_config_is_a_one_line_error(tmp_path, capsys):
    err = _error([str(tmp_path / 'missing.py'), '--shape', '64', '64'], capsys)
    assert 'config file not found' in err and 'missing.py' in err


def test_a_model_other_than_mask2former_is_measured_encoder_and_heads(tmp_path):
    """Any mmseg/mmdet model runs through its test-time _forward: here mmseg's FCN on a ResNet-18, whose decode head
    is one 3x3 conv (64 -> 8 channels on the 8x8 OS8 map of a 64x64 image), a 1x1 classifier (8 -> 3) and the
    concat conv, counted by hand below."""
    cfg = tmp_path / 'fcn.py'
    cfg.write_text(
        "default_scope = 'mmseg'\n"
        "model = dict(type='EncoderDecoder',\n"
        "             backbone=dict(type='ResNetV1c', depth=18, base_channels=8, num_stages=4,\n"
        "                           out_indices=(3, ), norm_cfg=dict(type='BN')),\n"
        "             decode_head=dict(type='FCNHead', in_channels=64, in_index=0, channels=8, num_convs=1,\n"
        "                              concat_input=False, num_classes=3, norm_cfg=dict(type='BN')))\n")
    result = main([str(cfg), '--shape', '64', '64', '--json', str(tmp_path / 'f.json')])
    rows = {c['key']: c for c in result['components']}
    assert set(rows) >= {'encoder', 'heads'} and 'pixel_decoder' not in rows
    # ResNetV1c's stem keeps OS32 at 64x64 -> a 2x2 map, 64 channels (base_channels 8 x 8).
    head_macs = 2 * 2 * (64 * 8 * 9 + 8 * 3)
    assert rows['heads']['flops'] == head_macs
    assert rows['encoder']['flops'] > 0


def test_non_positive_shape_is_a_one_line_error(configs, capsys):
    err = _error([configs['fused'], '--shape', '0', '64'], capsys)
    assert 'two positive ints' in err and '(0, 64)' in err
