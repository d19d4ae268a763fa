"""generate_synthetic_cityscapes replaces only a dataset it wrote itself: a real Cityscapes copy is never touched."""
import pytest

from mmfusion.datasets.synthetic_cityscapes import generate_synthetic_cityscapes
from mmfusion.utils.errors import UserError


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob('*') if p.is_file())


def test_a_real_dataset_is_refused_even_with_overwrite(tmp_path):
    img = tmp_path / 'leftImg8bit' / 'val' / 'frankfurt' / 'frankfurt_000000_000019_leftImg8bit.png'
    img.parent.mkdir(parents=True)
    img.write_bytes(b'real image')
    (tmp_path / 'gtFine' / 'val').mkdir(parents=True)
    before = _files(tmp_path)
    with pytest.raises(UserError, match=r'holds leftImg8bit/, gtFine/ that this generator did not write \(no '
                       r'.mmfusion-synthetic-cityscapes in it\), e.g. a real Cityscapes copy; choose another out_dir '
                       r'\(nothing was deleted\)$'):
        generate_synthetic_cityscapes(str(tmp_path), num_train=1, num_val=0, height=32, width=64, overwrite=True)
    assert _files(tmp_path) == before and img.read_bytes() == b'real image'


def test_own_dataset_is_marked_and_replaced_leaving_other_files(tmp_path):
    generate_synthetic_cityscapes(str(tmp_path), num_train=1, num_val=0, height=32, width=64, panoptic=False)
    assert (tmp_path / '.mmfusion-synthetic-cityscapes').is_file()
    (tmp_path / 'notes.txt').write_text('mine')
    generate_synthetic_cityscapes(str(tmp_path), num_train=0, num_val=1, height=32, width=64, overwrite=True,
                                  panoptic=False)
    assert (tmp_path / 'notes.txt').read_text() == 'mine'
    assert not (tmp_path / 'leftImg8bit' / 'train').exists()
    assert len(list((tmp_path / 'leftImg8bit' / 'val').glob('*/*.png'))) == 1


def test_a_folder_with_unrelated_files_is_written_into_and_marked(tmp_path):
    (tmp_path / 'README').write_text('mine')
    generate_synthetic_cityscapes(str(tmp_path), num_train=1, num_val=0, height=32, width=64, panoptic=False)
    assert (tmp_path / 'README').read_text() == 'mine' and (tmp_path / '.mmfusion-synthetic-cityscapes').is_file()
