"""tools/train.py, tools/test.py and tools/dist_train.sh on the flagship config, shrunk, on generated Cityscapes data.

A real MMEngine Runner trains the fused model (tiny DINOv3 master + tiny SAM2 auxiliary, real architectures), saves,
resumes, and is evaluated by the stock COCO and Cityscapes instance metrics.
"""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

import mmfusion.registry  # noqa: F401  (compat fixes and registries, before anything builds)
from tests._fusion_cfg import shrink_fusion_model
from tests._tools import free_port

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FLAGSHIP = osp.join(ROOT, 'configs', 'mask2former_d3s2_cityscapes.py')


@pytest.fixture(scope='module')
def cityscapes_root(tmp_path_factory):
    from mmfusion.datasets.synthetic_cityscapes import generate_synthetic_cityscapes
    root = tmp_path_factory.mktemp('cityscapes')
    generate_synthetic_cityscapes(str(root), num_train=4, num_val=2, height=128, width=256, seed=3, panoptic=False)
    return str(root)


def tiny_flagship(data_root: str, out: str, max_iters: int = 2) -> str:
    """The flagship config with tiny encoders/head, CPU-sized data and schedule, dumped to a file."""
    cfg = Config.fromfile(FLAGSHIP)
    shrink_fusion_model(cfg.model)
    crop = (128, 256)
    cfg.model.data_preprocessor.batch_augments[0].size = crop
    cfg.train_pipeline[3].update(scale=(256, 128), ratio_range=(0.8, 1.2))
    cfg.train_pipeline[4].crop_size = crop[::-1]  # (w, h) for mmdet's RandomCrop
    cfg.test_pipeline[1].scale = (256, 128)
    data_root = data_root.rstrip('/') + '/'
    for loader, pipe in (('train_dataloader', cfg.train_pipeline), ('val_dataloader', cfg.test_pipeline),
                         ('test_dataloader', cfg.test_pipeline)):
        dl = cfg[loader]
        dl.update(batch_size=2 if loader == 'train_dataloader' else 1, num_workers=0, persistent_workers=False)
        dl.dataset.update(data_root=data_root, pipeline=pipe, filter_cfg=dict(filter_empty_gt=True, min_size=0))
    for ev in ('val_evaluator', 'test_evaluator'):
        for metric in cfg[ev]:  # the COCO json, the Cityscapes gtFine folder, wherever a metric reads them
            if 'ann_file' in metric:
                metric.ann_file = data_root + 'annotations/instancesonly_filtered_gtFine_val.json'
            if 'seg_prefix' in metric:
                metric.update(seg_prefix=data_root + 'gtFine/val',
                              outfile_prefix=osp.join(osp.dirname(out), 'csmetric'))
    cfg.train_cfg.update(max_iters=max_iters, val_interval=max_iters)
    cfg.param_scheduler.end = max_iters
    cfg.optim_wrapper.type = 'OptimWrapper'  # float32: the recipe's AMP needs a GPU
    cfg.default_hooks.checkpoint.interval = 2
    cfg.default_hooks.logger.interval = 1
    cfg.log_processor.window_size = 1
    cfg.custom_hooks = [dict(type='mmfusion.SCEFHook', interval=2, num_probes=2, probe_size=(64, 128))]
    cfg.dump(out)
    return out


def _train(argv):
    from tools.train import main
    return main(argv)


def test_train_resume_and_test(cityscapes_root, tmp_path):
    cfg_path = tiny_flagship(cityscapes_root, str(tmp_path / 'tiny_d3s2.py'))
    work = str(tmp_path / 'work')
    runner = _train([cfg_path, '--work-dir', work])
    assert runner.iter == 2
    assert osp.isfile(osp.join(work, 'iter_2.pth'))
    # the frozen auxiliary is not in the optimizer
    opt_params = {id(p) for g in runner.optim_wrapper.optimizer.param_groups for p in g['params']}
    model = runner.model
    assert not opt_params & {id(p) for p in model.backbone.auxiliary.parameters()}
    assert {id(p) for p in model.backbone.master.parameters() if p.requires_grad} <= opt_params

    # SCEFHook wrote scalars into MMEngine's JSON scalars and a profile per interval
    scalars_files = [osp.join(r, f) for r, _, fs in os.walk(work) for f in fs if f == 'scalars.json']
    assert scalars_files
    keys = set()
    with open(scalars_files[0]) as f:
        for line in f:
            keys |= set(json.loads(line))
    assert any(k.startswith('scef/') and 'SC' in k for k in keys), sorted(keys)

    # resume: continues from iter 2 to 3
    cfg = Config.fromfile(cfg_path)
    cfg.train_cfg.max_iters = 3
    cfg.param_scheduler.end = 3
    cfg.dump(cfg_path)
    resumed = _train([cfg_path, '--work-dir', work, '--resume'])
    assert resumed.iter == 3

    from tools.test import main as test_main
    metrics = test_main([cfg_path, osp.join(work, 'iter_2.pth'), '--work-dir', str(tmp_path / 'test'),
                         '--show-dir', 'vis'])
    assert 'coco/segm_mAP' in metrics and 'cityscapes/mAP' in metrics
    assert 0.0 <= metrics['cityscapes/mAP'] <= 100.0
    vis = [f for r, _, fs in os.walk(tmp_path / 'test') for f in fs if f.endswith('.png')]
    assert len(vis) == 2  # one overlay per val image


