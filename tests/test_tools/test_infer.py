"""tools/infer.py / FusionInferencer: overlays for an image, a folder and a video, on the (shrunk) flagship model."""
import os.path as osp

import cv2
import numpy as np
import pytest
from mmengine.config import Config

import mmfusion  # noqa: F401
from tests._fusion_cfg import shrink_fusion_model

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.fixture(scope='module')
def tiny_cfg(tmp_path_factory):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'mask2former_d3s2_cityscapes.py'))
    shrink_fusion_model(cfg.model)
    cfg.test_dataloader.dataset.pipeline[1].scale = (128, 64)
    path = str(tmp_path_factory.mktemp('cfg') / 'tiny.py')
    cfg.dump(path)
    return path


@pytest.fixture(scope='module')
def checkpoint(tiny_cfg, tmp_path_factory):
    """Weights as tools/train.py writes them (a state_dict with dataset meta), from a freshly built model."""
    import torch
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    model = MODELS.build(Config.fromfile(tiny_cfg).model)
    path = str(tmp_path_factory.mktemp('ckpt') / 'tiny.pth')
    meta = dict(dataset_meta=dict(classes=('person', 'rider', 'car', 'truck', 'bus', 'train', 'motorcycle',
                                           'bicycle')))
    torch.save(dict(state_dict=model.state_dict(), meta=meta), path)
    return path


def _image(path, seed=0):
    rng = np.random.default_rng(seed)
    cv2.imwrite(str(path), rng.integers(0, 255, (64, 128, 3), dtype=np.uint8))


def test_infer_image_and_folder(tiny_cfg, checkpoint, tmp_path):
    from tools.infer import main
    folder = tmp_path / 'imgs'
    folder.mkdir()
    _image(folder / 'a.png', 0)
    _image(folder / 'b.jpg', 1)
    main([tiny_cfg, checkpoint, str(folder / 'a.png'), '--out-dir', str(tmp_path / 'one')])
    assert (tmp_path / 'one' / 'vis' / 'a.png').is_file()
    main([tiny_cfg, checkpoint, str(folder), '--out-dir', str(tmp_path / 'many')])
    vis = sorted(p.name for p in (tmp_path / 'many' / 'vis').iterdir())
    assert vis == ['a.png', 'b.jpg']
    assert cv2.imread(str(tmp_path / 'many' / 'vis' / 'a.png')).shape == (64, 128, 3)


def test_infer_video(tiny_cfg, checkpoint, tmp_path):
    from tools.infer import main
    video = str(tmp_path / 'clip.mp4')
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*'mp4v'), 5, (128, 64))
    for i in range(3):
        writer.write(np.full((64, 128, 3), 40 * i, np.uint8))
    writer.release()
    main([tiny_cfg, checkpoint, video, '--out-dir', str(tmp_path / 'out')])
    cap = cv2.VideoCapture(str(tmp_path / 'out' / 'clip_overlay.mp4'))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3


def test_infer_errors(tiny_cfg, checkpoint, tmp_path):
    from mmfusion.apis.inference import FusionInferencer
    with pytest.raises(FileNotFoundError, match='checkpoint not found'):
        FusionInferencer(tiny_cfg, str(tmp_path / 'missing.pth'))
    (tmp_path / 'empty').mkdir()
    infer = FusionInferencer(tiny_cfg, checkpoint)
    with pytest.raises(FileNotFoundError, match='no images'):
        infer(str(tmp_path / 'empty'))
