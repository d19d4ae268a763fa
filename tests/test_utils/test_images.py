"""mmfusion.utils.images: the one image reader of the profiler, SCEFHook and the inferencer; bad files are named."""
import numpy as np
import pytest
from PIL import Image

from mmfusion.utils.errors import UnreadableImageError
from mmfusion.utils.images import check_image, fit_size, image_size, list_images, read_image, read_rgb


def _write(path, h=6, w=10):
    arr = np.zeros((h, w, 3), np.uint8)
    arr[..., 0] = 200  # pure red: checks RGB order
    Image.fromarray(arr).save(path)


def test_list_images_sorted_filtered_and_limited(tmp_path):
    for name in ('b.png', 'a.jpg', 'c.webp', 'notes.txt'):
        (tmp_path / name).write_bytes(b'')
    assert [p.split('/')[-1] for p in list_images(str(tmp_path))] == ['a.jpg', 'b.png', 'c.webp']
    assert [p.split('/')[-1] for p in list_images(str(tmp_path), num=1)] == ['a.jpg']
    assert [p.split('/')[-1] for p in list_images(str(tmp_path), exts=('.png', ))] == ['b.png']


def test_list_images_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match='image folder not found'):
        list_images(str(tmp_path / 'missing'))
    with pytest.raises(FileNotFoundError, match=r'no images \(.png'):
        list_images(str(tmp_path))


def test_read_rgb_shape_order_and_resize(tmp_path):
    _write(tmp_path / 'x.png')
    img = read_rgb(str(tmp_path / 'x.png'))
    assert img.shape == (3, 6, 10) and img.dtype.is_floating_point is False
    assert img[0].min() == 200 and img[1:].max() == 0
    assert read_rgb(str(tmp_path / 'x.png'), size=(3, 5)).shape == (3, 3, 5)


def test_empty_file_is_named(tmp_path):
    (tmp_path / 'empty.png').write_bytes(b'')
    with pytest.raises(UnreadableImageError, match=r'empty.png: the file is empty \(0 bytes\)'):
        read_rgb(str(tmp_path / 'empty.png'))


def test_non_image_is_named(tmp_path):
    (tmp_path / 'notes.jpg').write_text('not an image at all')
    with pytest.raises(UnreadableImageError, match='notes.jpg: not an image file'):
        image_size(str(tmp_path / 'notes.jpg'))


def test_truncated_image_passes_the_header_check_but_not_decoding(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(tmp_path / 'full.png')
    data = (tmp_path / 'full.png').read_bytes()
    (tmp_path / 'cut.png').write_bytes(data[:len(data) // 2])
    assert image_size(str(tmp_path / 'cut.png')) == (60, 40)
    with pytest.raises(UnreadableImageError, match='cut.png: its data is corrupt or truncated'):
        check_image(str(tmp_path / 'cut.png'))
    assert check_image(str(tmp_path / 'full.png')) == (60, 40)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match='image not found'):
        image_size(str(tmp_path / 'nope.png'))


def test_fit_size_keeps_the_aspect_and_never_enlarges():
    assert fit_size(8000, 6000, 4096) == (4096, 3072)
    assert fit_size(600, 800, 100) == (75, 100)
    assert fit_size(50, 20, 100) == (50, 20)


def test_bounded_read_of_a_large_jpeg_has_the_asked_size_and_colour(tmp_path):
    arr = np.zeros((480, 640, 3), np.uint8)
    arr[..., 2] = 220  # pure blue
    Image.fromarray(arr).save(tmp_path / 'big.jpg', quality=95)
    small = read_image(str(tmp_path / 'big.jpg'), (80, 60), bounded=True)
    assert small.shape == (60, 80, 3) and small.dtype == np.uint8
    assert abs(int(small[..., 2].mean()) - 220) <= 3 and small[..., :2].max() <= 5
