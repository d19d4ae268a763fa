"""configs/other_models/: the fused backbone under mmdet's DINO and Mask R-CNN (with FPN) and mmseg's UperNet.

Each config trains and tests through tools/train.py and tools/test.py at tiny sizes (tiny encoders of the real
architectures, the real heads, 2 iterations on generated Cityscapes-format scenes), a head or neck that does not
take the fused pyramid is refused before the Runner is built, and profile_vfm.py --emit-config writes the channels
of whatever reads the pyramid in each.
"""
from __future__ import annotations

import os.path as osp

import pytest
from mmengine.config import Config

import mmfusion.registry  # noqa: F401  (compat fixes and registries)
from tests._fusion_cfg import shrink_encoder

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DINO = 'other_models/dino-4scale_d3s2_8xb2-12e_coco.py'
MASK_RCNN = 'other_models/mask-rcnn_d3s2_fpn_1x_cityscapes.py'
UPERNET = 'other_models/upernet_d3s2_4xb2-80k_cityscapes-512x1024.py'
SIZE = (64, 128)  # (h, w) the tiny models see


@pytest.fixture(scope='module')
def cityscapes_root(tmp_path_factory):
    from mmfusion.datasets.synthetic_cityscapes import generate_synthetic_cityscapes
    root = tmp_path_factory.mktemp('cityscapes')
    generate_synthetic_cityscapes(str(root), num_train=4, num_val=2, height=128, width=256, seed=5, panoptic=False)
    return str(root) + '/'


def _shrink_backbone(model):
    bb = model.backbone
    for enc in (bb.master, bb.auxiliary) if bb.type == 'mmfusion.MasterAuxBackbone' else (bb, ):
        shrink_encoder(enc)


def _det_pipelines(with_mask: bool):
    scale = SIZE[::-1]  # mmdet takes (w, h)
    train = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True, with_mask=with_mask),
             dict(type='Resize', scale=scale, keep_ratio=True), dict(type='RandomFlip', prob=0.5),
             dict(type='PackDetInputs')]
    test = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=scale, keep_ratio=True),
            dict(type='LoadAnnotations', with_bbox=True, with_mask=with_mask),
            dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))]
    return train, test


def _det_data(cfg, root, with_mask):
    train, test = _det_pipelines(with_mask)
    for name, split, pipe in (('train_dataloader', 'train', train), ('val_dataloader', 'val', test),
                              ('test_dataloader', 'val', test)):
        dl = cfg[name]
        dl.update(batch_size=2 if split == 'train' else 1, num_workers=0, persistent_workers=False)
        dl.dataset = dict(type='CityscapesDataset', data_root=root,
                          ann_file=f'annotations/instancesonly_filtered_gtFine_{split}.json',
                          data_prefix=dict(img=f'leftImg8bit/{split}/'), test_mode=split != 'train',
                          filter_cfg=dict(filter_empty_gt=True, min_size=0), pipeline=pipe)
    ann = root + 'annotations/instancesonly_filtered_gtFine_val.json'
    metrics = cfg.val_evaluator if isinstance(cfg.val_evaluator, list) else [cfg.val_evaluator]
    kept = []
    for metric in metrics:
        if metric.type == 'CityScapesMetric':
            continue  # cityscapesscripts' evaluation of the full gtFine layout: covered by the flagship's tests
        metric.ann_file = ann
        kept.append(metric)
    cfg.val_evaluator = cfg.test_evaluator = kept
    cfg.train_cfg.update(max_epochs=1, val_interval=1)


