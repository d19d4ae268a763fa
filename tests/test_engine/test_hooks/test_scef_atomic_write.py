"""SCEFHook's scef/iter_N.json is written aside and renamed: a full disk (or a kill) while writing leaves no partial
or 0-byte profile, and an earlier one unchanged."""
import errno
import json
import os
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import mmfusion.engine.hooks.scef_hook as scef_module
from mmfusion.engine.hooks import SCEFHook


class _Hub:
    def update_scalar(self, key, value):
        pass


def _runner(work_dir):
    return SimpleNamespace(message_hub=_Hub(), hooks=[], work_dir=str(work_dir),
                           visualizer=SimpleNamespace(add_scalars=lambda *a, **k: None),
                           logger=SimpleNamespace(info=lambda msg: None))


PROFILES = {'master': {8: {'SC': 0.5, 'EF': 2.0}}}


def test_a_full_disk_leaves_no_partial_profile(tmp_path, monkeypatch):
    hook = SCEFHook(interval=2)
    hook._probes = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    runner = _runner(tmp_path)
    hook._write(runner, 2, PROFILES, 0.1, nn.Identity())
    first = (tmp_path / 'scef' / 'iter_2.json').read_text()
    assert json.loads(first)['encoders']['master']['SC'] == [0.5]

    stock = scef_module.save_profile

    def full_disk(path, *args, **kwargs):
        with open(path, 'w') as f:
            f.write('{"encoders": {"mas')  # what fitted on the disk
        raise OSError(errno.ENOSPC, 'No space left on device', path)

    monkeypatch.setattr(scef_module, 'save_profile', full_disk)
    with pytest.raises(OSError):
        hook._write(runner, 4, PROFILES, 0.1, nn.Identity())
    assert sorted(os.listdir(tmp_path / 'scef')) == ['iter_2.json']  # no iter_4.json, no temporary file
    assert (tmp_path / 'scef' / 'iter_2.json').read_text() == first
    monkeypatch.setattr(scef_module, 'save_profile', stock)
    hook._write(runner, 4, PROFILES, 0.1, nn.Identity())
    assert json.loads((tmp_path / 'scef' / 'iter_4.json').read_text())['meta']['iter'] == 4
