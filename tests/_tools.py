"""Loading a script of tools/ as a module, for tests that call its ``main(argv)`` in-process."""
import importlib.util
import os.path as osp

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def load_tool(relpath: str):
    """The script ``tools/<relpath>`` as a fresh module (e.g. ``load_tool('analysis/profile_vfm.py')``)."""
    name = osp.splitext(osp.basename(relpath))[0]
    spec = importlib.util.spec_from_file_location(name, osp.join(ROOT, 'tools', relpath))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