def tiny(name: str, root: str, out: str) -> str:
    """The shipped config with tiny encoders and heads, on the generated scenes at 64x128, 2 iterations."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs', name))
    _shrink_backbone(cfg.model)
    if name == DINO:
        cfg.model.update(num_queries=10)
        cfg.model.encoder.num_layers = 1
        cfg.model.decoder.num_layers = 1
        cfg.model.bbox_head.num_classes = 8
        cfg.model.dn_cfg.group_cfg.num_dn_queries = 10
        cfg.model.test_cfg.max_per_img = 10
        _det_data(cfg, root, with_mask=False)
    elif name == MASK_RCNN:
        _det_data(cfg, root, with_mask=True)
    else:  # UperNet
        cfg.model.data_preprocessor.size = SIZE
        for head in (cfg.model.decode_head, cfg.model.auxiliary_head):
            head.norm_cfg = dict(type='BN', requires_grad=True)  # SyncBN needs a process group
            head.channels = 16
        train = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                 dict(type='RandomResize', scale=(256, 128), ratio_range=(0.8, 1.2), keep_ratio=True),
                 dict(type='RandomCrop', crop_size=SIZE), dict(type='PackSegInputs')]
        test = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=SIZE[::-1], keep_ratio=True),
                dict(type='LoadAnnotations'), dict(type='PackSegInputs')]
        for loader, pipe in (('train_dataloader', train), ('val_dataloader', test), ('test_dataloader', test)):
            dl = cfg[loader]
            dl.update(batch_size=2 if loader == 'train_dataloader' else 1, num_workers=0, persistent_workers=False)
            dl.dataset.update(data_root=root, pipeline=pipe)
        cfg.train_cfg.update(max_iters=2, val_interval=2)
        cfg.default_hooks.checkpoint.interval = 2
    cfg.default_hooks.logger.interval = 1
    cfg.dump(out)
    return out


@pytest.mark.parametrize('name, metrics', [
    (DINO, ['coco/bbox_mAP']),
    (MASK_RCNN, ['coco/bbox_mAP', 'coco/segm_mAP', 'coco/boundary_AP']),
    (UPERNET, ['mIoU', 'mBIoU']),
], ids=['dino', 'mask-rcnn', 'upernet'])
def test_config_trains_and_tests_with_the_tools(name, metrics, cityscapes_root, tmp_path):
    from tools.test import main as test_main
    from tools.train import main as train_main
    cfg_path = tiny(name, cityscapes_root, str(tmp_path / 'tiny.py'))
    work = str(tmp_path / 'work')
    runner = train_main([cfg_path, '--work-dir', work])
    assert runner.iter == 2
    backbone = runner.model.backbone
    assert backbone.inject_strides == (16, ) and not any(p.requires_grad for p in backbone.auxiliary.parameters())
    assert any(p.requires_grad for p in backbone.master.parameters())
    ckpt = osp.join(work, 'epoch_1.pth' if name != UPERNET else 'iter_2.pth')
    assert osp.isfile(ckpt)
    result = test_main([cfg_path, ckpt, '--work-dir', str(tmp_path / 'test')])
    for key in metrics:
        assert 0 <= result[key] <= 100, (key, result[key])


def _build_refusal(name, options, root, tmp_path, capsys):
    from tools.train import main as train_main
    cfg_path = tiny(name, root, str(tmp_path / 'tiny.py'))
    with pytest.raises(SystemExit) as info:
        train_main([cfg_path, '--work-dir', str(tmp_path / 'w'), '--cfg-options', *options])
    assert info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize('name, options, words', [
    (MASK_RCNN, ['model.neck.1.in_channels=[256,512,1024,2048]'],
     'model.neck.1.in_channels=[256, 512, 1024, 2048] does not match the fused pyramid: FPN takes levels [0, 1, 2, 3]'
     ' (strides [4, 8, 16, 32]) of channels [128, 256, 512, 1024], so it needs in_channels=[128, 256, 512, 1024]'),
    (UPERNET, ['model.auxiliary_head.in_channels=1024'],
     'model.auxiliary_head.in_channels=1024 does not match the fused pyramid: FCNHead takes levels [2]'),
    (DINO, ['model.neck.1.in_channels=[128,256,512]'],
     'model.neck.1.in_channels=[128, 256, 512] does not match the fused pyramid'),
], ids=['mask-rcnn-fpn', 'upernet-aux', 'dino-mapper'])
def test_reader_channels_that_do_not_match_are_refused_before_the_runner(name, options, words, cityscapes_root,
                                                                         tmp_path, capsys):
    err = _build_refusal(name, options, cityscapes_root, tmp_path, capsys)
    assert words in err and err.count('\n') == 1, err
    assert not osp.exists(tmp_path / 'w' / 'last_checkpoint')


@pytest.mark.parametrize('name, options, words', [
    (MASK_RCNN, ['model.neck.1.start_level=3', 'model.neck.1.in_channels=[128,256,512,1024]'],
     'the neck arrangement drops the fused level OS16 where the auxiliary is injected: model.neck.1 (FPN) reads '
     'strides [32]'),
    (UPERNET, ['model.decode_head.in_index=[0,1,3]', 'model.decode_head.in_channels=[128,256,1024]'],
     'drops the fused level OS16'),
], ids=['fpn-start-level', 'upernet-in-index'])
def test_arrangement_that_drops_the_fused_level_is_refused(name, options, words, cityscapes_root, tmp_path, capsys):
    err = _build_refusal(name, options, cityscapes_root, tmp_path, capsys)
    assert words in err, err


def test_fused_backbone_without_the_fusion_neck_first_is_refused(cityscapes_root, tmp_path, capsys):
    from tools.train import main as train_main
    cfg = Config.fromfile(tiny(MASK_RCNN, cityscapes_root, str(tmp_path / 'tiny.py')))
    cfg.model.neck = [cfg.model.neck[1]]  # FPN alone: it would get the fused backbone's raw outputs
    cfg.dump(str(tmp_path / 'no_fusion_neck.py'))
    with pytest.raises(SystemExit):
        train_main([str(tmp_path / 'no_fusion_neck.py'), '--work-dir', str(tmp_path / 'w')])
    err = capsys.readouterr().err
    assert "needs neck=dict(type='mmfusion.MetricGuidedNeck') first" in err and "got neck ['FPN']" in err, err


# --- profile_vfm.py --emit-config on these bases ----------------------------------------------------------------

# A profiled master whose pyramid has distinct channels per stride, so each reader's in_channels show which levels it
# takes; the auxiliary is the tiny SAM2 Hiera.
PROFILED_MASTER = dict(type='mmfusion.DINOv3ViT', arch='tiny', pyramid=dict(type='paper', channels=[8, 16, 24, 32]),
                       checkpoint=None)
PROFILED_CHANNELS = {4: 8, 8: 16, 16: 24, 32: 32}


@pytest.mark.parametrize('name, expected', [
    (DINO, dict(neck_in_channels=[16, 24, 32], master_strides=[8, 16, 32])),
    (MASK_RCNN, dict(neck_in_channels=[8, 16, 24, 32])),
    (UPERNET, dict(decode_head=[8, 16, 24, 32], auxiliary_head=24)),
], ids=['dino', 'mask-rcnn', 'upernet'])
def test_emit_config_writes_the_channels_of_what_reads_the_pyramid(name, expected, tmp_path):
    from mmfusion.registry import MODELS
    from tests._tools import load_tool
    from tests.test_models.test_backbones.vfm_utils import TINY_HIERA, TINY_VIT
    tool = load_tool('analysis/profile_vfm.py')
    master = dict(PROFILED_MASTER, arch=dict(TINY_VIT))
    encoders = dict(d=master, s=dict(type='mmfusion.SAM2Hiera', arch=dict(TINY_HIERA), checkpoint=None))
    profiles = {n: {s: dict(SC=0.5, EF=1.0 + s) for s in (4, 8, 16, 32)} for n in encoders}
    channels = dict(d=PROFILED_CHANNELS, s={4: 8, 8: 16, 16: 32, 32: 64})
    out = tmp_path / 'emitted.py'
    tool.emit_config(str(out), osp.join(ROOT, 'configs', name), dict(master='d', auxiliary='s', inject_stride=16),
                     profiles, channels, 'profile.json', encoders)
    cfg = Config.fromfile(str(out))
    model = cfg.model
    if 'neck_in_channels' in expected:
        assert [n.type for n in model.neck] == ['mmfusion.MetricGuidedNeck', model.neck[1].type]
        assert list(model.neck[1].in_channels) == expected['neck_in_channels']
    else:
        assert list(model.decode_head.in_channels) == expected['decode_head']
        assert model.auxiliary_head.in_channels == expected['auxiliary_head']
    assert list(model.backbone.master.get('out_strides', [4, 8, 16, 32])) == expected.get('master_strides',
                                                                                          [4, 8, 16, 32])
    # The emitted backbone really gives those channels (built, not read back from the config).
    backbone = MODELS.build({k: v for k, v in model.backbone.items() if k != '_delete_'})
    want = expected.get('neck_in_channels') or expected['decode_head']
    assert list(backbone.out_channels) == want and backbone.inject_strides == (16, )
