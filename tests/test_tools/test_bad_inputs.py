"""Every tool on bad input: one line ``error: <problem>; <fix>`` on stderr, exit status 2, no traceback, and the
user's files untouched. The cases are the rows of docs/bad_inputs.md.

The tools run in-process through their ``main(argv)`` (the same ``run_tool`` guard as on the command line); two
cases run through a real interpreter to check what a shell sees.
"""
import json
import logging
import os
import os.path as osp
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

import mmfusion.registry  # noqa: F401  (compat fixes and registries, before anything builds)
from tests._tools import load_script
from tests.test_tools.test_train_test_tools import tiny_flagship

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOLS = {
    'train': 'tools/train.py', 'test': 'tools/test.py', 'infer': 'tools/infer.py', 'demo': 'tools/demo.py',
    'cityscapes': 'tools/dataset_converters/cityscapes.py', 'kitti360': 'tools/dataset_converters/kitti360.py',
    'make_synthetic': 'tools/dataset_converters/make_synthetic_cityscapes.py',
    'profile_vfm': 'tools/analysis/profile_vfm.py', 'resave': 'tools/misc/resave_checkpoint.py',
}


def _tool(name):
    return load_script(TOOLS[name], f'_bad_inputs_{name}')


def _user_folder(path, *names):
    """A folder holding the user's files (which must survive)."""
    os.makedirs(path, exist_ok=True)
    for name in names:
        full = osp.join(path, name)
        os.makedirs(osp.dirname(full), exist_ok=True)
        with open(full, 'w') as f:
            f.write(f'user file {name}')
    return path


