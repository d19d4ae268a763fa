"""tools/analysis/profile_vfm.py end to end on stand-in backbones (tests/_stubs.py) and generated images."""
import csv
import json
import os.path as osp

import numpy as np
import pytest
import torch
from PIL import Image

import tests._stubs  # noqa: F401  (registers StubPyramid)
from tests._tools import load_tool

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.fixture(scope='module')
def tool():
    return load_tool('analysis/profile_vfm.py')


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope='module')
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp('images')
    rng = np.random.default_rng(0)
    for i in range(3):
        img = np.zeros((48, 80, 3), dtype=np.uint8)
        img[10:30, 20 + 10 * i:60] = rng.integers(0, 255, 3)
        img += rng.integers(0, 20, img.shape, dtype=np.uint8)
        Image.fromarray(img).save(folder / f'{i:02d}.png' if i else folder / f'{i:02d}.jpg')
    (folder / 'notes.txt').write_text('not an image')
    return str(folder)


def base_args(image_dir, out_dir, *extra, size=('48', '128')):
    # Strides 4 and 8 at 48x128: the OS8 maps (6x16) are the smallest SC and EF can score (2 SFC cells, 4x14 EF px).
    return ['--images', image_dir, '--size', *size, '--device', 'cpu', '--threads', '1', '--out-dir',
            str(out_dir), '--encoder', 'a=StubPyramid', '--encoder', 'b=mmfusion.StubPyramid', '--cfg-options',
            'a.out_strides=[4,8]', 'b.out_strides=[4,8]', 'b.channels=[8,8,8,8]', *extra]


def test_profiles_two_encoders_and_writes_every_output(tool, image_dir, tmp_path, capsys):
    base_cfg = tmp_path / 'base.py'
    base_cfg.write_text("model = dict(type='Fused', backbone=dict(type='mmfusion.MasterAuxBackbone', inject_stride=16),"
                        "\n             neck=dict(type='mmfusion.MetricGuidedNeck'),"
                        "\n             panoptic_head=dict(in_channels=[1, 1]))\n")
    emitted = tmp_path / 'configs' / 'fused.py'
    out = tmp_path / 'out'
    result = tool.main(base_args(image_dir, out, '--num-vis', '2', '--emit-config', str(emitted), '--base-config',
                                 str(base_cfg)))

    doc = json.load(open(out / 'profile.json'))
    assert set(doc['encoders']) == {'a', 'b'}
    for entry in doc['encoders'].values():
        assert entry['strides'] == [4, 8]
        for key in ('SC', 'EF', 'SFC', 'SCS', 'EC', 'NC', 'FC', 'SP', 'r_tau'):
            assert len(entry[key]) == 2 and all(np.isfinite(entry[key]))
    sel = doc['selection']
    assert sel == result['selection'] and {sel['master'], sel['auxiliary']} == {'a', 'b'}
    assert sel['inject_stride'] in (4, 8)
    assert doc['meta']['num_images'] == 3 and doc['meta']['size'] == [48, 128]

    rows = list(csv.DictReader(open(out / 'profile.csv')))
    assert len(rows) == 4 and {r['encoder'] for r in rows} == {'a', 'b'}
    assert Image.open(out / 'profile.png').format == 'PNG'
    for name in ('a', 'b'):
        for s in (4, 8):
            for i in (0, 1):
                assert Image.open(out / 'pca' / f'{name}_os{s}_img{i}.png').size == (128, 48)
    assert not (out / 'pca' / 'a_os4_img2.png').exists()

    printed = capsys.readouterr().out
    assert 'OS8' in printed and f"master = {sel['master']}" in printed and f"s* = OS{sel['inject_stride']}" in printed

    from mmengine.config import Config
    cfg = Config.fromfile(str(emitted))
    s_star = sel['inject_stride']
    assert cfg.model.backbone.inject_stride == s_star and cfg.model.neck.type == 'mmfusion.MetricGuidedNeck'
    aux_channels = {'a': dict(zip((4, 8, 16, 32), (4, 8, 16, 32))), 'b': dict.fromkeys((4, 8, 16, 32), 8)}
    assert doc['meta']['channels'][sel['auxiliary']][str(s_star)] == aux_channels[sel['auxiliary']][s_star]
    assert f"auxiliary: {sel['auxiliary']}" in emitted.read_text()
    master_channels = doc['meta']['channels'][sel['master']]
    assert cfg.model.panoptic_head.in_channels == [master_channels['4'], master_channels['8']]
    assert cfg.model.backbone.master.type == ('StubPyramid' if sel['master'] == 'a' else 'mmfusion.StubPyramid')
    assert cfg.model.backbone.auxiliary.out_strides == [4, 8]


