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


def test_an_existing_out_file_is_kept(resave, ckpt, tmp_path, capsys):
    mine = tmp_path / 'mine.pth'
    mine.write_bytes(b'user data')
    with pytest.raises(SystemExit) as info:
        resave.main([str(ckpt), '--out', str(mine), '--yes'])
    assert info.value.code == 2
    assert capsys.readouterr().err == (f'error: {mine} exists; pass another --out, or --overwrite to replace it '
                                       '(nothing written)\n')
    assert mine.read_bytes() == b'user data'
    assert resave.main([str(ckpt), '--out', str(mine), '--yes', '--overwrite']) == 0
    assert torch.equal(torch.load(mine, weights_only=True)['state_dict']['w'], torch.arange(4.0))


def test_the_input_is_never_the_output(resave, ckpt, capsys):
    before = ckpt.read_bytes()
    with pytest.raises(SystemExit):
        resave.main([str(ckpt), '--out', str(ckpt), '--yes', '--overwrite'])
    assert 'is the input checkpoint' in capsys.readouterr().err
    assert ckpt.read_bytes() == before


def test_without_a_terminal_it_asks_for_yes_in_one_line(ckpt, tmp_path):
    """A batch job (stdin not a terminal): one line and exit 2, not input()'s EOFError."""
    import os
    import subprocess
    import sys

    from tests._tools import ROOT
    res = subprocess.run([sys.executable, 'tools/misc/resave_checkpoint.py', str(ckpt)], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert res.returncode == 2 and 'Traceback' not in res.stderr
    assert res.stderr.strip().splitlines() == [
        f'error: fully unpickling {ckpt} can run code stored in it, and there is no terminal to ask whether you '
        'trust it; if you do, pass --yes (nothing written)']
    assert not ckpt.with_name('iter_1.safe.pth').exists()