def _image(path, h=64, w=128, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    """A tiny trained-config world: synthetic data, the tiny flagship config, a checkpoint of it and one of a
    config with another number of queries, images, and a raw Cityscapes-like folder of the user's."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from mmfusion.datasets.synthetic_cityscapes import generate_synthetic_cityscapes
    base = tmp_path_factory.mktemp('bad_inputs')
    root = str(base / 'cityscapes')
    generate_synthetic_cityscapes(root, num_train=2, num_val=1, height=64, width=128, seed=5, panoptic=False)
    cfg = tiny_flagship(root, str(base / 'tiny.py'))
    tiny = Config.fromfile(cfg)
    if tiny.optim_wrapper.get('type') == 'AmpOptimWrapper':  # the paper's AMP recipe needs a GPU: float32 here
        tiny.optim_wrapper.type = 'OptimWrapper'
        tiny.optim_wrapper.pop('loss_scale', None)
        tiny.optim_wrapper.pop('dtype', None)
        tiny.dump(cfg)
    register_all_modules()
    meta = dict(dataset_meta=dict(classes=('person', 'rider', 'car', 'truck', 'bus', 'train', 'motorcycle',
                                           'bicycle')))
    ckpts = {}
    for name, queries in (('own', None), ('other', 9)):
        model_cfg = Config.fromfile(cfg).model
        if queries:
            model_cfg.panoptic_head.num_queries = queries
        ckpts[name] = str(base / f'{name}.pth')
        torch.save(dict(state_dict=MODELS.build(model_cfg).state_dict(), meta=meta), ckpts[name])
    own = torch.load(ckpts['own'], map_location='cpu')
    # lacking one weight; as MMEngine writes it (the config in meta.cfg: align='mean_pad'); truncated; not a zip
    lacking = dict(own, state_dict={k: v for k, v in own['state_dict'].items()
                                    if k != 'panoptic_head.query_feat.weight'})
    torch.save(lacking, base / 'lacking.pth')
    torch.save(dict(own, meta=dict(meta, cfg=Config.fromfile(cfg).pretty_text)), base / 'meanpad.pth')
    data = open(ckpts['own'], 'rb').read()
    (base / 'truncated.pth').write_bytes(data[:len(data) // 2])
    # a profile of other encoders (ViT-B/16 + Hiera-B+) than the tiny model's
    _write(str(base / 'profile.json'), json.dumps(dict(
        encoders={}, selection=dict(master='dinov3', auxiliary='sam2', inject_stride=16),
        meta=dict(encoders=dict(dinov3=dict(type='mmfusion.DINOv3ViT', arch='vitb16'),
                                sam2=dict(type='mmfusion.SAM2Hiera', arch='base_plus'))))))
    (base / 'no_probes').mkdir()
    images = base / 'images'
    images.mkdir()
    _image(images / 'good.png')
    (base / 'empty.png').write_bytes(b'')
    (base / 'corrupt.jpg').write_bytes(b'\xff\xd8\xff\xe0 this is not a JPEG at all')
    bad_images = base / 'bad_images'
    bad_images.mkdir()
    (bad_images / 'a.png').write_bytes(b'')
    (bad_images / 'b.png').write_text('text')
    (base / 'no_images').mkdir()
    raw = _user_folder(str(base / 'raw_cityscapes'), 'leftImg8bit/val/x/x_leftImg8bit.png',
                       'gtFine/val/x/x_gtFine_labelIds.png')
    return SimpleNamespace(base=str(base), root=root, cfg=cfg, own=ckpts['own'], other=ckpts['other'],
                           images=str(images), bad_images=str(bad_images), raw=raw)


@pytest.fixture(autouse=True)
def log_to_this_tests_stdout():
    """MMEngine's loggers live for the process and keep the stdout they were made with; a Runner of an earlier test
    made them with that test's (now closed) captured stdout."""
    from mmengine.logging import MMLogger
    for logger in MMLogger._instance_dict.values():
        for handler in logger.handlers:
            if type(handler) is logging.StreamHandler:
                handler.stream = sys.stdout  # not setStream: it flushes the closed one
    yield


def _write(path, text):
    with open(path, 'w') as f:
        f.write(text)
    return path


# (id, tool, argv(env, tmp), the error line's expected parts, files that must survive, setup(monkeypatch))
CASES = [
    # --- tools/train.py
    ('train-missing-config', 'train', lambda e, t: [f'{t}/nope.py'],
     ['config file not found: ', 'nope.py; pass an existing config'], [], None),
    ('train-config-syntax-error', 'train', lambda e, t: [_write(f'{t}/broken.py', 'model = dict(\n')],
     ['config ', "broken.py has a syntax error at line 1: '(' was never closed; fix the file"], [], None),
    ('train-base-config-syntax-error', 'train',
     lambda e, t: [_write(f'{t}/child.py', "_base_ = ['./base.py']\n"), _write(f'{t}/base.py', 'x = 1\ny = [\n')][:1],
     ['child.py (its base ', "base.py) has a syntax error at line 2: '[' was never closed; fix the file"], [], None),
    ('train-config-missing-base', 'train', lambda e, t: [_write(f'{t}/child.py', "_base_ = ['./gone.py']\n")],
     ['cannot read config ', 'child.py', 'gone.py'], [], None),
    ('train-config-without-scope', 'train', lambda e, t: [_write(f'{t}/plain.py', 'model = dict(type="X")\n')],
     ["default_scope is None; mmfusion tools run configs that inherit an mmdet or mmseg recipe"], [], None),
    ('train-cfg-options-typo', 'train', lambda e, t: [e.cfg, '--cfg-options', 'model.nekc.type=X'],
     ['--cfg-options model.nekc.type: the config has no model.nekc (did you mean model.neck?); fix the key'], [], None),
    ('train-cfg-options-index', 'train', lambda e, t: [e.cfg, '--cfg-options', 'test_evaluator.9.ann_file=x.json'],
     ['--cfg-options test_evaluator.9.ann_file: test_evaluator is a list of ', '; use an index 0..'], [], None),
    ('train-unknown-type', 'train',
     lambda e, t: [e.cfg, '--work-dir', f'{t}/w', '--cfg-options', 'model.neck.type=NoSuchNeck'],
     ['NoSuchNeck is not in the', 'registry; check the type names in the config and --cfg-options'], [], None),
    ('train-unknown-argument', 'train',
     lambda e, t: [e.cfg, '--work-dir', f'{t}/w', '--cfg-options', 'model.neck.bogus=1'],
     ["unexpected keyword argument 'bogus'; check that key in the config and --cfg-options"], [], None),
    ('train-missing-data-root', 'train',
     lambda e, t: [e.cfg, '--cfg-options', f'train_dataloader.dataset.data_root={t}/cityscapes/'],
     ['data folder not found: ', 'cityscapes/ (train_dataloader.dataset.data_root)',
      'make_synthetic_cityscapes.py'], [], None),
    ('train-missing-annotations', 'train',
     lambda e, t: [e.cfg, '--cfg-options', f'train_dataloader.dataset.data_root={e.raw}/'],
     ['annotation file not found: ', 'instancesonly_filtered_gtFine_train.json (train_dataloader.dataset.ann_file)',
      'create it with: python tools/dataset_converters/cityscapes.py'], ['raw'], None),
    ('train-amp-without-gpu', 'train', lambda e, t: [e.cfg, '--amp'],
     ['--amp needs a GPU', 'drop --amp to train in float32 on the CPU'], [], 'no_gpu'),
    ('train-amp-wrapper-without-gpu', 'train',
     lambda e, t: [e.cfg, '--cfg-options', 'optim_wrapper.type=AmpOptimWrapper'],
     ['optim_wrapper.type is AmpOptimWrapper, which needs a GPU',
      'pass --cfg-options optim_wrapper.type=OptimWrapper'], [], 'no_gpu'),
    ('train-resume-missing', 'train', lambda e, t: [e.cfg, '--resume', f'{t}/gone.pth'],
     ['--resume ', 'gone.pth: no such checkpoint'], [], None),
    ('train-work-dir-of-user', 'train',
     lambda e, t: [e.cfg, '--work-dir', _user_folder(f'{t}/mine', 'thesis.tex')],
     ['--work-dir ', 'mine is a folder that mmfusion did not create', 'pass --work-dir a new or empty folder'],
     ['mine/thesis.tex'], None),
    ('train-resume-lacking-a-weight', 'train',
     lambda e, t: [e.cfg, '--work-dir', f'{t}/w', '--resume', f'{e.base}/lacking.pth'],
     ['lacking.pth does not fit the model of ', "1 of the model's ", ' weights are missing from it '
      '(panoptic_head.query_feat.weight); likely cause: '], [], None),
    ('train-load-from-lacking-a-weight', 'train',
     lambda e, t: [e.cfg, '--work-dir', f'{t}/w', '--load-from', f'{e.base}/lacking.pth'],
     ['lacking.pth does not fit the model of ', '(panoptic_head.query_feat.weight)',
      'for a fine-tuning load_from that is meant to be partial: tools/train.py --partial-load'], [], None),
    ('train-resume-truncated', 'train', lambda e, t: [e.cfg, '--work-dir', f'{t}/w', '--resume',
                                                      f'{e.base}/truncated.pth'],
     ['checkpoint ', 'truncated.pth is truncated or corrupt', 'pass an intact checkpoint'], [], None),
    ('train-load-from-truncated', 'train', lambda e, t: [e.cfg, '--work-dir', f'{t}/w', '--load-from',
                                                         f'{e.base}/truncated.pth'],
     ['checkpoint ', 'truncated.pth is truncated or corrupt'], [], None),
    ('train-load-from-missing', 'train', lambda e, t: [e.cfg, '--load-from', f'{t}/none.pth'],
     ['--load-from ', 'none.pth: no such checkpoint'], [], None),
    ('train-partial-load-without-load-from', 'train', lambda e, t: [e.cfg, '--partial-load'],
     ['--partial-load applies to a fine-tuning load_from only'], [], None),
    ('train-pretrained-missing', 'train',
     lambda e, t: [e.cfg, '--work-dir', f'{t}/w', '--cfg-options', f'model.backbone.master.checkpoint={t}/dino.pth'],
     ["Checkpoint '", "dino.pth' not found"], [], None),
    ('train-inject-stride-not-offered', 'train',
     lambda e, t: [e.cfg, '--work-dir', f'{t}/w', '--cfg-options', 'model.backbone.inject_stride=3'],
     ['model.backbone.inject_stride=3: 3 is not a stride the master (mmfusion.DINOv3ViT a custom arch) offers; '
      'use one of [4, 8, 16, 32]'], [], None),
    ('train-inject-auto-without-profile', 'train',
     lambda e, t: [e.cfg, '--work-dir', f'{t}/w', '--cfg-options', 'model.backbone.inject_stride=auto'],
     ["model.backbone.inject_stride='auto' reads s* from a profile, and model.backbone.profile is not set"], [], None),
    ('train-inject-auto-profile-of-other-encoders', 'train',
     lambda e, t: [e.cfg, '--work-dir', f'{t}/w', '--cfg-options', 'model.backbone.inject_stride=auto',
                   f'model.backbone.profile={e.base}/profile.json'],
     ['profiles master dinov3 (mmfusion.DINOv3ViT vitb16) and auxiliary sam2 (mmfusion.SAM2Hiera base_plus), but '
      'this model fuses master mmfusion.DINOv3ViT a custom arch and auxiliary mmfusion.SAM2Hiera a custom arch'],
     [], None),
    ('train-scef-probe-folder-missing', 'train',
     lambda e, t: [e.cfg, '--work-dir', f'{t}/w', '--cfg-options', f'custom_hooks.0.probe_images={t}/probes'],
     ['custom_hooks.0.probe_images ', 'probes: no such folder'], [], None),
    ('train-scef-probe-folder-empty', 'train',
     lambda e, t: [e.cfg, '--work-dir', f'{t}/w', '--cfg-options', f'custom_hooks.0.probe_images={e.base}/no_probes'],
     ['custom_hooks.0.probe_images ', 'no_probes holds no image'], [], None),
    # --- tools/test.py
    ('test-checkpoint-lacking-a-weight', 'test', lambda e, t: [e.cfg, f'{e.base}/lacking.pth', '--work-dir', f'{t}/w'],
     ['lacking.pth does not fit the model of ', "1 of the model's ", 'weights are missing from it '
      '(panoptic_head.query_feat.weight)'], [], None),
    ('test-checkpoint-with-another-align', 'test',
     lambda e, t: [e.cfg, f'{e.base}/meanpad.pth', '--work-dir', f'{t}/w', '--cfg-options',
                   'model.backbone.align=conv'],
     ['meanpad.pth does not fit the model of ', 'weights are missing from it (backbone.',
      "likely cause: model.backbone.align is 'conv' here but 'mean_pad' in the checkpoint's config"], [], None),
    ('test-truncated-checkpoint', 'test', lambda e, t: [e.cfg, f'{e.base}/truncated.pth', '--work-dir', f'{t}/w'],
     ['checkpoint ', 'truncated.pth is truncated or corrupt'], [], None),
    ('test-missing-checkpoint', 'test', lambda e, t: [e.cfg, f'{t}/none.pth'],
     ['checkpoint not found: ', 'none.pth; pass the .pth written by tools/train.py'], [], None),
    ('test-checkpoint-of-another-config', 'test', lambda e, t: [e.cfg, e.other, '--work-dir', f'{t}/w'],
     ['other.pth does not fit the model of ', '2 of ', 'weights have another shape',
      'panoptic_head.query_embed.weight (9, 32) vs (6, 32)', 'this checkpoint was not trained with this config'],
     [], None),
    ('test-out-not-pickle', 'test', lambda e, t: [e.cfg, e.own, '--out', f'{t}/r.json'],
     ['--out ', 'r.json must end with .pkl or .pickle'], [], None),
    ('test-out-exists', 'test', lambda e, t: [e.cfg, e.own, '--out', _write(f'{t}/r.pkl', 'mine')],
     ['r.pkl already exists; pass --out a new file name (nothing was overwritten)'], ['r.pkl'], None),
    ('test-show-dir-of-user', 'test',
     lambda e, t: [e.cfg, e.own, '--work-dir', f'{t}/w', '--show-dir', _user_folder(f'{t}/pics', 'a.png')],
     ['--show-dir ', 'pics is a folder that mmfusion did not create'], ['pics/a.png'], None),
    ('test-metric-output-of-user', 'test',
     lambda e, t: [e.cfg, e.own, '--work-dir', f'{t}/w', '--cfg-options',
                   f'test_evaluator.1.outfile_prefix={_user_folder(f"{t}/mine", "results/keep.txt")}'],
     ['--cfg-options test_evaluator.1.outfile_prefix ', 'mine is a folder that mmfusion did not create'],
     ['mine/results/keep.txt'], None),
    ('test-missing-val-annotations', 'test',
     lambda e, t: [e.cfg, e.own, '--cfg-options', f'test_dataloader.dataset.data_root={e.raw}/'],
     ['annotation file not found: ', 'instancesonly_filtered_gtFine_val.json (test_dataloader.dataset.ann_file)'],
     [], None),
    # --- tools/infer.py
    ('infer-missing-input', 'infer', lambda e, t: [e.cfg, e.own, f'{t}/none.png'],
     ['input not found: ', 'none.png; pass an image, a folder of images or a video'], [], None),
    ('infer-missing-checkpoint', 'infer', lambda e, t: [e.cfg, f'{t}/none.pth', e.images],
     ['checkpoint not found: '], [], None),
    ('infer-checkpoint-of-another-config', 'infer', lambda e, t: [e.cfg, e.other, e.images, '--out-dir', f'{t}/o'],
     ['does not fit the model of ', 'this checkpoint was not trained with this config'], [], None),
    ('infer-checkpoint-lacking-a-weight', 'infer',
     lambda e, t: [e.cfg, f'{e.base}/lacking.pth', e.images, '--out-dir', f'{t}/o'],
     ["1 of the model's ", 'weights are missing from it (panoptic_head.query_feat.weight)'], [], None),
    ('infer-truncated-checkpoint', 'infer',
     lambda e, t: [e.cfg, f'{e.base}/truncated.pth', e.images, '--out-dir', f'{t}/o'],
     ['checkpoint ', 'truncated.pth is truncated or corrupt', 'pass an intact checkpoint'], [], None),
    ('infer-empty-image', 'infer', lambda e, t: [e.cfg, e.own, f'{e.base}/empty.png', '--out-dir', f'{t}/o'],
     ['cannot read image ', 'empty.png: the file is empty (0 bytes); replace or remove it'], [], None),
    ('infer-corrupt-image', 'infer', lambda e, t: [e.cfg, e.own, f'{e.base}/corrupt.jpg', '--out-dir', f'{t}/o'],
     ['cannot read image ', 'corrupt.jpg: not an image file Pillow can decode'], [], None),
    ('infer-folder-without-images', 'infer', lambda e, t: [e.cfg, e.own, f'{e.base}/no_images', '--out-dir', f'{t}/o'],
     ['no images (.png, .jpg', 'no_images'], [], None),
    ('infer-folder-of-bad-images', 'infer', lambda e, t: [e.cfg, e.own, e.bad_images, '--out-dir', f'{t}/o'],
     ['none of the 2 images of ', 'can be read (first: cannot read image ', 'replace or remove them'], [], None),
    ('infer-out-dir-of-user', 'infer',
     lambda e, t: [e.cfg, e.own, e.images, '--out-dir', _user_folder(f'{t}/results', 'old.png')],
     ['--out-dir ', 'results is a folder that mmfusion did not create'], ['results/old.png'], None),
    ('infer-cuda-without-gpu', 'infer',
     lambda e, t: [e.cfg, e.own, e.images, '--device', 'cuda', '--out-dir', f'{t}/o'],
     ['device cuda asked for, but CUDA is not available; use the CPU (--device cpu)'], [], 'no_gpu'),
    ('infer-cfg-options-typo', 'infer', lambda e, t: [e.cfg, e.own, e.images, '--cfg-options', 'tset_cfg.x=1'],
     ['--cfg-options tset_cfg.x: the config has no tset_cfg (did you mean test_cfg or env_cfg?); fix the key'],
     [], None),
    # --- tools/demo.py (the checks run before anything is generated or trained)
    ('demo-out-dir-of-user', 'demo',
     lambda e, t: ['--smoke', '--out-dir', _user_folder(f'{t}/report', 'notes.md'), '--data-root', f'{t}/d'],
     ['--out-dir ', 'report is a folder that mmfusion did not create'], ['report/notes.md'], None),
    ('demo-data-root-with-real-data', 'demo', lambda e, t: ['--smoke', '--out-dir', f'{t}/o', '--data-root', e.raw],
     ['--data-root ', 'raw_cityscapes holds files the demo did not write',
      'pass --data-root a new or empty folder'], ['raw'], None),
    # --- dataset converters
    ('convert-missing-root', 'cityscapes', lambda e, t: [f'{t}/nowhere'],
     ['no folder ', 'nowhere/leftImg8bit/train'], [], None),
    ('convert-existing-output', 'cityscapes', lambda e, t: [e.root],
     ['instancesonly_filtered_gtFine_train.json already exists (and 1 more); pass --overwrite to replace it'],
     [], None),
    ('convert-kitti360-missing-root', 'kitti360', lambda e, t: [f'{t}/kitti'],
     ['no folder ', 'kitti/data_2d_semantics: expected <root>/data_2d_semantics/train/',
      '(is the dataset root right?)'],
     [], None),
    ('generate-over-real-data', 'make_synthetic', lambda e, t: [e.raw, '--overwrite', '--num-train', '1'],
     ['raw_cityscapes holds leftImg8bit/, gtFine/ that this generator did not write',
      'choose another out_dir (nothing was deleted)'], ['raw'], None),
    ('generate-twice', 'make_synthetic', lambda e, t: [e.root, '--num-train', '1'],
     ['already exist(s) and is not empty; choose another out_dir or pass --overwrite'], [], None),
    # --- tools/analysis/profile_vfm.py (its lines start with the tool's name)
    ('profile-missing-images', 'profile_vfm',
     lambda e, t: ['--images', f'{t}/none', '--encoder', 'a=X', '--out-dir', f'{t}/p'],
     ['image folder not found: ', 'pass an existing folder to --images'], [], None),
    ('profile-size-zero', 'profile_vfm',
     lambda e, t: ['--images', e.images, '--size', '0', '0', '--encoder', 'a=X', '--out-dir', f'{t}/p'],
     ['--size 0 0 is not a valid image size (H W, in pixels); pass two positive numbers'], [], None),
    # --- tools/misc/resave_checkpoint.py (pytest's stdin is no terminal, as in a batch job)
    ('resave-without-a-terminal', 'resave', lambda e, t: [e.own, '--out', f'{t}/safe.pth'],
     ['there is no terminal to ask whether you trust it; if you do, pass --yes (nothing written)'], [], None),
]
# Said before the Runner is built: no line of MMEngine's start-up log precedes the error.
RUNNER_LOG = ('System environment', 'mmengine - INFO')


@pytest.mark.parametrize('tool,argv,parts,survivors,setup', [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line(env, tmp_path, capsys, monkeypatch, tool, argv, parts, survivors, setup):
    if setup == 'no_gpu':
        monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.delenv('MMFUSION_DEBUG', raising=False)
    args = argv(env, str(tmp_path))
    before = {p: _snapshot(env, tmp_path, p) for p in survivors}
    with pytest.raises(SystemExit) as info:
        _tool(tool).main(args)
    assert info.value.code == 2
    captured = capsys.readouterr()
    err = captured.err
    assert 'Traceback' not in err
    assert not any(mark in captured.out + err for mark in RUNNER_LOG), captured.out[-2000:]
    for out in ('w', 'o', 'p'):  # the work dir, --out-dir: a tool that fails before writing leaves no folder
        assert not osp.exists(osp.join(str(tmp_path), out)), f'a failed run left {out}/ behind'
    errors = [line for line in err.splitlines() if 'error: ' in line]
    assert len(errors) == 1 and errors[0] == err.strip().splitlines()[-1], err
    prefix = 'profile_vfm.py: error: ' if tool == 'profile_vfm' else 'error: '
    assert errors[0].startswith(prefix), errors[0]
    for part in parts:
        assert part in errors[0], f'{part!r} not in {errors[0]!r}'
    for p in survivors:
        assert _snapshot(env, tmp_path, p) == before[p], f'{p} changed'


def _snapshot(env, tmp_path, rel):
    """The names and contents of the user's files at ``rel`` (under tmp_path, or the raw dataset for 'raw')."""
    path = env.raw if rel == 'raw' else str(tmp_path / rel)
    if osp.isfile(path):
        return open(path).read()
    return sorted((osp.relpath(osp.join(r, f), path), open(osp.join(r, f)).read())
                  for r, _, fs in os.walk(path) for f in fs)


def test_converter_with_overwrite_replaces_its_outputs(env, capsys):
    _tool('cityscapes').main([env.root, '--overwrite', '--splits', 'val'])
    assert 'val: ' in capsys.readouterr().out


def test_debug_flag_keeps_the_traceback(tmp_path):
    from mmfusion.utils.errors import UserError
    with pytest.raises(UserError, match='config file not found'):
        _tool('train').main([str(tmp_path / 'nope.py'), '--debug'])


@pytest.mark.parametrize('argv,line', [
    (lambda e, t: ['tools/train.py', f'{t}/nope.py'], 'error: config file not found: {t}/nope.py; pass an existing '
     'config (they live under configs/)'),
    (lambda e, t: ['tools/infer.py', e.cfg, e.other, e.images, '--out-dir', f'{t}/o'], None),
], ids=['missing-config', 'checkpoint-of-another-config'])
def test_a_shell_sees_one_line_and_no_traceback(env, tmp_path, argv, line):
    args = argv(env, str(tmp_path))
    res = subprocess.run([sys.executable] + args, capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env=dict(os.environ, PYTHONPATH=ROOT, MMFUSION_DEBUG='0'))
    assert res.returncode == 2
    assert 'Traceback' not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    if line:
        assert last == line.format(t=tmp_path)
    else:
        assert last.startswith('error: checkpoint ') and 'this checkpoint was not trained with this config' in last
        assert not osp.exists(osp.join(str(tmp_path), 'o'))  # refused before anything is written