def test_train_rejects_missing_config(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        _train([str(tmp_path / 'nope.py')])
    assert info.value.code == 2
    assert capsys.readouterr().err == (f'error: config file not found: {tmp_path / "nope.py"}; pass an existing '
                                       'config (they live under configs/)\n')


def test_missing_pretrained_weights_stop_init_weights_with_instructions():
    """Building reads no file; the missing default checkpoint is named when the weights load."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(FLAGSHIP)
    shrink_fusion_model(cfg.model, keep_checkpoints=True)
    model = MODELS.build(cfg.model)
    with pytest.raises(FileNotFoundError, match='checkpoints/dinov3_vitb16'):
        model.init_weights()


@pytest.mark.slow
def test_dist_train_two_cpu_processes_with_stock_nccl_config(cityscapes_root, tmp_path):
    cfg_path = tiny_flagship(cityscapes_root, str(tmp_path / 'tiny_d3s2.py'))
    work = str(tmp_path / 'dist')
    # The config keeps mmdet's default env_cfg (nccl) and the Runner's device_ids: mmfusion.compat makes both work
    # on a CPU-only torch (gloo, device_ids=None).
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()), OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    res = subprocess.run(
        ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), cfg_path, '2', '--work-dir', work, '--cfg-options',
         'custom_hooks=[]'],
        capture_output=True, text=True, env=env, timeout=600, cwd=str(tmp_path))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]  # both ranks ran: they share the lock
    assert osp.isfile(osp.join(work, 'iter_2.pth'))
    assert not osp.exists(osp.join(work, '.mmfusion-train.lock'))  # given back when the run ended
    log = [osp.join(r, f) for r, _, fs in os.walk(work) for f in fs if f.endswith('.log')]
    text = open(log[0]).read()
    assert "'world_size': 2" in text or 'world_size: 2' in text or 'Distributed launcher: pytorch' in text
    ckpt = torch.load(osp.join(work, 'iter_2.pth'), map_location='cpu')
    assert ckpt['meta']['iter'] == 2


def test_each_run_gets_its_own_visualizer(tmp_path):
    """mmdet's config names the visualizer 'visualizer' (a per-process singleton); the tools drop that name."""
    from mmfusion.apis.runner_utils import load_config
    cfg = load_config(FLAGSHIP, None, str(tmp_path), 'none')
    assert 'name' not in cfg.visualizer
    assert Config.fromfile(FLAGSHIP).visualizer.name == 'visualizer'


def test_semantic_mmseg_config_trains_and_tests(cityscapes_root, tmp_path):
    """The same tools on an mmseg-scoped config: fused model + stock mmseg Mask2Former, IoUMetric, overlays."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'mask2former_d3s2_cityscapes_semantic.py'))
    shrink_fusion_model(cfg.model)
    cfg.model.data_preprocessor.size = (64, 128)
    root = cityscapes_root.rstrip('/') + '/'
    train_pipe = cfg.train_dataloader.dataset.pipeline
    train_pipe[2] = dict(type='RandomResize', scale=(256, 128), ratio_range=(0.8, 1.2), keep_ratio=True)
    train_pipe[3].crop_size = (64, 128)  # mmseg's RandomCrop takes (h, w)
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dl = cfg[name]
        dl.update(batch_size=2 if name == 'train_dataloader' else 1, num_workers=0, persistent_workers=False)
        dl.dataset.data_root = root
    cfg.val_dataloader.dataset.pipeline[1].scale = (256, 128)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.train_cfg.update(max_iters=2, val_interval=2)
    cfg.param_scheduler.end = 2
    cfg.optim_wrapper.type = 'OptimWrapper'  # float32: the recipe's AMP needs a GPU
    cfg.default_hooks.checkpoint.interval = 2
    cfg.default_hooks.logger.interval = 1
    cfg.custom_hooks = [dict(type='mmfusion.SCEFHook', interval=2, num_probes=1, probe_size=(64, 128))]
    cfg_path = str(tmp_path / 'tiny_semantic.py')
    cfg.dump(cfg_path)

    work = str(tmp_path / 'work')
    runner = _train([cfg_path, '--work-dir', work])
    assert runner.iter == 2 and osp.isfile(osp.join(work, 'iter_2.pth'))
    assert len([f for f in os.listdir(osp.join(work, 'scef')) if f.endswith('.json')]) == 2  # before + iter 2

    from tools.test import main as test_main
    metrics = test_main([cfg_path, osp.join(work, 'iter_2.pth'), '--work-dir', str(tmp_path / 'test'),
                         '--show-dir', str(tmp_path / 'vis')])
    assert 0.0 <= metrics['mIoU'] <= 100.0
    assert len([f for r, _, fs in os.walk(tmp_path / 'vis') for f in fs if f.endswith('.png')]) == 2