def test_profile_is_reproducible(tool, image_dir, tmp_path):
    first = tool.main(base_args(image_dir, tmp_path / 'x', '--num-vis', '0'))
    second = tool.main(base_args(image_dir, tmp_path / 'y', '--num-vis', '0', '--batch-size', '2'))
    for name in ('a', 'b'):
        for s in (4, 8):
            for key, val in first['profiles'][name][s].items():
                assert second['profiles'][name][s][key] == pytest.approx(val, abs=1e-4)


def run_error(tool, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        tool.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1]


def test_empty_folder_stops_with_a_one_line_error(tool, tmp_path, capsys):
    (tmp_path / 'empty').mkdir()
    msg = run_error(tool, base_args(str(tmp_path / 'empty'), tmp_path / 'o'), capsys)
    from mmfusion.utils.images import IMAGE_EXTS
    assert msg.startswith(f'profile_vfm.py: error: no {"/".join(IMAGE_EXTS)} images in') and 'empty' in msg


def test_unreadable_image_stops_with_a_one_line_error(tool, tmp_path, capsys):
    (tmp_path / 'imgs').mkdir()
    (tmp_path / 'imgs' / 'broken.png').write_bytes(b'not a png at all')
    msg = run_error(tool, base_args(str(tmp_path / 'imgs'), tmp_path / 'o'), capsys)
    assert 'cannot read image' in msg and 'broken.png' in msg and 'remove or replace it' in msg


def test_unknown_encoder_stops_with_a_one_line_error(tool, image_dir, tmp_path, capsys):
    argv = ['--images', image_dir, '--size', '64', '64', '--device', 'cpu', '--out-dir', str(tmp_path),
            '--encoder', 'x=NoSuchBackbone']
    msg = run_error(tool, argv, capsys)
    assert "unknown encoder type 'NoSuchBackbone' for x" in msg


def test_missing_checkpoint_stops_with_a_one_line_error(tool, image_dir, tmp_path, capsys):
    argv = base_args(image_dir, tmp_path / 'o', 'b.init_cfg.type=Pretrained', 'b.init_cfg.checkpoint=/nowhere/ckpt.pth')
    msg = run_error(tool, argv, capsys)
    assert 'checkpoint of encoder b not found: /nowhere/ckpt.pth' in msg and 'b.init_cfg.checkpoint=PATH' in msg


def test_encoder_from_a_config_file_key(tool, image_dir, tmp_path, capsys):
    cfg = tmp_path / 'enc.py'
    cfg.write_text("model = dict(backbone=dict(master=dict(type='StubPyramid', out_strides=(8, 16))))\n")
    argv = ['--images', image_dir, '--size', '96', '256', '--device', 'cpu', '--threads', '1', '--num-vis', '0',
            '--out-dir', str(tmp_path / 'o'), '--encoder', f'm={cfg}:model.backbone.master']
    result = tool.main(argv)
    assert list(result['profiles']['m']) == [8, 16] and result['selection'] is None
    assert 'profile at least two encoders' in capsys.readouterr().out
    msg = run_error(tool, argv[:-1] + [f'm={cfg}'], capsys)
    assert 'holds no backbone dict' in msg


