"""tools/misc/resave_checkpoint.py: writes a weights-only loadable copy and never replaces a file unasked."""
import pytest
import torch

from tests._tools import load_tool


@pytest.fixture()
def resave():
    return load_tool('misc/resave_checkpoint.py')


@pytest.fixture()
def ckpt(tmp_path):
    path = tmp_path / 'iter_1.pth'
    torch.save(dict(state_dict=dict(w=torch.arange(4.0)), meta=dict(iter=1)), path)
    return path


def test_writes_a_weights_only_copy_beside_the_input(resave, ckpt):
    assert resave.main([str(ckpt), '--yes']) == 0
    out = ckpt.with_name('iter_1.safe.pth')
    loaded = torch.load(out, weights_only=True)
    assert torch.equal(loaded['state_dict']['w'], torch.arange(4.0)) and loaded['meta'] == dict(iter=1)


def test_an_existing_out_file_is_kept(resave, ckpt, tmp_path):
    mine = tmp_path / 'mine.pth'
    mine.write_bytes(b'user data')
    with pytest.raises(SystemExit, match='exists; pass another --out, or --overwrite'):
        resave.main([str(ckpt), '--out', str(mine), '--yes'])
    assert mine.read_bytes() == b'user data'
    assert resave.main([str(ckpt), '--out', str(mine), '--yes', '--overwrite']) == 0
    assert torch.equal(torch.load(mine, weights_only=True)['state_dict']['w'], torch.arange(4.0))


def test_the_input_is_never_the_output(resave, ckpt):
    before = ckpt.read_bytes()
    with pytest.raises(SystemExit, match='is the input checkpoint'):
        resave.main([str(ckpt), '--out', str(ckpt), '--yes', '--overwrite'])
    assert ckpt.read_bytes() == before
