"""tools/infer.py / FusionInferencer: overlays for an image, a folder and a video on the (shrunk) flagship model;
unreadable images named or skipped, huge ones read at the size the test pipeline needs."""
import os.path as osp

import cv2
import numpy as np
import pytest
from mmengine.config import Config

import mmfusion.registry  # noqa: F401  (compat fixes and registries, before anything builds)
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


def test_folder_skips_an_unreadable_image_and_predicts_the_rest(tiny_cfg, checkpoint, tmp_path, capsys):
    from tools.infer import main
    folder = tmp_path / 'imgs'
    folder.mkdir()
    _image(folder / 'a.png', 0)
    (folder / 'b.png').write_bytes(b'')
    _image(folder / 'c.jpg', 1)
    result = main([tiny_cfg, checkpoint, str(folder), '--out-dir', str(tmp_path / 'out')])
    assert sorted(p.name for p in (tmp_path / 'out' / 'vis').iterdir()) == ['a.png', 'c.jpg']
    reason = f'cannot read image {folder / "b.png"}: the file is empty (0 bytes); replace or remove it'
    assert result['skipped'] == [(str(folder / 'b.png'), reason)]
    captured = capsys.readouterr()
    assert f'warning: skipped {folder / "b.png"}: {reason}' in captured.err.splitlines()
    assert 'wrote overlays of 2 image(s)' in captured.out and 'skipped 1 unreadable' in captured.out


def test_huge_image_is_read_at_the_size_the_test_pipeline_resizes_it_to(tiny_cfg, checkpoint, tmp_path, capsys):
    from tools.infer import main
    big = str(tmp_path / 'big.jpg')
    _image_of_size(big, 300, 500)
    main([tiny_cfg, checkpoint, big, '--max-side', '200', '--out-dir', str(tmp_path / 'out')])
    # Resize(scale=(128, 64), keep_ratio=True) of 500x300: factor min(128/500, 64/300) = 0.2133 -> 107x64
    assert (f'note: {big} is 500x300 px, over the 200 px limit (max_side): read at 107x64, the size the test '
            'pipeline resizes it to (Resize scale=(128, 64), keep_ratio=True)') in capsys.readouterr().err
    assert cv2.imread(str(tmp_path / 'out' / 'vis' / 'big.jpg')).shape == (64, 107, 3)


def test_huge_image_without_a_test_resize_is_read_at_max_side(tiny_cfg, checkpoint, tmp_path, capsys):
    from mmfusion.apis.inference import FusionInferencer
    cfg = Config.fromfile(tiny_cfg)
    cfg.test_dataloader.dataset.pipeline = [s for s in cfg.test_dataloader.dataset.pipeline if s.type != 'Resize']
    big = str(tmp_path / 'big.png')
    _image_of_size(big, 160, 300)
    FusionInferencer(cfg, checkpoint, max_side=96)(big, out_dir=str(tmp_path / 'out'))
    assert (f'note: {big} is 300x160 px, over the 96 px limit (max_side): read at 96x51, the limit, as the test '
            'pipeline does not resize') in capsys.readouterr().err
    assert cv2.imread(str(tmp_path / 'out' / 'vis' / 'big.png')).shape == (51, 96, 3)


def test_image_within_the_limit_is_passed_as_is(tiny_cfg, checkpoint, tmp_path, capsys):
    from mmfusion.apis.inference import FusionInferencer
    _image(tmp_path / 'a.png')
    infer = FusionInferencer(tiny_cfg, checkpoint, max_side=128)
    assert infer.read_size(128, 64) is None
    ready, skipped = infer.prepare([str(tmp_path / 'a.png')], str(tmp_path / 'tmp'), skip_bad=False)
    assert ready == [str(tmp_path / 'a.png')] and skipped == [] and capsys.readouterr().err == ''


@pytest.mark.parametrize('shape', [(300, 500), (500, 300), (64, 128), (40, 1000)])
def test_resized_size_matches_mmcv_resize(shape):
    from mmcv.transforms import Resize

    from mmfusion.apis.inference import resized_size
    h, w = shape
    out = Resize(scale=(128, 64), keep_ratio=True)(dict(img=np.zeros((h, w, 3), np.uint8)))
    assert resized_size(w, h, (128, 64), True) == out['img'].shape[1::-1]
    assert resized_size(w, h, (128, 64), False) == (128, 64)


def _image_of_size(path, h, w):
    rng = np.random.default_rng(3)
    cv2.imwrite(str(path), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_infer_counts_the_images_it_wrote_in_a_folder_with_spaces_and_accents(tmp_path, capsys):
    """mmseg's result for one image is a dict of arrays (64 rows here), not a list per image: the count is of the
    images predicted, and it matches the overlays on disk. Paths with a space and a non-ASCII letter go through."""
    import torch
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    from tools.infer import main
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'mask2former_d3s2_cityscapes_semantic.py'))
    shrink_fusion_model(cfg.model)
    cfg.test_dataloader.dataset.pipeline[1].scale = (128, 64)
    base = tmp_path / 'démo out'
    base.mkdir()
    cfg_path = str(base / 'tiny semantic.py')
    cfg.dump(cfg_path)
    register_all_modules()
    ckpt = str(base / 'tiny ckpt.pth')
    torch.save(dict(state_dict=MODELS.build(Config.fromfile(cfg_path).model).state_dict(),
                    meta=dict(dataset_meta=dict(classes=tuple(f'c{i}' for i in range(19))))), ckpt)
    _image(base / 'one image.png')
    capsys.readouterr()
    main([cfg_path, ckpt, str(base / 'one image.png'), '--out-dir', str(base / 'overlays')])
    out = capsys.readouterr().out
    assert f'wrote overlays of 1 image(s) to {base / "overlays" / "vis"}' in out, out
    assert sorted(p.name for p in (base / 'overlays' / 'vis').iterdir()) == ['one image.png']