def test_emit_config_needs_a_base_config(tool, image_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        tool.main(base_args(image_dir, tmp_path, '--emit-config', str(tmp_path / 'c.py')))
    assert '--emit-config needs --base-config' in capsys.readouterr().err


def test_builds_in_mmfusion_scope_whatever_the_callers_default_scope():
    """A default scope left at 'mmdet' (by mmdet's register_all_modules) must not hide mmfusion's types."""
    from mmengine.registry import DefaultScope

    from mmfusion.apis.profiling import build_encoder
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = build_encoder('a', dict(type='StubPyramid', out_strides=(8, 16)))
    assert type(model).__name__ == 'StubPyramid' and not model.training


def test_size_too_small_for_the_strides_is_refused_blaming_size(tool, image_dir, tmp_path, capsys):
    # At 64x64 the OS8 maps are 8x8: one SFC cell, so SC would be 0 there for every encoder.
    msg = run_error(tool, base_args(image_dir, tmp_path / 'o', '--num-vis', '0', size=('64', '64')), capsys)
    assert 'error: images resized to 64x64 are too small for stride 8: encoder a gives 8x8 maps there' in msg
    assert 'SFC needs 2 cells of 8x8 px' in msg and 'use --size 64 128 or larger' in msg
    assert not (tmp_path / 'o' / 'profile.json').exists()


def test_too_small_size_gets_one_size_that_fits_every_profiled_stride(tool, image_dir, tmp_path, capsys):
    """With strides up to 16, a fix for the failing OS8 alone (64x128) would fail again at OS16 (4x8 maps)."""
    args = [a.replace('[4,8]', '[4,8,16]') for a in base_args(image_dir, tmp_path / 'o', '--num-vis', '0')]
    size_at = args.index('--size') + 1
    args[size_at:size_at + 2] = ['64', '64']
    msg = run_error(tool, args, capsys)
    assert 'too small for stride 8' in msg and 'use --size 80 256 or larger (it fits every profiled stride)' in msg
    args[size_at:size_at + 2] = ['64', '128']
    assert 'too small for stride 16' in run_error(tool, args, capsys)
    args[size_at:size_at + 2] = ['80', '256']
    assert list(tool.main(args)['profiles']['a']) == [4, 8, 16]


# The real encoder families at toy sizes (as tools/demo.py --smoke builds them), in their parameter-free form.
TINY_ENCODERS = {
    'dinov3': dict(type='mmfusion.DINOv3ViT', pyramid=dict(type='paper', project=False), checkpoint=None,
                   arch=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                             num_register_tokens=1)),
    'sam2': dict(type='mmfusion.SAM2Hiera', checkpoint=None,
                 arch=dict(embed_dim=8, num_heads=1, stages=(1, 1, 2, 1), global_att_blocks=(3, ),
                           window_spec=(8, 4, 4, 2), window_pos_embed_bkg_spatial_size=(4, 4), q_pool=3)),
}


@pytest.mark.parametrize('master,aux,stride,base,head', [
    ('dinov3', 'sam2', 16, 'configs/mask2former_d3s2_cityscapes.py', 'panoptic_head'),
    ('sam2', 'dinov3', 8, 'configs/mask2former_d3s2_cityscapes_semantic.py', 'decode_head'),
])
def test_emitted_config_trains_the_selected_pair(tool, tmp_path, master, aux, stride, base, head):
    from mmengine.config import Config

    from mmfusion.apis.profiling import build_encoder, encoder_strides
    from mmfusion.registry import MODELS

    channels = {}
    for name, cfg in TINY_ENCODERS.items():  # what the profiler records in meta.channels
        enc = build_encoder(name, cfg)
        feats = enc(torch.zeros(1, 3, 64, 64))
        channels[name] = {s: int(f.shape[1]) for s, f in zip(encoder_strides(enc), feats)}
    profiles = {n: {s: dict(SC=0.5, EF=float(s)) for s in (4, 8, 16, 32)} for n in TINY_ENCODERS}
    selection = dict(master=master, auxiliary=aux, inject_stride=stride)
    emitted = tmp_path / 'fused.py'
    tool.emit_config(str(emitted), osp.join(ROOT, base), selection, profiles, channels, 'profile.json',
                     TINY_ENCODERS)

    cfg = Config.fromfile(str(emitted))
    backbone = cfg.model.backbone
    assert backbone.type == 'mmfusion.MasterAuxBackbone' and backbone.inject_stride == stride
    assert backbone.master.to_dict() == TINY_ENCODERS[master] and backbone.auxiliary.to_dict() == TINY_ENCODERS[aux]
    expected = [channels[master][s] for s in (4, 8, 16, 32)]
    assert cfg.model[head].in_channels == expected
    assert expected == ([32] * 4 if master == 'dinov3' else [8, 16, 32, 64])

    model = MODELS.build(cfg.model)  # the whole Mask2Former, with the emitted pair
    assert type(model.backbone.master).__name__ == type(build_encoder('m', TINY_ENCODERS[master])).__name__
    assert model.backbone.inject_strides == (stride, ) and list(model.backbone.out_channels) == expected
    with torch.no_grad():
        feats = model.extract_feat(torch.zeros(1, 3, 64, 64))
        mask_feat, multi_scale = getattr(model, head).pixel_decoder(feats)  # the head's input projections accept them
    assert mask_feat.shape[-2:] == (16, 16) and len(multi_scale) == 3
