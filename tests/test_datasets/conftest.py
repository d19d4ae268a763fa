import pytest

from mmfusion.datasets.synthetic_cityscapes import generate_synthetic_cityscapes

# One small synthetic dataset shared (read-only) by the dataset tests.
TINY = dict(num_train=2, num_val=3, height=128, width=256, seed=3)


@pytest.fixture(scope='session')
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('synthetic_cityscapes')
    generate_synthetic_cityscapes(str(root), **TINY)
    return root
