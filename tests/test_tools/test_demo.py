"""The README's main job (tools/demo.py) runs end to end at toy size and writes its whole report; it writes only
into folders it made."""
import json
import os.path as osp
import re
import subprocess
import sys

import pytest
from PIL import Image

from tests._tools import load_tool

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def test_demo_smoke_writes_the_report(tmp_path):
    # folders with a space and a non-ASCII letter: paths reach the tools as arguments, not through --cfg-options
    out, data = tmp_path / 'démo out', tmp_path / 'data dir'
    res = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'demo.py'), '--smoke', '--out-dir', str(out),
                          '--data-root', str(data)], capture_output=True, text=True, timeout=900, cwd=str(tmp_path))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (out / '.mmfusion-demo').is_file() and (data / '.mmfusion-synthetic-cityscapes').is_file()
    assert 'RANDOMLY INITIALISED ENCODERS' in res.stdout  # no checkpoints here: said loudly
    summary = json.loads((out / 'summary.json').read_text())
    sel = summary['selection']
    assert sel['master'] in ('dinov3', 'sam2') and sel['auxiliary'] in ('dinov3', 'sam2')
    assert sel['inject_stride'] in (4, 8, 16, 32)
    # the profiler's --emit-config wrote the trained config: exactly the selected pair and s*
    assert summary['trained'] == sel
    from mmengine.config import Config
    fused = Config.fromfile(str(out / 'fused_config.py'))
    assert fused.model.backbone.inject_stride == sel['inject_stride']
    as_json = json.loads(json.dumps(fused.model.backbone.to_dict()))  # tuples as summary.json has them: lists
    assert as_json['master'] == summary['encoders'][sel['master']]
    assert as_json['auxiliary'] == summary['encoders'][sel['auxiliary']]
    profile = json.loads((out / 'profile' / 'profile.json').read_text())
    master_channels = profile['meta']['channels'][sel['master']]
    assert fused.model.decode_head.in_channels == [master_channels[s] for s in ('4', '8', '16', '32')]
    # untrained and trained scores, with the names mmseg and mmfusion's boundary metric print
    for scores in (summary['untrained'], summary['metrics']):
        assert {'mIoU', 'mBIoU', 'aAcc'} <= set(scores) and all(0 <= scores[k] <= 100 for k in ('mIoU', 'mBIoU'))
    for rel in ('profile/profile.json', 'profile/profile.csv', 'train.log', 'untrained/iter_0.pth',
                'train/iter_2.pth', 'demo_config.py'):
        assert (out / rel).is_file(), rel
    assert len(list((out / 'profile' / 'pca').glob('dinov3_os4_img*.png'))) >= 1
    assert len(summary['figures']['overlays']) == 2  # one per val image
    assert len(summary['scef_profiles']) >= 2  # before training and during it

    report = (out / 'README.md').read_text()
    assert 'Randomly initialised encoders' in report and f"s\\* = **OS{sel['inject_stride']}**" in report
    # every file the report names exists, and it embeds the profile, loss, SC/EF drift plots and the overlays
    images = re.findall(r'!\[[^\]]*\]\(([^)]+)\)', report)
    named = images + re.findall(r'`([\w./-]+\.(?:py|json|log|png|pth))`', report)  # links and `file.ext`
    assert len(named) >= 6 and all((out / rel).is_file() for rel in named), named
    figs = summary['figures']
    assert {figs['profile'], figs['loss'], figs['scef_drift'], *figs['overlays']} <= set(images)
    for rel in images:
        assert Image.open(out / rel).format == 'PNG'
    # the report's numbers are summary.json's
    rows = {m[0]: m[1:] for m in re.findall(r'^\| (\S+) \| ([\d.]+) \| ([\d.]+) \|$', report, re.M)}
    assert set(rows) == {k for k in summary['metrics'] if '.' not in k} and {'mIoU', 'mBIoU'} <= set(rows)
    for key, (untrained, trained) in rows.items():
        assert float(untrained) == summary['untrained'][key] and float(trained) == summary['metrics'][key]


@pytest.fixture(scope='module')
def demo():
    return load_tool('demo.py')


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
