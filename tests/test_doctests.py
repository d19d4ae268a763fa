"""The package's docstring examples run as written (those that need weights or data on disk are marked +SKIP)."""
import doctest
import importlib
import os.path as osp
import pkgutil
import warnings

import pytest

import mmfusion

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _modules_with_examples():
    names = []
    for info in pkgutil.walk_packages(mmfusion.__path__, prefix='mmfusion.'):
        path = osp.join(ROOT, *info.name.split('.')) + ('/__init__.py' if info.ispkg else '.py')
        if osp.isfile(path) and '>>>' in open(path, encoding='utf-8').read():
            names.append(info.name)
    return names


MODULES = _modules_with_examples()


def test_examples_are_found():
    assert 'mmfusion.models.backbones.hf_backbone' in MODULES and len(MODULES) >= 5


@pytest.mark.parametrize('name', MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # random-weight warnings of the small example encoders
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f'{result.failed} of {result.attempted} examples of {name} failed (output above)'
