"""mmfusion.utils.images: the one image-folder reader of the profiler, SCEFHook and the inferencer."""
import numpy as np
import pytest
from PIL import Image

from mmfusion.utils.images import list_images, read_rgb


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
