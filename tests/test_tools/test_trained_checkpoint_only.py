"""Testing and inference need only the trained checkpoint: building a model reads no pretrained file (weights load
in init_weights, which the Runner calls before training only)."""
import os.path as osp

import pytest
from mmengine.config import Config

import mmfusion.registry  # noqa: F401  (compat fixes and registries, before anything builds)
from tests.test_tools.test_train_test_tools import cityscapes_root, tiny_flagship  # noqa: F401  (fixture)


@pytest.fixture(scope='module')
def trained(cityscapes_root, tmp_path_factory):  # noqa: F811
    from tools.train import main as train
    out = tmp_path_factory.mktemp('trained')
    cfg_path = tiny_flagship(cityscapes_root, str(out / 'tiny_d3s2.py'))
    train([cfg_path, '--work-dir', str(out / 'work')])
    # The same config pointing at pretrained files this machine does not have.
    cfg = Config.fromfile(cfg_path)
    cfg.model.backbone.master.checkpoint = str(out / 'absent' / 'dinov3.pth')
    cfg.model.backbone.auxiliary.checkpoint = str(out / 'absent' / 'sam2.pt')
    cfg.dump(str(out / 'no_pretrained.py'))
    return str(out / 'no_pretrained.py'), str(out / 'work' / 'iter_2.pth'), out


def test_test_tool_runs_from_the_trained_checkpoint_alone(trained):
    from tools.test import main as test
    cfg_path, ckpt, out = trained
    metrics = test([cfg_path, ckpt, '--work-dir', str(out / 'test')])
    assert 'coco/segm_mAP' in metrics and 0.0 <= metrics['coco/segm_mAP'] <= 1.0


def test_inferencer_runs_from_the_trained_checkpoint_alone(trained, cityscapes_root):  # noqa: F811
    import glob

    from mmfusion.apis.inference import FusionInferencer
    cfg_path, ckpt, out = trained
    image = sorted(glob.glob(osp.join(cityscapes_root, 'leftImg8bit', 'val', '*', '*.png')))[0]
    FusionInferencer(cfg_path, ckpt)(image, out_dir=str(out / 'infer'))
    assert glob.glob(str(out / 'infer' / 'vis' / '*.png'))


def test_training_needs_the_pretrained_files(trained, capsys):
    from tools.train import main as train
    cfg_path, _, out = trained
    with pytest.raises(SystemExit):
        train([cfg_path, '--work-dir', str(out / 'retrain')])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'dinov3.pth' in err[0] and 'not found' in err[0]
