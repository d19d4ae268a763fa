"""Loading a script (of tools/, benchmarks/ or an installed package) as a module, for tests that call it in-process."""
import importlib.util
import os.path as osp

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def load_script(path: str, name: str = None):
    """The Python file ``path`` (absolute, or relative to the repository root) as a fresh module."""
    path = osp.join(ROOT, str(path))
    spec = importlib.util.spec_from_file_location(name or osp.splitext(osp.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_tool(relpath: str):
    """The script ``tools/<relpath>`` as a fresh module (e.g. ``load_tool('analysis/profile_vfm.py')``)."""
    return load_script(osp.join('tools', relpath))
