"""Distributed profiling: tools/analysis/dist_profile.sh with 2 CPU processes (gloo) shares the images out, reduces
the sums and writes, from rank 0 only, the same profile as one process."""
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests._tools import free_port

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.fixture(scope='module')
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp('images')
    rng = np.random.default_rng(1)
    for i in range(5):  # odd: the two shares differ in size
        img = rng.integers(0, 40, (48, 128, 3), dtype=np.uint8)
        img[8:40, 10 + 15 * i:70 + 10 * i] = rng.integers(60, 255, 3)
        Image.fromarray(img).save(folder / f'{i:02d}.png')
    return str(folder)


def _args(image_dir, out_dir):
    return ['--images', image_dir, '--size', '48', '128', '--device', 'cpu', '--threads', '1', '--num-vis', '1',
            '--out-dir', str(out_dir), '--custom-imports', 'tests._stubs', '--encoder', 'a=mmfusion.StubPyramid',
            '--encoder', 'b=mmfusion.StubPyramid', '--cfg-options', 'a.out_strides=[4,8]', 'b.out_strides=[4,8]',
            'b.channels=[8,8,8,8]']


@pytest.mark.slow
def test_two_processes_write_the_profile_of_one(image_dir, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1', PYTHON=sys.executable, PORT=str(free_port()))
    one = tmp_path / 'one'
    subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'analysis', 'profile_vfm.py'), *_args(image_dir, one)],
                   check=True, capture_output=True, env=env, cwd=str(tmp_path), timeout=300)
    two = tmp_path / 'two'
    res = subprocess.run(['bash', osp.join(ROOT, 'tools', 'analysis', 'dist_profile.sh'), '2',
                          *_args(image_dir, two)], capture_output=True, text=True, env=env, cwd=str(tmp_path),
                         timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    a, b = (json.loads((d / 'profile.json').read_text()) for d in (one, two))
    assert a['selection'] == b['selection'] and a['meta']['images'] == b['meta']['images']
    assert a['meta']['num_images'] == b['meta']['num_images'] == 5
    for name, entry in a['encoders'].items():
        assert entry.keys() == b['encoders'][name].keys()
        for key, vals in entry.items():
            np.testing.assert_allclose(b['encoders'][name][key], vals, rtol=1e-6, atol=1e-9, err_msg=f'{name}.{key}')
    # rank 0 alone writes; the PCA pictures are rank 0's share
    assert sorted(os.listdir(two)) == sorted(os.listdir(one))
    assert (two / 'pca' / 'a_os4_img0.png').is_file()
