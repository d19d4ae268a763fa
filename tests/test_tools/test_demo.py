"""The README's main job (tools/demo.py) runs end to end at toy size and writes its whole report; it writes only
into folders it made."""
import importlib.util
import json
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def test_demo_smoke_writes_the_report(tmp_path):
    out, data = tmp_path / 'report', tmp_path / 'data'
    res = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'demo.py'), '--smoke', '--out-dir', str(out),
                          '--data-root', str(data)], capture_output=True, text=True, timeout=900, cwd=str(tmp_path))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (out / '.mmfusion-demo').is_file() and (data / '.mmfusion-synthetic-cityscapes').is_file()
    assert 'RANDOMLY INITIALISED ENCODERS' in res.stdout  # no checkpoints here: said loudly
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['selection']['master'] in ('dinov3', 'sam2')
    assert summary['selection']['inject_stride'] in (4, 8, 16, 32)
    assert {'coco/segm_mAP', 'cityscapes/mAP'} <= set(summary['metrics'])
    for rel in ('profile/profile.json', 'profile/profile.csv', 'profile/profile.png', 'train.log', 'README.md',
                'train/iter_2.pth', 'demo_config.py'):
        assert (out / rel).is_file(), rel
    assert len(list((out / 'profile' / 'pca').glob('dinov3_os4_img*.png'))) >= 1
    assert len(list((out / 'overlays').glob('*.png'))) == 2  # one per val image
    assert len(summary['scef_profiles']) >= 1
    report = (out / 'README.md').read_text()
    assert 'Randomly initialised encoders' in report and 's* = OS' in report
    # the trained config injects the auxiliary at the profile's s*
    cfg_text = (out / 'demo_config.py').read_text()
    assert f"inject_stride={summary['trained_inject_stride']}" in cfg_text.replace(' ', '')


@pytest.fixture(scope='module')
def demo():
    spec = importlib.util.spec_from_file_location('demo_tool', osp.join(ROOT, 'tools', 'demo.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rerun_clears_only_the_previous_reports_outputs(demo, tmp_path):
    out = tmp_path / 'report'
    out.mkdir()
    (out / '.mmfusion-demo').write_text('')
    (out / 'train').mkdir()
    (out / 'train' / 'iter_2.pth').write_bytes(b'old')
    (out / 'summary.json').write_text('{}')
    (out / 'my_notes.md').write_text('mine')
    assert demo.prepare_folders(str(out), str(tmp_path / 'data')) is False  # no data yet: generate
    assert sorted(p.name for p in out.iterdir()) == ['.mmfusion-demo', 'my_notes.md']


def test_data_root_of_an_earlier_run_is_reused(demo, tmp_path):
    data = tmp_path / 'data'
    (data / 'annotations').mkdir(parents=True)
    (data / '.mmfusion-synthetic-cityscapes').write_text('')
    assert demo.prepare_folders(str(tmp_path / 'out'), str(data)) is False  # incomplete: generated again
    (data / 'annotations' / 'instancesonly_filtered_gtFine_val.json').write_text('{}')
    assert demo.prepare_folders(str(tmp_path / 'out'), str(data)) is True
