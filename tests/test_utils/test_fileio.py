"""mmfusion.utils.fileio: a tool writes into, or clears, only folders it created; a user's file always survives."""
import pytest

from mmfusion.utils.errors import UserError
from mmfusion.utils.fileio import claim_dir, is_owned, refuse_existing, remove_outputs


def test_claim_dir_creates_and_marks_a_new_folder(tmp_path):
    out = tmp_path / 'a' / 'b'
    assert claim_dir(str(out), 'demo', '--out-dir') == str(out)
    assert sorted(p.name for p in out.iterdir()) == ['.mmfusion-demo']
    assert is_owned(str(out), 'demo') and not is_owned(str(out), 'infer')


def test_claim_dir_accepts_an_empty_or_owned_folder(tmp_path):
    claim_dir(str(tmp_path), 'infer', '--out-dir')  # empty: claimed
    (tmp_path / 'vis.png').write_bytes(b'x')
    claim_dir(str(tmp_path), 'infer', '--out-dir')  # not empty, but ours
    assert (tmp_path / 'vis.png').read_bytes() == b'x'


def test_claim_dir_refuses_a_users_folder_and_leaves_it_alone(tmp_path):
    (tmp_path / 'thesis.tex').write_text('mine')
    with pytest.raises(UserError, match=r'--out-dir .* mmfusion did not create .*pass --out-dir a new or empty folder'):
        claim_dir(str(tmp_path), 'demo', '--out-dir')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['thesis.tex']


def test_claim_dir_refuses_another_tools_folder(tmp_path):
    claim_dir(str(tmp_path), 'work-dir', '--work-dir')
    (tmp_path / 'iter_2.pth').write_bytes(b'')
    with pytest.raises(UserError, match='.mmfusion-demo'):
        claim_dir(str(tmp_path), 'demo', '--out-dir')


def test_claim_dir_refuses_a_file(tmp_path):
    (tmp_path / 'f').write_text('mine')
    with pytest.raises(UserError, match='is a file'):
        claim_dir(str(tmp_path / 'f'), 'demo', '--out-dir')
    assert (tmp_path / 'f').read_text() == 'mine'


def test_claim_dir_check_only_creates_nothing(tmp_path):
    claim_dir(str(tmp_path / 'new'), 'infer', '--out-dir', create=False)
    assert not (tmp_path / 'new').exists()


def test_remove_outputs_deletes_only_the_named_entries(tmp_path):
    claim_dir(str(tmp_path), 'demo', '--out-dir')
    (tmp_path / 'train').mkdir()
    (tmp_path / 'train' / 'iter_2.pth').write_bytes(b'')
    (tmp_path / 'summary.json').write_text('{}')
    (tmp_path / 'notes.txt').write_text('mine')
    removed = remove_outputs(str(tmp_path), 'demo', ['train', 'summary.json', 'README.md'], '--out-dir')
    assert sorted(p.split('/')[-1] for p in removed) == ['summary.json', 'train']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['.mmfusion-demo', 'notes.txt']


def test_remove_outputs_refuses_an_unmarked_folder(tmp_path):
    (tmp_path / 'train').mkdir()
    (tmp_path / 'train' / 'data.bin').write_bytes(b'1')
    with pytest.raises(UserError, match='did not create'):
        remove_outputs(str(tmp_path), 'demo', ['train'], '--out-dir')
    assert (tmp_path / 'train' / 'data.bin').read_bytes() == b'1'


def test_remove_outputs_takes_names_not_paths(tmp_path):
    claim_dir(str(tmp_path), 'demo', '--out-dir')
    with pytest.raises(ValueError, match='entry names'):
        remove_outputs(str(tmp_path), 'demo', ['../x'], '--out-dir')


def test_refuse_existing_names_the_first_and_counts_the_rest(tmp_path):
    for name in ('a.json', 'b.json'):
        (tmp_path / name).write_text('mine')
    refuse_existing([str(tmp_path / 'new.json')], 'pass --overwrite')
    with pytest.raises(UserError, match=r'a.json already exists \(and 1 more\); pass --overwrite'):
        refuse_existing([str(tmp_path / n) for n in ('a.json', 'b.json', 'c.json')], 'pass --overwrite')
