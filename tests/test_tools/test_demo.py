"""The README's main job (tools/demo.py) runs end to end at toy size and writes its whole report."""
import json
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def test_demo_smoke_writes_the_report(tmp_path):
    out, data = tmp_path / 'report', tmp_path / 'data'
    res = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'demo.py'), '--smoke', '--out-dir', str(out),
                          '--data-root', str(data)], capture_output=True, text=True, timeout=900, cwd=str(tmp_path))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
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
