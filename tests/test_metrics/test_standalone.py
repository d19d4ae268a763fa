"""mmfusion.metrics is plain PyTorch: importing it pulls in no OpenMMLab package."""
import subprocess
import sys


def test_metrics_import_no_openmmlab_module():
    code = ('import sys, mmfusion.metrics; '
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mmengine', 'mmcv', 'mmdet', 'mmseg')))")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == '[]'


def test_registry_applies_the_compat_fixes():
    code = ('import torch, mmfusion.registry; from mmengine.logging.history_buffer import HistoryBuffer; '
            'print(HistoryBuffer in torch.serialization.get_safe_globals())')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'True'
